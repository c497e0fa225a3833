"""The seed-compatible Jupyter executor (kubectl_executor.autogen.jupyter) through the real kubectl:
state across calls, errors, timeouts, cancellation, restart, pod_spec, and AutoGen's own agent."""

from __future__ import annotations

import asyncio
import os
import re
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from autogen_agentchat.agents import ApprovalRequest, ApprovalResponse, CodeExecutorAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import CancellationToken
from autogen_core.code_executor import CodeBlock
from autogen_ext.tools.code_execution import CodeExecutionInput, PythonCodeExecutionTool
from kx_cluster import Cluster

from kubectl_executor import KubernetesCommandLineCodeExecutor
from kubectl_executor.autogen import (
    PodJupyterCodeExecutor,
    PodJupyterCodeResult,
    PodJupyterConnectionInfo,
    PodJupyterServer,
)

pytestmark = pytest.mark.integration

T = TypeVar("T")


def server_for(cluster: Cluster, **extra: Any) -> PodJupyterServer:
    options: dict[str, Any] = {
        "image": cluster.image,
        "namespace": cluster.namespace,
        "kube_config_file": cluster.kubeconfig,
        "context": cluster.context,
        "kubectl": cluster.kubectl,
    }
    return PodJupyterServer(**{**options, **extra})


def py(code: str) -> CodeBlock:
    return CodeBlock(code=textwrap.dedent(code), language="python")


