"""The AutoGen adapter through the real kubectl: an agent runs code in a pod, cancellation kills it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from autogen_agentchat.agents import ApprovalRequest, ApprovalResponse, CodeExecutorAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock, CodeExecutor, with_requirements
from kx_cluster import Cluster

from kubectl_executor.autogen import KubectlCodeExecutor, KubectlCodeResult

pytestmark = pytest.mark.integration


def options(cluster: Cluster, **extra: Any) -> dict[str, Any]:
    return {**cluster.executor_kwargs(), **extra}


def pod_names(cluster: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def test_code_executor_agent_runs_blocks_in_a_pod(cluster: Cluster) -> None:
    before = pod_names(cluster)

    approved: list[str] = []

    def approve(request: ApprovalRequest) -> ApprovalResponse:
        approved.append(request.code)
        return ApprovalResponse(approved=True, reason="test")

    async def go() -> tuple[str, str]:
        async with KubectlCodeExecutor(**options(cluster)) as executor:
            agent = CodeExecutorAgent("runner", code_executor=executor, approval_func=approve)
            message = "Here:\n```Python\nimport os\nprint(6 * 7, os.getcwd())\n```\nand\n```SH\necho shell-$((1+1))\n```"
            response = await agent.on_messages(
                [TextMessage(content=message, source="user")], CancellationToken()
            )
            assert executor.pod_name in pod_names(cluster)
            return str(response.chat_message.content), str(executor.pod_name)

    content, pod = asyncio.run(go())
    assert "42 /workspace" in content and "shell-2" in content
    assert (
        len(approved) == 1 and "```Python" in approved[0] and "```SH" in approved[0]
    )  # case kept by the agent
    assert pod not in pod_names(cluster) and pod_names(cluster) == before


def test_exit_codes_timeout_and_code_file(cluster: Cluster) -> None:
    async def go() -> tuple[KubectlCodeResult, KubectlCodeResult]:
        async with KubectlCodeExecutor(**options(cluster, timeout=2, mirror=False)) as executor:
            token = CancellationToken()
            failed = await executor.execute_code_blocks(
                [CodeBlock("# filename: fail.py\nimport sys; print('x'); sys.exit(3)", "python")], token
            )
            slow = await executor.execute_code_blocks([CodeBlock("sleep 30", "sh")], token)
            return failed, slow

    failed, slow = asyncio.run(go())
    assert (failed.exit_code, failed.output, failed.code_file) == (3, "x\n", "/workspace/fail.py")
    assert slow.exit_code == 124 and "Timeout" in slow.output


def test_loaded_component_runs(cluster: Cluster) -> None:
    model = KubectlCodeExecutor(**options(cluster, timeout=20)).dump_component()
    loaded = CodeExecutor.load_component(json.loads(model.model_dump_json()))
    assert isinstance(loaded, KubectlCodeExecutor) and loaded.timeout == 20

    async def go() -> KubectlCodeResult:
        async with loaded:
            return await loaded.execute_code_blocks(
                [CodeBlock("print('loaded')", "python")], CancellationToken()
            )

    result = asyncio.run(go())
    assert (result.exit_code, result.output) == (0, "loaded\n")


# The block records its process group, says it started, then would write a file much later.
SLOW_BLOCK = """
import os, time
open('/workspace/pgid', 'w').write(str(os.getpgid(0)))
print('started', flush=True)
time.sleep(120)
open('/workspace/late', 'w').write('should never happen')
"""

CHECK = """
import os
pgid = int(open('/workspace/pgid').read())
alive = []
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            stat = open(f'/proc/{pid}/stat').read()
        except OSError:
            continue
        if int(stat[stat.rindex(')') + 2:].split()[2]) == pgid:
            alive.append(pid)
