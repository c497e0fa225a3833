"""Persistent sessions through the real kubectl (emulator or a real cluster)."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import CodeBlock, OutcomeUnknownError
from kubectl_executor._cluster.runner import Completed, ShRunner, Sink, StdinData
from kubectl_executor._exec.session import STATE_LOST_NOTE

pytestmark = pytest.mark.integration


class CountingRunner:
    """The real runner (real kubectl), counting every kubectl process it starts."""

    def __init__(self) -> None:
        self.real = ShRunner()
        self.lock = threading.Lock()
        self.started: list[list[str]] = []

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: StdinData = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> Completed:
        with self.lock:
            self.started.append(list(argv))
        return self.real.run(
            argv, stdin=stdin, timeout=timeout, env=env, on_stdout=on_stdout, on_stderr=on_stderr
        )

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> Any:
        with self.lock:
            self.started.append(list(argv))
        return self.real.spawn(argv, env=env, on_stdout=on_stdout, on_stderr=on_stderr)


def py(code: str) -> list[CodeBlock]:
    return [CodeBlock(code, "python")]


def sh(code: str) -> list[CodeBlock]:
    return [CodeBlock(code, "sh")]


LIST_COMMANDS = 'for d in /proc/[0-9]*; do tr "\\000" " " < $d/cmdline 2>/dev/null; echo; done'


def test_a_session_block_starts_no_kubectl_process(
    executor_factory: ExecutorFactory, cluster: Cluster
) -> None:
    counting = CountingRunner()
    executor = executor_factory(session=True, runner=counting)
    assert executor.execute_code_blocks(py("print('warm')")).output == "warm\n"  # connects
    before = len(counting.started)
    execs = cluster.emulator.stats.exec_count(executor.pod_name, cluster.namespace) if cluster.emulator else 0
    for i in range(5):
        result = executor.execute_code_blocks(py(f"print({i} * 2)"))
        assert (result.exit_code, result.output) == (0, f"{i * 2}\n")
    assert len(counting.started) == before
    if cluster.emulator is not None:  # and the API server saw no new exec either
        assert cluster.emulator.stats.exec_count(executor.pod_name, cluster.namespace) == execs


def test_session_exit_codes_and_streams_are_exact(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(session=True)
    for code in (0, 1, 3, 42, 255):
        assert executor.execute_code_blocks(py(f"import sys; sys.exit({code})")).exit_code == code
    assert executor.execute_code_blocks(sh("kill -9 $$")).exit_code == 137
    code = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nprint(sys.stdin.read() == '')\nsys.exit(2)"
    result = executor.execute_code_blocks(py(code))
    assert (result.exit_code, result.stdout, result.stderr) == (2, "to out\nTrue\n", "to err\n")
    tricky = 'echo "$HOME" `id -u` $(whoami)\nEOF\n\'"\\\n'
    result = executor.execute_code_blocks(py(f"data = {tricky!r}\nprint(len(data.encode()))"))
    assert result.output == f"{len(tricky.encode())}\n"


def test_session_timeout_kills_the_block_and_what_it_started(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(session=True, timeout=2)
    result = executor.execute_code_blocks(sh("sleep 271 &\necho started\nsleep 272\n"))
    assert (result.exit_code, result.timed_out) == (124, True)
    assert result.output.startswith("started\n") and "Timeout" in result.output
    running = executor.execute_code_blocks(sh(LIST_COMMANDS)).stdout
    assert "sleep 271" not in running and "sleep 272" not in running


def test_session_output_is_streamed_while_the_block_runs(
    executor_factory: ExecutorFactory, cluster: Cluster
) -> None:
    """The block finishes with 0 only if the callback saw its first line while it was running."""
    executor = executor_factory(session=True, timeout=60)
    go = "/tmp/kx-stream-go"

    def on_output(stream: str, chunk: bytes) -> None:
        if b"first" in chunk:  # unblock the block from outside, with a kubectl of our own
            args = ["exec", executor.pod_name, "-n", cluster.namespace, "-c", "executor", "--", "touch", go]
            cluster.run(*args)

    code = f"echo first\ni=0\nwhile [ ! -e {go} ]; do i=$((i+1)); [ $i -gt 400 ] && exit 9; sleep 0.1; done\necho second\n"
    result = executor.execute_code_blocks(sh(code), on_output=on_output)
    assert (result.exit_code, result.output) == (0, "first\nsecond\n")


def test_a_broken_channel_is_outcome_unknown_and_the_next_block_works(
    executor_factory: ExecutorFactory,
) -> None:
    executor = executor_factory(session=True)
    executor.execute_code_blocks(sh("echo warm"))
    with pytest.raises(OutcomeUnknownError):  # the block kills the agent it runs under
        executor.execute_code_blocks(sh("echo ran >> /tmp/kx-runs\nkill -9 $PPID\nsleep 273\n"))
    after = executor.execute_code_blocks(sh("cat /tmp/kx-runs; " + LIST_COMMANDS))
    assert after.exit_code == 0
    assert after.stdout.startswith("ran\n") and after.stdout.count("ran\n") == 1  # never re-run
    assert "sleep 273" not in after.stdout  # the new agent killed what the old one left


def test_a_dropped_connection_is_outcome_unknown_and_the_next_block_works(
    executor_factory: ExecutorFactory, cluster: Cluster
) -> None:
    if cluster.emulator is None:
        pytest.skip("needs the emulator's fault injection")
    executor = executor_factory(session=True)
    cluster.emulator.faults.drop_exec(after_bytes=4000, pod=executor.pod_name, namespace=cluster.namespace)
    with pytest.raises(OutcomeUnknownError):
        executor.execute_code_blocks(
            py("import time\nfor i in range(100):\n    print('x' * 99)\n    time.sleep(0.01)")
        )
    assert executor.execute_code_blocks(py("print('back')")).output == "back\n"


def test_stateful_python_keeps_state_between_blocks(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(stateful=True)
    setup = "import json\nx = 41\ndef double(v):\n    return 2 * v\n"
    assert executor.execute_code_blocks(py(setup)).exit_code == 0
    result = executor.execute_code_blocks(py("print(x + 1, double(x), json.dumps([1]))"))
    assert (result.exit_code, result.output) == (0, "42 82 [1]\n")
    assert executor.execute_code_blocks(sh("exit 3")).exit_code == 3  # shell blocks are processes
    assert executor.execute_code_blocks(py("print(x)")).output == "41\n"


def test_stateful_timeout_interrupts_and_keeps_the_state(executor_factory: ExecutorFactory) -> None:
    executor = executor_factory(stateful=True, timeout=2)
    executor.execute_code_blocks(py("x = 1"))
    result = executor.execute_code_blocks(py("import time\nx = 2\nwhile True:\n    time.sleep(0.05)"))
    assert (result.exit_code, result.timed_out) == (124, True)
    assert STATE_LOST_NOTE.strip() not in result.output
    assert executor.execute_code_blocks(py("print(x)")).output == "2\n"


def test_stateful_timeout_that_must_restart_says_the_state_was_lost(
    executor_factory: ExecutorFactory,
) -> None:
    executor = executor_factory(stateful=True, timeout=2)
    executor.execute_code_blocks(py("x = 1"))
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(300)"
    result = executor.execute_code_blocks(py(code))
    assert (result.exit_code, result.timed_out, result.state_lost) == (137, True, True)
    assert STATE_LOST_NOTE.strip() in result.output
    after = executor.execute_code_blocks(py("print('x' in globals())"))
    assert (after.exit_code, after.output, after.state_lost) == (0, "False\n", False)


def test_the_shell_agent_serves_images_without_python(
    executor_factory: ExecutorFactory, cluster: Cluster
) -> None:
    image = os.environ.get("KX_TEST_SHELL_IMAGE", "busybox" if cluster.emulator is not None else "")
    if not image:
        pytest.skip("set KX_TEST_SHELL_IMAGE to an image without python")
    executor = executor_factory(session=True, image=image, timeout=2)
    result = executor.execute_code_blocks(sh("echo out; echo err >&2; exit 7"))
    assert (result.exit_code, result.stdout, result.stderr) == (7, "out\n", "err\n")
    timed = executor.execute_code_blocks(sh("sleep 274 & sleep 275"))
    assert (timed.exit_code, timed.timed_out) == (124, True)
    running = executor.execute_code_blocks(sh(LIST_COMMANDS)).stdout
    assert "sleep 274" not in running and "sleep 275" not in running
    assert executor._session is not None and executor._session.agent_kind == "sh"


@pytest.mark.parametrize("stateful", [False, True])
def test_cancel_stops_the_session_block_and_keeps_the_session(
    executor_factory: ExecutorFactory, stateful: bool
) -> None:
    executor = executor_factory(session=True, stateful=stateful, timeout=120)
    executor.execute_code_blocks(py("x = 1"))

    def on_output(stream: str, chunk: bytes) -> None:
        if b"started" in chunk:
            threading.Thread(target=executor.cancel).start()  # as another thread would

    code = "import subprocess, time\nsubprocess.Popen(['sleep', '276'])\nprint('started')\ntime.sleep(277)"
    result = executor.execute_code_blocks(py(code) + sh("echo skipped"), on_output=on_output)
    assert result.exit_code != 0 and "skipped" not in result.output and not result.timed_out
    after = executor.execute_code_blocks(sh(LIST_COMMANDS))
    assert "sleep 276" not in after.stdout and "time.sleep(277)" not in after.stdout
    if stateful:  # interrupted, not restarted: the state is still there
        assert executor.execute_code_blocks(py("print(x)")).output == "1\n"
    assert executor._session is not None and executor._session.connects == 1