def pod_names(cluster: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def with_server(cluster: Cluster, body: Callable[[PodJupyterServer], Awaitable[T]], **extra: Any) -> T:
    async def go() -> T:
        async with server_for(cluster, **extra) as server:
            return await body(server)

    return asyncio.run(go())


def test_state_persists_errors_stop_the_blocks_and_the_pod_is_the_servers(cluster: Cluster) -> None:
    before = pod_names(cluster)

    async def body(server: PodJupyterServer) -> tuple[list[PodJupyterCodeResult], bool]:
        token = CancellationToken()
        async with PodJupyterCodeExecutor(server, timeout=20) as executor:
            first = await executor.execute_code_blocks(
                [py("import os\nx = 6 * 7\nprint('x is', x)"), py("print(os.getcwd())")], token
            )
            second = await executor.execute_code_blocks(
                [
                    py("print(x + 1)"),
                    CodeBlock(code="echo shell-$((1 + 1))", language="sh"),
                    py("print('before'); undefined_name"),
                    py("print('never runs')"),
                ],
                token,
            )
            third = await executor.execute_code_blocks([py("print(x)")], token)
        # The executor's stop ended its session only: the server's pod is still there.
        alive = server.pod_name in pod_names(cluster)
        return [first, second, third], alive

    (first, second, third), alive = with_server(cluster, body)
    assert (first.exit_code, first.output, first.output_files) == (0, "x is 42\n\n/workspace\n", [])
    assert second.exit_code == 1
    head, _, error = second.output.partition("\nERROR: ")
    assert head == "43\n\nshell-2\n\nbefore\n"
    assert error.startswith("NameError: name 'undefined_name' is not defined\nTraceback")
    assert "never runs" not in second.output
    assert (third.exit_code, third.output) == (0, "42\n")  # the error kept the interpreter's state
    assert alive
    assert pod_names(cluster) == before  # the server's exit deleted it


def test_timeout_interrupts_the_block_and_keeps_the_state(cluster: Cluster) -> None:
    async def body(server: PodJupyterServer) -> tuple[PodJupyterCodeResult, PodJupyterCodeResult]:
        token = CancellationToken()
        async with PodJupyterCodeExecutor(server, timeout=2) as executor:
            slow = await executor.execute_code_blocks(
                [py("kept = 'yes'\nimport time\nprint('started', flush=True)\ntime.sleep(60)")], token
            )
            after = await executor.execute_code_blocks([py("print(kept)")], token)
        return slow, after

    slow, after = with_server(cluster, body)
    assert slow.exit_code == 1
    assert slow.output.startswith("started\n\nERROR: Timeout waiting for output from code block.")
    assert "after 2 s" in slow.output
    assert (after.exit_code, after.output) == (0, "yes\n")


def test_cancel_interrupts_the_block_in_the_pod_and_raises(cluster: Cluster) -> None:
    async def body(server: PodJupyterServer) -> tuple[str, PodJupyterCodeResult]:
        token = CancellationToken()
        async with PodJupyterCodeExecutor(server, timeout=60) as executor:
            await executor.execute_code_blocks([py("ticks = 0")], token)
            loop = py(
                """
                import time
                open('started', 'w').close()
                while True:
                    ticks += 1
                    time.sleep(0.05)
                """
            )
            call = asyncio.ensure_future(executor.execute_code_blocks([loop], token))
            # A second, stateless channel to the pod sees when the block runs (the session
            # runs one block at a time).
            info = server.connection_info
            side = KubernetesCommandLineCodeExecutor(
                pod_name=info.pod_name,
                namespace=info.namespace,
                kubeconfig=info.kubeconfig,
                context=info.context,
                kubectl=info.kubectl,
                attach=True,
            )
            while (await asyncio.to_thread(side.run, "test -e started", "sh")).exit_code != 0:
                assert not call.done(), call.result()
            token.cancel()
            try:
                await call
                outcome = "returned"
            except asyncio.CancelledError:
                outcome = "cancelled"
            fresh = CancellationToken()
            # Interrupted, not killed: the loop stopped and its variable is there.
            first = await executor.execute_code_blocks([py("a = ticks")], fresh)
            assert first.exit_code == 0, first.output
            await asyncio.to_thread(side.run, "sleep 0.5", "sh")
            side.stop()
            return outcome, await executor.execute_code_blocks([py("print(ticks == a, ticks > 0)")], fresh)

    outcome, result = with_server(cluster, body)
    assert outcome == "cancelled"
    assert (result.exit_code, result.output) == (0, "True True\n")


def test_restart_gives_a_fresh_interpreter_on_the_same_pod(cluster: Cluster) -> None:
    async def body(server: PodJupyterServer) -> tuple[PodJupyterCodeResult, PodJupyterCodeResult]:
        token = CancellationToken()
        async with PodJupyterCodeExecutor(server) as executor:
            await executor.execute_code_blocks([py("v = 1\nopen('kept.txt', 'w').write('file')")], token)
            await executor.restart()
            gone = await executor.execute_code_blocks([py("print(v)")], token)
            # IPython's shell escape, as models write it for Jupyter.
            file = await executor.execute_code_blocks([py("!cat kept.txt\nprint()")], token)
        return gone, file

    gone, file = with_server(cluster, body)
    assert gone.exit_code == 1 and "NameError: name 'v' is not defined" in gone.output
    assert (file.exit_code, file.output) == (0, "file\n")


def test_two_executors_on_one_server_have_their_own_interpreters(cluster: Cluster) -> None:
    async def body(server: PodJupyterServer) -> tuple[str, str, str]:
        token = CancellationToken()
        info = server.connection_info
        assert info == PodJupyterConnectionInfo.model_validate(info.model_dump())
        async with PodJupyterCodeExecutor(server) as one, PodJupyterCodeExecutor(info) as two:
            await one.execute_code_blocks([py("who = 'one'")], token)
            await two.execute_code_blocks([py("who = 'two'")], token)
            a = await one.execute_code_blocks([py("print(who)")], token)
            b = await two.execute_code_blocks([py("print(who)")], token)
            # A dumped and loaded executor reaches the same pod (a fresh interpreter there).
            loaded = PodJupyterCodeExecutor.load_component(one.dump_component())
            async with loaded:
                c = await loaded.execute_code_blocks(
                    [py("import socket; print(socket.gethostname())")], token
                )
        return a.output, b.output, c.output

    a, b, c = with_server(cluster, body)
    assert (a, b) == ("one\n", "two\n")
    assert c.strip() != ""


def test_pod_spec_from_a_yaml_file_and_a_volume(cluster: Cluster, tmp_path: Path) -> None:
    spec = tmp_path / "jupyter.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            apiVersion: v1
            kind: Pod
            metadata:
              name: kx-jupyter-spec
              namespace: {cluster.namespace}
              labels: {{team: data}}
            spec:
              containers:
              - name: autogen-executor
                image: {cluster.image}
                command: ["/bin/bash", "-c", "python -m jupyter kernelgateway"]
                env: [{{name: FROM_SPEC, value: "spec-value"}}]
            """
        )
    )

    async def body(server: PodJupyterServer) -> tuple[PodJupyterCodeResult, dict[str, Any]]:
        async with PodJupyterCodeExecutor(server) as executor:
            result = await executor.execute_code_blocks(
                [py("import os\nprint(os.environ['FROM_SPEC'], os.getcwd())")], CancellationToken()
            )
        return result, server._pod

    server = server_for(cluster, pod_spec=spec, volume={"name": "ws", "emptyDir": {"sizeLimit": "64Mi"}})
    assert server.pod_name == "kx-jupyter-spec"

    async def go() -> tuple[PodJupyterCodeResult, dict[str, Any]]:
        async with server:
            return await body(server)

    result, pod = asyncio.run(go())
    assert (result.exit_code, result.output) == (0, "spec-value /workspace\n")
    assert pod["metadata"]["labels"]["team"] == "data"
    container = pod["spec"]["containers"][0]
    assert "kernelgateway" not in " ".join(container.get("command") or [])  # the server's start is not run
    workspace = next(v for v in pod["spec"]["volumes"] if v["name"] == "workspace")
    assert workspace["emptyDir"] == {"sizeLimit": "64Mi"}
    assert cluster.get_object("pod", "kx-jupyter-spec") is None


def test_autogen_agents_drive_it(cluster: Cluster) -> None:
    async def body(server: PodJupyterServer) -> tuple[str, str]:
        async with PodJupyterCodeExecutor(server) as executor:
            approved: list[str] = []

            def approve(request: ApprovalRequest) -> ApprovalResponse:
                approved.append(request.code)
                return ApprovalResponse(approved=True, reason="test")

            agent = CodeExecutorAgent("runner", code_executor=executor, approval_func=approve)
            message = "Here:\n```python\ntotal = sum(range(10))\nprint('total', total)\n```"
            response = await agent.on_messages(
                [TextMessage(content=message, source="user")], CancellationToken()
            )
            tool = PythonCodeExecutionTool(executor)
            # The tool's call sees the agent's variable: one interpreter.
            answer = await tool.run(CodeExecutionInput(code="print(total * 2)"), CancellationToken())
            assert len(approved) == 1 and "sum(range(10))" in approved[0]
            return str(response.chat_message.content), answer.output

    content, tool_output = with_server(cluster, body)
    assert "total 45" in content
    assert tool_output == "90\n"


def test_charts_and_html_are_saved_as_the_seed_saves_them(cluster: Cluster, tmp_path: Path) -> None:
    """A matplotlib chart and a displayed object's HTML come back as files in output_dir, and a
    block's last expression as text, in the seed's order (text, then the files' paths)."""
    image = os.environ.get("KX_TEST_PLOT_IMAGE") or cluster.image  # needs matplotlib (see test_rich.py)
    chart = py(
        """
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4, 3), dpi=50)
        ax.plot([1, 2, 3], [2, 4, 1])
        print('drawn')
        """
    )
    table = py(
        """
        class Table:
            def _repr_html_(self):
                return '<table><tr><td>1</td></tr></table>'
        display(Table())
        6 * 7
        """
    )

    async def body(server: PodJupyterServer) -> PodJupyterCodeResult:
        async with PodJupyterCodeExecutor(server, output_dir=tmp_path / "out") as executor:
            return await executor.execute_code_blocks([chart, table], CancellationToken())

    result = with_server(cluster, body, image=image)
    assert result.exit_code == 0, result.output
    png, html = result.output_files
    assert (png.parent, png.suffix) == (tmp_path / "out", ".png")
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert html.read_text() == "<table><tr><td>1</td></tr></table>"
    lines = result.output.split("\n")
    # Per block its text, then the files; display(Table()) also gives its text/plain (a repr),
    # as Jupyter's display_data does.
    assert lines[:3] == ["drawn", "", str(png)]
    assert re.fullmatch(r"<__main__\.Table object at 0x[0-9a-f]+>", lines[3])
    assert lines[4:] == ["42", str(html)]
