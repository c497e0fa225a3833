"""The AutoGen adapter on the fake kubectl runner: contract, config round trip, cancellation."""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest
from autogen_core import CancellationToken, ComponentModel
from autogen_core.code_executor import CodeBlock, CodeExecutor, CodeResult
from kx_fakes import ExecReply, FakeRunner, ParsedRequest, RunCall, reply_with

from kubectl_executor import Resources
from kubectl_executor.autogen import (
    KubectlCodeExecutor,
    KubectlCodeExecutorConfig,
    KubectlCodeResult,
)
from kubectl_executor.retry import RetryPolicy
from kubectl_executor.runner import Completed


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
        env_vars={"A": "1"},
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
    assert model.config["timeout"] == 17 and model.config["resources"]["cpu_limit"] == "1"


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
    with pytest.raises(ValueError, match="timeout"):
        KubectlCodeExecutor(timeout=0)
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
    result = run_blocks(make(), blocks)
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
    assert (config["image"], config["timeout"], config["namespace"]) == ("python:3.13-slim", 9, "n1")


def test_a_cancelled_token_before_the_call_runs_nothing(
    make: Callable[..., KubectlCodeExecutor], fake_runner: FakeRunner
) -> None:
    token = CancellationToken()
    token.cancel()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(make().execute_code_blocks([CodeBlock("x", "python")], token))
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
    executor = make()

    async def go() -> None:
        async with executor:
            token = CancellationToken()
            task = asyncio.create_task(
                executor.execute_code_blocks([CodeBlock("import time; time.sleep(999)", "python")], token)
            )
            assert await asyncio.to_thread(run.started.wait, 30)
            if how == "token":
                token.cancel()
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
    from kubectl_executor.protocol import kill_args

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
