"""The AutoGen adapter on the fake kubectl runner: contract, config round trip, cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from autogen_core import CancellationToken, ComponentModel
from autogen_core.code_executor import (
    Alias,
    CodeBlock,
    CodeExecutor,
    CodeResult,
    FunctionWithRequirements,
    with_requirements,
)
from kx_fakes import ExecReply, FakeRunner, ParsedRequest, RunCall, reply_with

from kubectl_executor import InvalidInputError, PodShape, Resources, RunOptions
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.autogen import (
    KubectlCodeExecutor,
    KubectlCodeExecutorConfig,
    KubectlCodeResult,
    PodCommandLineCodeExecutor,
    build_python_functions_file,
)


@pytest.fixture
def make(
    fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy
) -> Callable[..., KubectlCodeExecutor]:
    def make(**kwargs: Any) -> KubectlCodeExecutor:
        return KubectlCodeExecutor(kubectl=fake_kubectl, runner=fake_runner, retry=retry_policy, **kwargs)

    return make


def test_import_without_autogen_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "kubectl_executor.autogen")
    monkeypatch.setitem(sys.modules, "autogen_core", None)  # what an absent package looks like to import
    with pytest.raises(ImportError, match=r"pip install 'kubectl-executor\[autogen\]'"):
        importlib.import_module("kubectl_executor.autogen")


def test_the_package_never_imports_autogen() -> None:
    code = "import sys, kubectl_executor, kubectl_executor.cli; sys.exit(any(m.startswith('autogen') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_is_an_autogen_code_executor_with_a_public_provider(make: Callable[..., KubectlCodeExecutor]) -> None:
    executor = make()
    assert isinstance(executor, CodeExecutor)
    model = executor.dump_component()
    assert model.provider == "kubectl_executor.autogen.KubectlCodeExecutor"
    assert model.component_type == "code_executor"


def test_dump_and_load_round_trip() -> None:
    original = KubectlCodeExecutor(
        image="python:3.12-slim",
        namespace="agents",
        timeout=17,
        env={"A": "1"},
        execution_policies={"javascript": True},
        labels={"team": "x"},
        resources=Resources(cpu_limit="1"),
        context="prod",
    )
    model = original.dump_component()
    data = model.model_dump_json()
    assert "runner" not in data and "retry" not in data
    loaded = CodeExecutor.load_component(ComponentModel.model_validate_json(data))
    assert isinstance(loaded, KubectlCodeExecutor)
    assert loaded.dump_component().config == model.config
    assert model.config["run_options"]["timeout"] == 17
    assert model.config["pod"]["resources"]["cpu_limit"] == "1" and model.config["pod"]["env"] == {"A": "1"}


def test_a_flat_config_dumped_before_the_models_still_loads() -> None:
    """Configurations dumped before PodShape/RunOptions had the pod's and the runs' fields flat."""
    flat = {"image": "python:3.12-slim", "timeout": 17, "env_vars": {"A": "1"}, "pod_work_dir": "/data"}
    config = KubectlCodeExecutorConfig.model_validate({**flat, "resources": None, "namespace": "agents"})
    assert config.pod == PodShape(image="python:3.12-slim", env={"A": "1"}, work_dir="/data")
    assert config.run_options == RunOptions(timeout=17) and config.namespace == "agents"
    with pytest.raises(ValueError):
        KubectlCodeExecutorConfig.model_validate({**flat, "surprise": 1})


def test_the_models_and_the_keywords_are_one_configuration(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    """pod= / run_options= and the separate keywords give the same executor; both is refused;
    the blocking executor behind it receives the same models."""
    pod = PodShape(image="python:3.12-slim", env={"A": "1"}, hardened=False)
    run = RunOptions(timeout=17, max_output_bytes=2048)
    whole = make(pod=pod, run_options=run)
    separate = make(
        image="python:3.12-slim", env={"A": "1"}, hardened=False, timeout=17, max_output_bytes=2048
    )
    assert whole.dump_component().config == separate.dump_component().config
    with pytest.raises(InvalidInputError, match="not both"):
        make(pod=pod, image="other")
    with pytest.raises(InvalidInputError, match="not both"):
        make(run_options=run, startup_timeout=5)
    with pytest.warns(DeprecationWarning, match="env="):
        assert make(env_vars={"A": "1"}).dump_component().config["pod"]["env"] == {"A": "1"}

    async def go() -> None:
        async with whole:
            inner = whole.executor
            assert inner is not None and inner.pod_shape == pod and inner.run_options == run

    asyncio.run(go())


def test_to_config_never_raises_even_mid_life(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    executor = make(pod_name="fixed")

    async def go() -> None:
        await executor.start()
        assert executor.dump_component().config["pod_name"] == "fixed"
        await executor.stop()
        assert executor.dump_component().config["pod_name"] == "fixed"

    asyncio.run(go())


def test_invalid_config_is_refused_at_construction() -> None:
    # AutoGen's own wording (its executors' tests match it).
    with pytest.raises(ValueError, match=r"^Timeout must be greater than or equal to 1\.$"):
        KubectlCodeExecutor(timeout=0)
    with pytest.raises(ValueError, match="Module name must be a valid Python identifier"):
        KubectlCodeExecutor(functions_module="not-an-identifier")
    with pytest.raises(ValueError, match="mirror=False"):
        KubectlCodeExecutor(work_dir="/tmp/x", mirror=False)
    with pytest.raises(ValueError):
        KubectlCodeExecutorConfig.model_validate({"image": "x", "surprise": 1})


def run_blocks(executor: KubectlCodeExecutor, blocks: list[CodeBlock]) -> KubectlCodeResult:
    async def go() -> KubectlCodeResult:
        async with executor:
            return await executor.execute_code_blocks(blocks, CancellationToken())

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("language", "runner"), [("Python", "python"), ("SH", "sh"), ("Bash", "bash"), ("PY", "python")]
)
def test_language_case_is_normalised(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner, language: str, runner: str
) -> None:
    fake_runner.exec_replies.append(reply_with(b"ok\n", 0))
    result = run_blocks(make(), [CodeBlock(code="x", language=language)])
    assert result.exit_code == 0 and result.output == "ok\n"
    assert fake_runner.ran_blocks[0].runner == runner


def test_result_carries_code_file_and_the_first_failure(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    fake_runner.exec_replies.extend([reply_with(b"a\n", 0), reply_with(b"b\n", 5)])
    blocks = [
        CodeBlock("# filename: first.py\nprint('a')", "python"),
        CodeBlock("exit 5", "sh"),
        CodeBlock("x", "sh"),
    ]
    result = run_blocks(make(mirror=False), blocks)
    assert isinstance(result, KubectlCodeResult) and isinstance(result, CodeResult)
    assert (result.exit_code, result.output) == (5, "a\nb\n")
    assert result.code_file == "/workspace/first.py"
    assert len(fake_runner.ran_blocks) == 2


def test_timeout_is_124_with_a_note(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    fake_runner.exec_replies.append(reply_with(b"tick\n", 124, timed_out=1))
    result = run_blocks(make(timeout=3), [CodeBlock("while True: pass", "python")])
    assert result.exit_code == 124
    assert result.output.startswith("tick\n") and "Timeout" in result.output and "3s" in result.output


def test_no_blocks_is_the_docker_executors_value_error(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    with pytest.raises(ValueError, match=r"^No code blocks to execute\.$"):
        asyncio.run(make().execute_code_blocks([], CancellationToken()))
    assert fake_runner.runs == []


def test_unknown_language_is_exit_1(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    result = run_blocks(make(), [CodeBlock("x", "cobol")])
    assert result.exit_code == 1 and "Unsupported language" in result.output
    assert fake_runner.ran_blocks == []


def test_start_creates_and_stop_deletes_the_pod(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    executor = make()

    async def go() -> None:
        await executor.start()
        name = executor.pod_name
        assert name in fake_runner.pods
        await executor.start()  # idempotent
        assert len(fake_runner.runs_of("apply")) == 1
        await executor.stop()
        await executor.stop()
        assert name not in fake_runner.pods

    asyncio.run(go())


def test_first_run_starts_the_pod(make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner) -> None:
    executor = make()

    async def go() -> int:
        try:
            result = await executor.execute_code_blocks(
                [CodeBlock("print(1)", "python")], CancellationToken()
            )
            return result.exit_code
        finally:
            await executor.stop()

    assert asyncio.run(go()) == 0
    assert len(fake_runner.runs_of("apply")) == 1 and fake_runner.pods == {}


def test_restart_gives_a_fresh_pod(make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner) -> None:
    executor = make()

    async def go() -> tuple[str | None, str | None]:
        async with executor:
            first = executor.pod_name
            await executor.restart()
            return first, executor.pod_name

    first, second = asyncio.run(go())
    assert first != second
    assert fake_runner.pods == {}


def test_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECTL_EXECUTOR_IMAGE", "python:3.13-slim")
    monkeypatch.setenv("KUBECTL_EXECUTOR_TIMEOUT", "9")
    config = KubectlCodeExecutor.from_env(namespace="n1").dump_component().config
    assert (config["pod"]["image"], config["run_options"]["timeout"], config["namespace"]) == (
        "python:3.13-slim",
        9,
        "n1",
    )
    monkeypatch.setenv("KUBECTL_EXECUTOR_WORK_DIR", "/data")
    config = KubectlCodeExecutor.from_env(timeout=5, hardened=False).dump_component().config
    assert (config["run_options"]["timeout"], config["pod"]["work_dir"], config["pod"]["hardened"]) == (
        5,
        "/data",
        False,
    )


def test_a_cancelled_token_before_the_call_runs_nothing(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    token = CancellationToken()
    token.cancel()
    result = asyncio.run(make().execute_code_blocks([CodeBlock("x", "python")], token))
    # The Docker executor's answer: a result, not an exception.
    assert (result.exit_code, result.output) == (1, "Code execution was cancelled.")
    assert fake_runner.runs == []


class BlockingRun:
    """An exec that runs until the kill of the in-pod process group arrives, then reports 137."""

    def __init__(self, fake: FakeRunner) -> None:
        self.started = threading.Event()
        self.killed = threading.Event()
        self.kill_calls: list[list[str]] = []
        fake.exec_replies.append(self.handler)
        fake.on_run = self.on_run

    def handler(self, req: ParsedRequest) -> ExecReply:
        self.started.set()
        assert self.killed.wait(30), "the cancelled block was never killed"
        return reply_with(b"partial\n", 137)(req)

    def on_run(self, call: RunCall) -> Completed | None:
        if call.args[:1] == ["exec"]:
            self.kill_calls.append(call.args)
            self.killed.set()
            return Completed(tuple(call.argv), 0)
        return None


@pytest.mark.parametrize("how", ["token", "task"])
def test_cancellation_kills_the_in_pod_process(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner, how: str
) -> None:
    run = BlockingRun(fake_runner)
    executor = make(mirror=False)

    async def go() -> None:
        async with executor:
            token = CancellationToken()
            task = asyncio.create_task(
                executor.execute_code_blocks([CodeBlock("import time; time.sleep(999)", "python")], token)
            )
            assert await asyncio.to_thread(run.started.wait, 30)
            if how == "token":
                token.cancel()
                # As the Docker executor: the token's cancel is a result (exit 1), not an exception.
                cancelled = await task
                assert (cancelled.exit_code, cancelled.output) == (1, "Code execution was cancelled.")
                # As Docker's: the cancelled first block's file is named, though no result came back.
                digest = hashlib.md5(b"import time; time.sleep(999)").hexdigest()
                assert cancelled.code_file == f"/workspace/tmp_code_{digest}.python"
            else:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            # The worker is free again: the next block runs at once.
            fake_runner.exec_replies.append(reply_with(b"next\n", 0))
            result = await executor.execute_code_blocks(
                [CodeBlock("print('next')", "python")], CancellationToken()
            )
            assert result.output == "next\n"

    asyncio.run(go())
    assert run.kill_calls, "no kill was sent to the pod"
    kill = run.kill_calls[0]
    assert kill[kill.index("--") + 1 : kill.index("--") + 3] == ["sh", "-c"]
    assert kill[-1] == "/workspace" and re.fullmatch("[0-9a-f]{24}", kill[-2]) and "kill -s KILL" in kill[-4]
    assert fake_runner.pods == {}


def test_the_kill_script_stops_the_runs_group_and_nothing_else(tmp_path: Any) -> None:
    """The executor's fixed in-pod kill script (cancel() and deadlines use it), run with the
    host's sh: it finds the run's pid file in any of the runner's log dirs."""
    from kubectl_executor._exec.protocol import kill_args

    work, home = tmp_path / "work", tmp_path / "home"
    for d in (work / ".kx-logs", home / ".kx-logs"):
        d.mkdir(parents=True)
    groups = [subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(2)]
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        (work / ".kx-logs" / "aa11.pid").write_text(f"{groups[0].pid}\n")
        (home / ".kx-logs" / "bb22.pid").write_text(str(groups[1].pid))
        (home / ".kx-logs" / "cc33.pid").write_text(str(bystander.pid))
        for nonce in ("aa11", "bb22"):
            argv = kill_args("kx-1", "executor", nonce, str(work))
            script_args = argv[argv.index("--") + 1 :]
            done = subprocess.run(
                ["/bin/sh", *script_args[1:]],
                env={"PATH": "/usr/bin:/bin", "HOME": str(home)},
                capture_output=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == 0, done.stderr
        assert [g.wait(timeout=10) for g in groups] == [-9, -9]
        assert bystander.poll() is None
    finally:
        for p in [*groups, bystander]:
            p.kill()
            p.wait()


# -- Docker-compatible work_dir: the host mirror of the pod's workspace ---------------------------
# exec_locally runs the in-pod scripts (runner, upload, download, listing) with this machine's sh
# and python in a local "pod" directory, so the mirror is exercised end to end without a cluster.
# The local runs do not start in work_dir (a pod's workingDir does that), so the blocks cd first.


def in_pod(pod: Any, code: str, language: str = "python") -> CodeBlock:
    first = f"import os; os.chdir({str(pod)!r})\n" if language == "python" else f"cd '{pod}'\n"
    return CodeBlock(first + code, language)


@pytest.fixture
def local_pod(fake_runner: FakeRunner, tmp_path: Any) -> Any:
    fake_runner.exec_locally = True
    home = tmp_path / "home"
    home.mkdir()
    fake_runner.local_home = home
    pod = tmp_path / "pod"
    pod.mkdir()
    return pod


def test_work_dir_is_uploaded_at_start_and_changes_come_back(
    make: Callable[..., KubectlCodeExecutor], local_pod: Any, tmp_path: Any
) -> None:
    host = tmp_path / "host"
    (host / "data").mkdir(parents=True)
    (host / "data" / "in.bin").write_bytes(bytes(range(256)) * 4)
    code = (
        f"import hashlib, os; os.chdir({str(local_pod)!r})\n"
        "print(hashlib.sha256(open('data/in.bin','rb').read()).hexdigest())\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/result.bin','wb').write(bytes(reversed(range(256))))\n"
        "os.remove('data/in.bin')\n"
    )
    executor = make(work_dir=host, pod_work_dir=str(local_pod))
    result = run_blocks(executor, [CodeBlock(code, "python")])
    import hashlib

    assert result.exit_code == 0, result.output
    assert result.output.strip() == hashlib.sha256(bytes(range(256)) * 4).hexdigest()
    assert (host / "out" / "result.bin").read_bytes() == bytes(reversed(range(256)))
    # The code file is where Docker users look for it: in work_dir on this machine.
    assert result.code_file is not None and Path(result.code_file).parent == host
    assert Path(result.code_file).read_text() == code
    # A file the code removed in the pod goes on the host too (it was ours, unchanged).
    assert not (host / "data" / "in.bin").exists()


def test_the_mirror_never_writes_through_a_host_symlink(
    make: Callable[..., KubectlCodeExecutor], local_pod: Any, tmp_path: Any
) -> None:
    host, outside = tmp_path / "host", tmp_path / "outside"
    host.mkdir()
    outside.mkdir()
    (host / "link").symlink_to(outside, target_is_directory=True)
    code = (
        "import os\nos.makedirs('link', exist_ok=True)\nopen('link/evil.txt','w').write('x')\nprint('done')"
    )
    # The pod gets no "link" (symlinked directories are not uploaded), makes a real directory
    # of that name and writes into it: that must not land in `outside` through the host link.
    result = run_blocks(make(work_dir=host, pod_work_dir=str(local_pod)), [in_pod(local_pod, code)])
    assert result.exit_code == 0, result.output
    assert (local_pod / "link" / "evil.txt").exists()
    assert list(outside.iterdir()) == []


def test_a_host_file_changed_after_the_download_is_not_removed(
    make: Callable[..., KubectlCodeExecutor], local_pod: Any, tmp_path: Any
) -> None:
    host = tmp_path / "host"
    executor = make(work_dir=host, pod_work_dir=str(local_pod))

    async def go() -> None:
        async with executor:
            t = CancellationToken()
            await executor.execute_code_blocks([in_pod(local_pod, "echo v1 > note.txt", "sh")], t)
            assert (host / "note.txt").read_text() == "v1\n"
            (host / "note.txt").write_text("edited on the host, longer\n")
            await executor.execute_code_blocks([in_pod(local_pod, "rm note.txt", "sh")], t)

    asyncio.run(go())
    assert (host / "note.txt").read_text() == "edited on the host, longer\n"


def test_default_work_dir_is_a_temporary_directory_from_start_to_stop(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    executor = make()
    with pytest.raises(RuntimeError, match="Working directory not properly initialized"):
        _ = executor.work_dir

    async def go() -> Path:
        async with executor:
            directory = executor.work_dir
            assert directory.is_dir()
            return directory

    assert not asyncio.run(go()).exists()
    assert make(mirror=False).work_dir == Path("/workspace")


def test_delete_tmp_files_removes_exactly_the_code_files_run(
    make: Callable[..., KubectlCodeExecutor], local_pod: Any, tmp_path: Any
) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep.py").write_text("print('mine')\n")
    blocks = [
        in_pod(local_pod, "print('first')"),
        in_pod(local_pod, "import sys; sys.exit(2)"),
        CodeBlock("# filename: keep.py\nprint('never run')", "python"),
    ]
    result = run_blocks(make(work_dir=host, pod_work_dir=str(local_pod), delete_tmp_files=True), blocks)
    assert result.exit_code == 2 and result.output == "first\n"
    assert result.code_file is not None and not Path(result.code_file).exists()
    # Only keep.py is left: the block that would have rewritten it never ran.
    assert sorted(p.name for p in local_pod.iterdir() if p.is_file()) == ["keep.py"]
    assert (host / "keep.py").read_text() == "print('mine')\n"


def test_a_file_name_outside_the_workspace_is_refused_with_autogens_words(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    result = run_blocks(make(mirror=False), [CodeBlock("# filename: /tmp/test.py\nprint(1)", "python")])
    assert (result.exit_code, result.output) == (1, "Filename is not in the workspace")
    assert fake_runner.ran_blocks == []


# -- user-defined functions ------------------------------------------------------------------------


def add_two_numbers(a: int, b: int) -> int:
    """Add two numbers together."""
    return a + b


@with_requirements(python_packages=["polars==1.0.0"], global_imports=["json", Alias("os", "o")])
def needs_polars() -> str:
    return json.dumps(o.sep)  # type: ignore[name-defined]  # noqa: F821


def test_functions_module_prompt_and_stub() -> None:
    from_str = FunctionWithRequirements.from_str("def mul(a: int, b: int) -> int:\n    return a * b\n")
    executor = KubectlCodeExecutor(functions=[add_two_numbers, from_str], functions_module="tools")
    prompt = executor.format_functions_for_prompt()
    assert "`from tools import foo`" in prompt
    # (this module's annotations are strings: `from __future__ import annotations`)
    stub = "def add_two_numbers(a: 'int', b: 'int') -> 'int':\n    \"\"\"Add two numbers together.\"\"\"\n    ..."
    assert stub in prompt
    assert "def mul(a: int, b: int) -> int:\n    ..." in prompt
    text = build_python_functions_file([needs_polars, add_two_numbers])
    assert text.startswith("import json\nimport os as o\n\n")
    assert "@with_requirements" not in text and "def needs_polars() -> str:" in text


def test_functions_are_installed_once_per_pod(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner, local_pod: Any
) -> None:
    helpers: list[tuple[str, bytes]] = []

    def on_run(call: RunCall) -> Completed | None:
        if call.args[:1] == ["exec"] and "pip install" in call.args[-1]:
            helpers.append(("pip", call.stdin or b""))
            return Completed(tuple(call.argv), 0)  # pip "succeeds" (no network in unit tests)
        if call.args[:1] == ["exec"] and 'exec "$py" "$file"' in call.args[-1]:
            helpers.append(("load", call.stdin or b""))
            return Completed(tuple(call.argv), 0)  # polars is not installed here
        return None

    fake_runner.on_run = on_run
    executor = make(functions=[needs_polars], mirror=False, pod_work_dir=str(local_pod))

    async def go() -> None:
        async with executor:
            for _ in range(2):
                await executor.execute_code_blocks([CodeBlock("print(1)", "python")], CancellationToken())
            await executor.restart()
            await executor.execute_code_blocks([CodeBlock("print(1)", "python")], CancellationToken())

    asyncio.run(go())
    # Two pods, each set up once: the packages on stdin (never in a shell string), then the import check.
    pod = str(local_pod).encode()
    assert helpers == [("pip", pod + b"\npolars==1.0.0\n"), ("load", pod + b"\nfunctions.py\n")] * 2
    assert (local_pod / "functions.py").read_text() == build_python_functions_file([needs_polars])


@pytest.mark.parametrize(
    ("failing", "message"), [("pip", "Pip install failed."), ("load", "Functions failed to load:")]
)
def test_function_setup_failures_are_value_errors_as_for_docker(
    make: Callable[..., KubectlCodeExecutor],
    fake_runner: FakeRunner,
    local_pod: Any,
    failing: str,
    message: str,
) -> None:
    def on_run(call: RunCall) -> Completed | None:
        script = call.args[-1] if call.args[:1] == ["exec"] else ""
        if (failing == "pip" and "pip install" in script) or (failing == "load" and '"$file"' in script):
            return Completed(tuple(call.argv), 1, b"", b"ERROR: No matching distribution\n")
        return None

    fake_runner.on_run = on_run
    with pytest.raises(ValueError, match=message) as caught:
        run_blocks(
            make(functions=[needs_polars], mirror=False, pod_work_dir=str(local_pod)),
            [CodeBlock("print(1)", "python")],
        )
    assert "No matching distribution" in str(caught.value)
    assert fake_runner.ran_blocks == []


def test_bad_requirements_are_refused_before_any_call() -> None:
    @with_requirements(python_packages=["--index-url=http://evil"])
    def f() -> None:
        return None

    with pytest.raises(ValueError, match="not a package requirement"):
        KubectlCodeExecutor(functions=[f])


def test_trusted_provider_namespace_is_the_package() -> None:
    """autogen-core after 0.7.5 loads providers only from trusted namespaces; the README tells
    users to add ``kubectl_executor`` to AUTOGEN_ALLOWED_PROVIDER_NAMESPACES: that must cover ours."""
    provider = KubectlCodeExecutor().dump_component().provider
    assert provider.startswith("kubectl_executor.")


# -- PodCommandLineCodeExecutor: the seed's async executor over the adapter ---------------------


@pytest.fixture
def make_pod(
    fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy
) -> Callable[..., PodCommandLineCodeExecutor]:
    def answer_wait(call: RunCall) -> Completed | None:
        # `kubectl wait --for=delete`: the fake deletes at once, so the pod is gone.
        if call.args[:1] == ["wait"]:
            assert call.args[2].removeprefix("pod/") not in fake_runner.pods
            return Completed(tuple(call.argv), 0)
        return None

    fake_runner.on_run = answer_wait

    def make(**kwargs: Any) -> PodCommandLineCodeExecutor:
        return PodCommandLineCodeExecutor(
            kubectl=fake_kubectl, runner=fake_runner, retry=retry_policy, **kwargs
        )

    return make


def applied_pod(executor: KubectlCodeExecutor, fake: FakeRunner) -> dict[str, Any]:
    async def go() -> None:
        async with executor:
            pass

    asyncio.run(go())
    manifest: dict[str, Any] = json.loads(fake.runs_of("apply")[-1].stdin or b"")
    return manifest


class V1Like:
    """What kubernetes-client models look like to the converter (openapi_types, attribute_map)."""

    openapi_types: ClassVar[dict[str, str]] = {"name": "str", "empty_dir": "object"}
    attribute_map: ClassVar[dict[str, str]] = {"name": "name", "empty_dir": "emptyDir"}

    def __init__(self, name: str, empty_dir: Any) -> None:
        self.name, self.empty_dir = name, empty_dir


class EmptyDirLike:
    openapi_types: ClassVar[dict[str, str]] = {"medium": "str", "size_limit": "str"}
    attribute_map: ClassVar[dict[str, str]] = {"medium": "medium", "size_limit": "sizeLimit"}

    def __init__(self) -> None:
        self.medium, self.size_limit = "Memory", None


POD_YAML = """apiVersion: v1
kind: Pod
metadata:
  annotations: {test: "true"}
  labels: {run: test-pod}
  name: test-pod
  namespace: team
spec:
  nodeSelector: {disk: ssd}
  containers:
  - name: autogen-executor
    image: python:3.12-slim
    args: [sh, -c, "while true; do sleep 5; done"]
    env: [{name: GREETING, value: hi}]
  - name: sidecar
    image: busybox
"""


@pytest.mark.parametrize("form", ["text", "file", "dict"])
def test_pod_spec_in_the_seeds_forms_shapes_our_pod(
    make_pod: Callable[..., PodCommandLineCodeExecutor], fake_runner: FakeRunner, tmp_path: Any, form: str
) -> None:
    import yaml

    spec: Any = POD_YAML
    if form == "file":
        (tmp_path / "pod.yaml").write_text(POD_YAML)
        spec = str(tmp_path / "pod.yaml")
    elif form == "dict":
        spec = yaml.safe_load(POD_YAML)
    executor = make_pod(pod_spec=spec)
    assert executor._pod_name == "test-pod"
    pod = applied_pod(executor, fake_runner)
    assert pod["metadata"]["name"] == "test-pod"
    assert pod["metadata"]["labels"]["run"] == "test-pod"
    assert pod["metadata"]["annotations"]["test"] == "true"
    assert pod["spec"]["nodeSelector"] == {"disk": "ssd"}
    by_name = {c["name"]: c for c in pod["spec"]["containers"]}
    # The seed's code container is ours ("executor"): its image and env, our idle command kept
    # (it gave only args), our hardened security context; the sidecar is left as given.
    assert set(by_name) == {"executor", "sidecar"}
    assert by_name["executor"]["image"] == "python:3.12-slim"
    assert {"name": "GREETING", "value": "hi"} in by_name["executor"]["env"]
    assert by_name["executor"]["securityContext"]["allowPrivilegeEscalation"] is False
    assert (
        "namespace=team" in " ".join(fake_runner.runs_of("apply")[-1].argv)
        or "team" in fake_runner.runs_of("apply")[-1].argv
    )


def test_volume_replaces_the_workspace_and_v1_like_objects_convert(
    make_pod: Callable[..., PodCommandLineCodeExecutor], fake_runner: FakeRunner
) -> None:
    executor = make_pod(volume=V1Like("test", EmptyDirLike()), workspace_path="/data")
    pod = applied_pod(executor, fake_runner)
    workspace = next(v for v in pod["spec"]["volumes"] if v["name"] == "workspace")
    # The user's source replaces ours (null: absent to the API server).
    assert workspace["emptyDir"] == {"medium": "Memory", "sizeLimit": None}
    mounts = pod["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "workspace", "mountPath": "/data"} in mounts
    assert executor.workspace_path == Path("/data")


def test_seed_validation_messages() -> None:
    with pytest.raises(ValueError, match="Timeout must be greater than or equal to 1"):
        PodCommandLineCodeExecutor(timeout=0)
    with pytest.raises(ValueError, match="relative path"):
        PodCommandLineCodeExecutor(workspace_path="./workspace")
    with pytest.raises(ValueError, match="Pod name validation failed"):
        PodCommandLineCodeExecutor(pod_name="Not_A_Name!")
    with pytest.raises(ValueError, match="autogen-executor"):
        PodCommandLineCodeExecutor(
            pod_spec={"metadata": {"name": "p"}, "spec": {"containers": [{"name": "x"}]}}
        )


def test_default_name_round_trip_and_restart_is_the_seeds_no_op(
    make_pod: Callable[..., PodCommandLineCodeExecutor], fake_runner: FakeRunner
) -> None:
    executor = make_pod()
    assert re.fullmatch(r"autogen-code-exec-[0-9a-f-]{36}", executor._pod_name)
    model = executor.dump_component()
    assert model.provider == "kubectl_executor.autogen.PodCommandLineCodeExecutor"
    loaded = PodCommandLineCodeExecutor.load_component(model)
    assert loaded._pod_name == executor._pod_name and loaded.timeout == executor.timeout

    async def go() -> str | None:
        async with executor:
            name = executor.pod_name
            with pytest.warns(UserWarning, match="No action is taken"):
                await executor.restart()
            assert executor.pod_name == name and name in fake_runner.pods
            return name

    assert asyncio.run(go()) not in fake_runner.pods  # auto_remove: deleted on exit
    # ... and waited for, so that the same instance can start its pod (same name) again.
    waits = fake_runner.runs_of("wait")
    assert len(waits) == 1 and waits[0].args[1:3] == ["--for=delete", f"pod/{executor._pod_name}"]


def test_auto_remove_false_keeps_the_pod_between_async_withs(
    make_pod: Callable[..., PodCommandLineCodeExecutor], fake_runner: FakeRunner
) -> None:
    executor = make_pod(auto_remove=False)

    async def go() -> None:
        async with executor:
            first = executor.pod_name
        async with executor:
            assert executor.pod_name == first and first in fake_runner.pods
        assert first in fake_runner.pods  # still there, as the seed leaves it
        await executor.stop()
        assert first not in fake_runner.pods

    asyncio.run(go())
    assert len(fake_runner.runs_of("apply")) == 1


@pytest.mark.parametrize(
    ("hint", "inside"),
    [
        (None, True),
        ("a.py", True),
        ("sub/a.py", True),
        ("/workspace/sub/a.py", True),  # absolute, under the pod's workspace: the executor decides
        ("/workspace", False),
        ("/tmp/test.py", False),
        ("../a.py", False),
        ("/workspace/../etc/x.py", False),
    ],
)
def test_which_file_name_hints_are_in_the_workspace(hint: str | None, inside: bool) -> None:
    assert KubectlCodeExecutor(mirror=False)._in_workspace(hint) is inside


def test_the_workspace_listing_without_python_matches_the_python_one(tmp_path: Any) -> None:
    """The in-pod listing, run with this machine's sh: python's, and the find/stat fallback for
    images without python, give the same files and sizes (links and directories left out)."""
    import shutil

    from kubectl_executor.autogen import LIST_SCRIPT, LIST_SHELL

    root = tmp_path / "ws"
    (root / "sub dir").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"12345")
    (root / "sub dir" / "b.bin").write_bytes(bytes(range(256)))
    (root / "link").symlink_to(root / "a.txt")
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("sh", "find", "stat", "cat"):
        found = shutil.which(tool)
        assert found is not None
        (bare / tool).symlink_to(found)

    def listing(path: str) -> dict[str, tuple[int, int]]:
        done = subprocess.run(
            ["sh", "-c", LIST_SHELL, "kx", LIST_SCRIPT],
            input=f"{root}\n".encode(),
            capture_output=True,
            env={"PATH": path},
            timeout=60,
            check=True,
        )
        records = [r.split(b" ", 2) for r in done.stdout.split(b"\0") if r]
        return {name.decode(): (int(size), int(mtime)) for size, mtime, name in records}

    with_python = listing(os.environ["PATH"])
    without = listing(str(bare))
    assert set(with_python) == set(without) == {"a.txt", "sub dir/b.bin"}
    for name, (size, mtime) in with_python.items():
        assert without[name][0] == size
        assert without[name][1] == mtime // 10**9 * 10**9  # whole seconds there