print('alive' if alive else 'gone', os.path.exists('/workspace/late'))
"""


@pytest.mark.parametrize("how", ["token", "task"])
def test_cancellation_kills_the_process_in_the_pod(cluster: Cluster, how: str) -> None:
    async def go() -> str:
        async with KubectlCodeExecutor(**options(cluster, timeout=300)) as executor:
            assert executor.executor is not None
            token = CancellationToken()
            task = asyncio.create_task(executor.execute_code_blocks([CodeBlock(SLOW_BLOCK, "python")], token))
            probe = executor.executor
            # Wait (bounded) until the block has written its process group: it is running in the pod.
            for _ in range(600):
                seen = await asyncio.to_thread(
                    probe.kubectl.run,
                    ["exec", probe.pod_name, "-c", "executor", "--", "test", "-s", "/workspace/pgid"],
                    check=False,
                )
                if seen.returncode == 0:
                    break
            else:
                pytest.fail("the block never started")
            if how == "token":
                token.cancel()
                cancelled = await task  # a result, as the Docker executor returns
                assert (cancelled.exit_code, cancelled.output) == (1, "Code execution was cancelled.")
            else:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            result = await executor.execute_code_blocks([CodeBlock(CHECK, "python")], CancellationToken())
            assert result.exit_code == 0, result.output
            return result.output

    assert asyncio.run(go()) == "gone False\n"


@with_requirements(python_packages=["six==1.16.0"], global_imports=["six"])
def six_version() -> str:
    return str(six.__version__)  # type: ignore[name-defined]  # noqa: F821


@with_requirements(python_packages=["kx-no-such-package-exists-0f3c"])
def broken() -> None:
    return None


NO_EGRESS = os.environ.get("KX_TEST_NO_EGRESS") == "1"


@pytest.mark.skipif(
    NO_EGRESS,
    reason="the cluster's pods have no route out (KX_TEST_NO_EGRESS=1, as for fixtures/cluster), "
    "so pip in the pod cannot reach a package index",
)
def test_work_dir_mirror_and_functions_with_requirements(cluster: Cluster, tmp_path: Path) -> None:
    """Docker users' habits: inputs put in work_dir before start are there, results and the code
    file appear in work_dir; functions with requirements are pip-installed in the pod once."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.bin").write_bytes(bytes(range(256)) * 100)
    code = (
        "import hashlib\nfrom functions import six_version\n"
        "print(six_version(), hashlib.sha256(open('in/data.bin','rb').read()).hexdigest())\n"
        "open('out.bin', 'wb').write(bytes(range(255, -1, -1)))\n"
    )

    async def go() -> tuple[KubectlCodeResult, KubectlCodeResult]:
        async with KubectlCodeExecutor(**options(cluster, work_dir=tmp_path, functions=[six_version])) as ex:
            first = await ex.execute_code_blocks([CodeBlock(code, "python")], CancellationToken())
            again = await ex.execute_code_blocks(
                [CodeBlock("import os; os.remove('out.bin'); print('removed')", "python")],
                CancellationToken(),
            )
            return first, again

    first, again = asyncio.run(go())
    digest = hashlib.sha256(bytes(range(256)) * 100).hexdigest()
    assert (first.exit_code, first.output) == (0, f"1.16.0 {digest}\n")
    assert first.code_file is not None and Path(first.code_file).read_text() == code
    assert Path(first.code_file).parent == tmp_path
    assert (tmp_path / "functions.py").exists()
    assert (again.exit_code, again.output) == (0, "removed\n")
    assert not (tmp_path / "out.bin").exists()


def test_a_function_whose_requirement_does_not_exist_fails_as_for_docker(cluster: Cluster) -> None:
    async def go() -> None:
        async with KubectlCodeExecutor(**options(cluster, functions=[broken])) as ex:
            await ex.execute_code_blocks([CodeBlock("print(1)", "python")], CancellationToken())

    with pytest.raises(ValueError, match="Pip install failed"):
        asyncio.run(go())


def test_the_mirror_works_in_an_image_without_python(cluster: Cluster, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from the host\n")

    async def go() -> KubectlCodeResult:
        async with KubectlCodeExecutor(**options(cluster, image="busybox", work_dir=tmp_path)) as ex:
            return await ex.execute_code_blocks(
                [CodeBlock("command -v python3 || echo no-python; cat in.txt > out.txt", "sh")],
                CancellationToken(),
            )

    result = asyncio.run(go())
    assert (result.exit_code, result.output) == (0, "no-python\n")
    assert (tmp_path / "out.txt").read_text() == "from the host\n"
