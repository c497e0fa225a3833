"""Sessions without a cluster: the in-pod agents run as local processes, or a scripted fake answers.

``LocalAgentRunner`` is a fake kubectl runner: it never runs kubectl, it runs the command that
would run in the pod (``sh -c BOOT ...``) on this host, so the real agents (agent.py, agent.sh) and
the real client speak the real protocol. ``ScriptedProcess`` plays a misbehaving agent.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._cluster.runner import Completed, ShRunner, Sink, StdinData
from kubectl_executor._exec.protocol import ExecResult, RunRequest
from kubectl_executor._exec.session import AGENT_PY, STATE_LOST_NOTE, Session
from kubectl_executor.boundary import ClusterAccess
from kubectl_executor.errors import OutcomeUnknownError

FRAME = struct.Struct(">cI")  # written out here on purpose: a protocol change must show in the tests


class LocalAgentRunner:
    """Runs what would run in the pod (the argv after ``--``) on this host; counts every process."""

    def __init__(self) -> None:
        self.real = ShRunner()
        self.spawned: list[list[str]] = []
        self.ran: list[list[str]] = []
        # A python3 first on PATH, as in an image. KX_TEST_AGENT_BINDIR: a directory whose python3
        # is another version, to check the agent on the oldest Python it supports (3.6).
        bindir = os.environ.get("KX_TEST_AGENT_BINDIR") or os.path.dirname(sys.executable)
        self.env = {"PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    @staticmethod
    def _in_pod(argv: Sequence[str]) -> list[str]:
        return list(argv[list(argv).index("--") + 1 :])

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
        self.ran.append(list(argv))
        return self.real.run(self._in_pod(argv), stdin=stdin, timeout=timeout, env=self.env)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> Any:
        self.spawned.append(list(argv))
        return self.real.spawn(self._in_pod(argv), env=self.env, on_stdout=on_stdout, on_stderr=on_stderr)


@pytest.fixture
def local_runner() -> LocalAgentRunner:
    return LocalAgentRunner()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


@pytest.fixture
def open_session(fake_kubectl: str, local_runner: LocalAgentRunner) -> Iterator[Callable[..., Session]]:
    made: list[Session] = []
    kubectl = Kubectl(ClusterAccess(kubectl=fake_kubectl), runner=local_runner, retry=RetryPolicy(attempts=1))

    def make(**kwargs: Any) -> Session:
        session = Session(kubectl, "pod-a", **kwargs)
        made.append(session)
        return session

    yield make
    for session in made:
        session.close()


def request(workdir: Path, code: str, runner: str = "python", **kwargs: Any) -> RunRequest:
    kwargs.setdefault("timeout", 30)
    path = kwargs.pop("path", "block.py" if runner == "python" else "block.sh")
    return RunRequest(code=code.encode(), work_dir=str(workdir), path=path, runner=runner, **kwargs)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0): it has exited, only its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "Z"


AGENTS = ["auto", "sh"]  # auto = the Python agent here; sh = the POSIX-sh fallback


@pytest.mark.parametrize("agent", AGENTS)
def test_blocks_share_one_process_and_keep_exact_exit_codes(
    open_session: Callable[..., Session], local_runner: LocalAgentRunner, workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent)
    results = [
        session.run(request(workdir, "import sys; sys.exit(0)")),
        session.run(request(workdir, "import sys; sys.exit(3)")),
        session.run(request(workdir, "exit 255", "sh")),
        session.run(request(workdir, "kill -9 $$", "sh")),
        session.run(request(workdir, "kill -TERM $$", "sh")),
    ]
    assert [r.exit_code for r in results] == [0, 3, 255, 137, 143]
    assert session.agent_kind == ("python" if agent == "auto" else "sh")
    assert len(local_runner.spawned) == 1  # one exec for five blocks
    assert local_runner.ran == []
    assert session.connects == 1


@pytest.mark.parametrize("agent", AGENTS)
def test_streams_stay_apart_stdin_is_empty_and_env_is_per_run(
    open_session: Callable[..., Session], workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent)
    code = "import sys\nprint('to out')\nprint('to err', file=sys.stderr)\nprint(repr(sys.stdin.read()))"
    result = session.run(request(workdir, code, env={"KX_ONE": "a b"}))
    assert (result.stdout, result.stderr) == (b"to out\n''\n", b"to err\n")
    first = session.run(request(workdir, 'echo "[$KX_ONE]"', "sh", env={"KX_ONE": "x y"}))
    second = session.run(request(workdir, 'echo "[${KX_ONE:-unset}]"', "sh"))
    assert (first.stdout, second.stdout) == (b"[x y]\n", b"[unset]\n")


@pytest.mark.parametrize("agent", AGENTS)
def test_the_file_is_written_under_its_name(
    open_session: Callable[..., Session], workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent)
    code = "# filename: sub/dir/hello.py\nprint('hi')\n"
    result = session.run(request(workdir, code, path="sub/dir/hello.py"))
    assert result.exit_code == 0
    assert (workdir / "sub/dir/hello.py").read_text() == code
    saved = session.run(request(workdir, "<p>x</p>", "none", path="page.html"))
    assert saved.exit_code == 0 and (workdir / "page.html").read_text() == "<p>x</p>"


@pytest.mark.parametrize("agent", AGENTS)
def test_timeout_kills_the_whole_process_group(
    open_session: Callable[..., Session], workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent)
    code = f"sleep 300 & echo $! > {workdir}/bg.pid\necho started\nsleep 300\n"
    result = session.run(request(workdir, code, "sh", timeout=1))
    assert (result.exit_code, result.timed_out, result.stdout) == (124, True, b"started\n")
    assert process_gone(int((workdir / "bg.pid").read_text()))


@pytest.mark.parametrize("agent", AGENTS)
def test_term_ignoring_code_is_killed_with_137(
    open_session: Callable[..., Session], workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent)
    code = "trap '' TERM\necho $$\nsleep 300\n"
    result = session.run(request(workdir, code, "sh", timeout=1, kill_after=1))
    assert (result.exit_code, result.timed_out) == (137, True)
    assert process_gone(int(result.stdout))


@pytest.mark.parametrize("agent", AGENTS)
def test_output_over_budget_keeps_head_tail_and_the_full_log(
    open_session: Callable[..., Session], workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent, max_output_bytes=4096)
    code = "print('HEAD' + 'x' * 100000 + 'TAIL')"
    result = session.run(request(workdir, code, budget=4096))
    assert result.truncated
    assert result.stdout.startswith(b"HEAD") and result.stdout.endswith(b"TAIL\n")
    assert b"bytes omitted" in result.stdout and len(result.stdout) < 5000
    assert len(result.log_files) == 2
    assert Path(result.log_files[0]).read_bytes() == b"HEAD" + b"x" * 100000 + b"TAIL\n"
    for path in result.log_files:
        os.unlink(path)


@pytest.mark.parametrize("agent", AGENTS)
def test_output_reaches_the_callback_while_the_block_runs(
    open_session: Callable[..., Session], workdir: Path, agent: str
) -> None:
    """The block only finishes (exit 0) after the callback has seen its first line."""
    session = open_session(agent=agent)
    go = workdir / "go"
    seen: list[tuple[str, bytes]] = []

    def on_output(stream: str, chunk: bytes) -> None:
        seen.append((stream, chunk))
        if b"first" in chunk:
            go.touch()

    code = f"echo first\ni=0\nwhile [ ! -e {go} ]; do i=$((i+1)); [ $i -gt 200 ] && exit 9; sleep 0.1; done\necho second\n"
    result = session.run(request(workdir, code, "sh"), on_output)
    assert result.exit_code == 0
    assert result.stdout == b"first\nsecond\n"
    assert b"".join(c for s, c in seen if s == "stdout") == b"first\nsecond\n"


@pytest.mark.parametrize("agent", AGENTS)
def test_broken_channel_is_outcome_unknown_and_the_next_block_reconnects(
    open_session: Callable[..., Session], local_runner: LocalAgentRunner, workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent)
    assert session.run(request(workdir, "echo warm", "sh")).exit_code == 0
    # The block kills the agent it runs under, then lingers: the channel is gone mid-block.
    code = f"echo ran >> {workdir}/runs\necho $$ > {workdir}/block.pid\nkill -9 $PPID\nsleep 300\n"
    with pytest.raises(OutcomeUnknownError):
        session.run(request(workdir, code, "sh"))
    after = session.run(request(workdir, "echo fine", "sh"))
    assert (after.exit_code, after.stdout) == (0, b"fine\n")
    assert (workdir / "runs").read_text() == "ran\n"  # never re-run
    assert session.connects == 2 and len(local_runner.spawned) == 2
    # The new agent of the same session killed what the broken one left running.
    assert process_gone(int((workdir / "block.pid").read_text()))


def test_stateful_python_keeps_variables_imports_and_definitions(
    open_session: Callable[..., Session], local_runner: LocalAgentRunner, workdir: Path
) -> None:
    session = open_session(stateful=True)
    assert (
        session.run(request(workdir, "import math\nx = 41\ndef double(v):\n    return 2 * v\n")).exit_code
        == 0
    )
    result = session.run(request(workdir, "print(x + 1, double(x), math.floor(2.5))"))
    assert (result.exit_code, result.stdout, result.stderr) == (0, b"42 82 2\n", b"")
    failed = session.run(request(workdir, "import sys\nprint('partial')\nraise ValueError('boom')"))
    assert failed.exit_code == 1 and b"ValueError: boom" in failed.stderr and b"kx_agent" not in failed.stderr
    exited = session.run(request(workdir, "import sys\nx = 7\nsys.exit(5)"))
    assert exited.exit_code == 5
    assert session.run(request(workdir, "print(x)")).stdout == b"7\n"
    assert isinstance(exited, ExecResult) and not exited.state_lost
    assert len(local_runner.spawned) == 1


def test_stateful_timeout_interrupts_and_keeps_the_state(
    open_session: Callable[..., Session], workdir: Path
) -> None:
    session = open_session(stateful=True)
    session.run(request(workdir, "x = 1"))
    result = session.run(
        request(workdir, "import time\nx = 2\nwhile True:\n    time.sleep(0.05)\n", timeout=1)
    )
    assert (result.exit_code, result.timed_out, result.state_lost) == (124, True, False)
    assert b"KeyboardInterrupt" in result.stderr
    assert session.run(request(workdir, "print(x)")).stdout == b"2\n"


def test_stateful_timeout_that_ignores_sigint_restarts_and_says_state_was_lost(
    open_session: Callable[..., Session], workdir: Path
) -> None:
    session = open_session(stateful=True)
    session.run(request(workdir, "x = 1"))
    code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(300)\n"
    result = session.run(request(workdir, code, timeout=1, kill_after=1))
    assert (result.exit_code, result.timed_out, result.state_lost) == (137, True, True)
    assert result.stderr.endswith(STATE_LOST_NOTE.encode())
    after = session.run(request(workdir, "print('x' in globals())"))
    assert (after.exit_code, after.stdout, after.state_lost) == (0, b"False\n", False)


def test_stateful_interpreter_that_dies_reports_its_exit_and_the_lost_state(
    open_session: Callable[..., Session], workdir: Path
) -> None:
    session = open_session(stateful=True)
    session.run(request(workdir, "x = 1"))
    result = session.run(request(workdir, "import os\nos._exit(7)"))
    assert (result.exit_code, result.state_lost) == (7, True)
    killed = session.run(request(workdir, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))
    assert (killed.exit_code, killed.state_lost) == (128 + signal.SIGKILL, True)


def test_stateful_state_lost_with_the_channel_is_reported_on_the_next_block(
    open_session: Callable[..., Session], workdir: Path
) -> None:
    session = open_session(stateful=True)
    session.run(request(workdir, "x = 1"))
    with pytest.raises(OutcomeUnknownError):
        session.run(request(workdir, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))
    after = session.run(request(workdir, "print('x' in globals())"))
    assert (after.stdout, after.state_lost) == (b"False\n", True)
    assert session.run(request(workdir, "y = 1")).state_lost is False


def test_stateful_shell_blocks_run_as_processes(open_session: Callable[..., Session], workdir: Path) -> None:
    session = open_session(stateful=True)
    assert session.run(request(workdir, "exit 4", "sh")).exit_code == 4


# -- a scripted agent, for what a real one does not do on demand --------------------------------


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return FRAME.pack(kind, len(payload)) + payload


class ScriptedProcess:
    """A fake kubectl exec whose "agent" is a script: ``on_request(proc, nonce)`` answers a block."""

    def __init__(self, on_stdout: Sink | None, on_stderr: Sink | None, script: ScriptedRunner) -> None:
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self.script = script
        self.stdin = bytearray()
        self.requests: list[bytes] = []
        self.frames: list[bytes] = []
        self.exited = threading.Event()
        self.code = 0
        self.killed = False
        self.stdin_closed = False
        self.booted = False
        threading.Thread(target=lambda: self.out(b"KXBOOT python\n"), daemon=True).start()

    @property
    def pid(self) -> int:
        return 4242

    def out(self, data: bytes) -> None:
        assert self.on_stdout is not None
        self.on_stdout(data)

    def write(self, data: bytes) -> None:
        if self.exited.is_set() or self.script.broken_writes:
            if self.script.broken_writes:
                self.script.broken_writes -= 1
            raise BrokenPipeError("gone")
        self.stdin += data
        if not self.booted:
            self.booted = True
            self.stdin.clear()
            self.out(frame(b"H", json.dumps({"agent": "python", "protocol": 1}).encode()))
            return
        while len(self.stdin) >= FRAME.size:
            kind, size = FRAME.unpack_from(self.stdin)
            if len(self.stdin) < FRAME.size + size:
                return
            payload = bytes(self.stdin[FRAME.size : FRAME.size + size])
            del self.stdin[: FRAME.size + size]
            self.frames.append(kind)
            if kind == b"R":
                self.requests.append(payload)
                nonce = payload.split(b" ", 2)[1].decode()
                self.script.on_request(self, nonce)

    def exit(self, code: int) -> None:
        self.code = code
        self.exited.set()

    def close_stdin(self) -> None:
        self.stdin_closed = True
        self.exit(0)

    def wait(self, timeout: float | None = None) -> int | None:
        return self.code if self.exited.wait(timeout) else None

    def kill(self) -> None:
        self.killed = True
        self.exit(-9)


class ScriptedRunner:
    def __init__(self, on_request: Callable[[ScriptedProcess, str], None]) -> None:
        self.on_request = on_request
        self.processes: list[ScriptedProcess] = []
        self.broken_writes = 0

    def run(self, argv: Sequence[str], **kwargs: Any) -> Completed:
        return Completed(tuple(argv), 0)

    def spawn(self, argv: Sequence[str], *, on_stdout: Sink | None = None, **kwargs: Any) -> ScriptedProcess:
        proc = ScriptedProcess(on_stdout, kwargs.get("on_stderr"), self)
        self.processes.append(proc)
        return proc


def answer(proc: ScriptedProcess, nonce: str, code: int = 0, out: bytes = b"") -> None:
    proc.out(frame(b"S", nonce.encode()))
    for i in range(0, len(out), 3):  # split output frames across chunks, byte by byte at the end
        proc.out(frame(b"O", out[i : i + 3]))
    final = frame(b"X", json.dumps({"nonce": nonce, "exit_code": code, "timed_out": False}).encode())
    for byte in final:
        proc.out(bytes([byte]))


def scripted_session(fake_kubectl: str, runner: ScriptedRunner, **kwargs: Any) -> Session:
    kubectl = Kubectl(ClusterAccess(kubectl=fake_kubectl), runner=runner, retry=RetryPolicy(attempts=1))
    return Session(kubectl, "pod-a", **kwargs)


def test_frames_split_anywhere_are_reassembled(fake_kubectl: str, workdir: Path) -> None:
    runner = ScriptedRunner(lambda proc, nonce: answer(proc, nonce, 6, b"hello world\n"))
    session = scripted_session(fake_kubectl, runner)
    result = session.run(request(workdir, "print('hello world')"))
    assert (result.exit_code, result.stdout) == (6, b"hello world\n")


def test_no_result_by_the_client_deadline_kills_the_channel_and_reconnects(
    fake_kubectl: str, workdir: Path
) -> None:
    runner = ScriptedRunner(lambda proc, nonce: proc.out(frame(b"S", nonce.encode())))  # then silence
    session = scripted_session(fake_kubectl, runner, deadline_margin=0.0)
    with pytest.raises(OutcomeUnknownError, match="was not re-run"):
        session.run(request(workdir, "while True: pass", timeout=0.05, kill_after=0.05))
    assert runner.processes[0].killed
    assert len(runner.processes) == 2 and session.connected  # reconnected at once: it reaps the old run
    assert len(runner.processes[0].requests) == 1 and runner.processes[1].requests == []


def test_a_request_that_could_not_be_written_is_sent_once_more_on_a_new_channel(
    fake_kubectl: str, workdir: Path
) -> None:
    runner = ScriptedRunner(lambda proc, nonce: answer(proc, nonce, 0, b"ok\n"))
    session = scripted_session(fake_kubectl, runner)
    session.connect()
    runner.broken_writes = 1
    result = session.run(request(workdir, "print('ok')"))
    assert result.stdout == b"ok\n"
    assert [len(p.requests) for p in runner.processes] == [0, 1]


def test_a_failing_output_callback_does_not_stall_the_channel(fake_kubectl: str, workdir: Path) -> None:
    runner = ScriptedRunner(lambda proc, nonce: answer(proc, nonce, 0, b"abcdef"))
    session = scripted_session(fake_kubectl, runner)

    def broken(stream: str, chunk: bytes) -> None:
        raise RuntimeError("callback bug")

    result = session.run(request(workdir, "x"), broken)
    assert (result.exit_code, result.stdout) == (0, b"abcdef")


def test_close_asks_the_agent_to_quit(fake_kubectl: str, workdir: Path) -> None:
    runner = ScriptedRunner(lambda proc, nonce: answer(proc, nonce))
    session = scripted_session(fake_kubectl, runner)
    session.connect()
    session.close()
    proc = runner.processes[0]
    assert proc.frames == [b"Q"] and proc.stdin_closed
    session.close()  # idempotent


def test_stateful_python_requests_go_to_the_kernel(fake_kubectl: str, workdir: Path) -> None:
    runner = ScriptedRunner(lambda proc, nonce: answer(proc, nonce))
    session = scripted_session(fake_kubectl, runner, stateful=True)
    session.run(request(workdir, "x = 1"))
    session.run(request(workdir, "echo", "sh"))
    runners = [r.split(b"\n", 1)[0].split(b" ")[4] for r in runner.processes[0].requests]
    assert runners == [b"kernel", b"sh"]


def test_session_id_and_agent_are_validated(fake_kubectl: str) -> None:
    kubectl = Kubectl(ClusterAccess(kubectl=fake_kubectl), runner=ScriptedRunner(answer))
    with pytest.raises(ValueError):
        Session(kubectl, "pod-a", session_id="../x")
    with pytest.raises(ValueError):
        Session(kubectl, "pod-a", agent="perl")
    with pytest.raises(ValueError):
        Session(kubectl, "Bad_Pod")


def run_until_started(session: Session, req: RunRequest) -> tuple[threading.Thread, list[Any]]:
    """Run ``req`` in a thread; return once the block has printed "started" (seen on the channel)."""
    started = threading.Event()
    results: list[Any] = []

    def on_output(stream: str, chunk: bytes) -> None:
        if b"started" in chunk:
            started.set()

    thread = threading.Thread(target=lambda: results.append(session.run(req, on_output)))
    thread.start()
    assert started.wait(30)
    return thread, results


@pytest.mark.parametrize("agent", AGENTS)
def test_cancel_kills_the_block_in_flight_and_the_session_goes_on(
    open_session: Callable[..., Session], workdir: Path, agent: str
) -> None:
    session = open_session(agent=agent)
    req = request(workdir, f"sleep 301 &\necho $! > {workdir}/bg.pid\necho started\nsleep 302\n", "sh")
    thread, results = run_until_started(session, req)
    assert session.cancel(req.nonce)
    thread.join(30)
    assert results and results[0].exit_code == 137 and not results[0].timed_out
    assert process_gone(int((workdir / "bg.pid").read_text()))
    assert session.run(request(workdir, "echo next", "sh")).stdout == b"next\n"
    assert session.connects == 1  # the channel survived the cancel
    assert not session.cancel(req.nonce)  # nothing in flight any more


def test_cancel_interrupts_a_stateful_block_and_keeps_the_state(
    open_session: Callable[..., Session], workdir: Path
) -> None:
    session = open_session(stateful=True)
    session.run(request(workdir, "x = 5"))
    req = request(workdir, "import time\nprint('started')\nwhile True:\n    time.sleep(0.01)\n")
    thread, results = run_until_started(session, req)
    assert session.cancel(req.nonce)
    thread.join(30)
    assert results and b"KeyboardInterrupt" in results[0].stderr and not results[0].state_lost
    assert session.run(request(workdir, "print(x)")).stdout == b"5\n"


@pytest.mark.parametrize("stateful", [False, True])
def test_a_cancel_that_overtakes_its_block_still_cancels_it(
    open_session: Callable[..., Session], local_runner: LocalAgentRunner, workdir: Path, stateful: bool
) -> None:
    """The C frame reaches the agent before the worker that runs the R frame registered the block
    (forced here: C is written just ahead of R). It used to be dropped, and the block ran on to its
    deadline: a cancel reported as a timeout."""
    req = request(workdir, "import time\nwhile True:\n    time.sleep(0.01)\n", timeout=10)
    spawn = local_runner.spawn

    def spawn_overtaken(argv: Sequence[str], **kwargs: Any) -> Any:
        proc = spawn(argv, **kwargs)
        write = proc.write

        def write_c_first(data: bytes) -> None:
            if data[:1] == b"R" and req.nonce.encode() in data:
                write(FRAME.pack(b"C", len(req.nonce)) + req.nonce.encode())
            write(data)

        proc.write = write_c_first
        return proc

    local_runner.spawn = spawn_overtaken  # type: ignore[method-assign]
    session = open_session(stateful=stateful)
    session.run(request(workdir, "x = 3"))
    result = session.run(req)
    assert result.exit_code == 130 and not result.timed_out and not result.state_lost
    assert b"cancelled before it started" in result.stderr
    if stateful:  # the kernel never saw the block: its state is intact
        assert session.run(request(workdir, "print(x)")).stdout == b"3\n"
    assert session.run(request(workdir, "echo next", "sh")).stdout == b"next\n"
    assert session.connects == 1


def test_a_cancel_right_after_the_first_output_interrupts_the_kernel(workdir: Path) -> None:
    """The block's first output reaches the client and its cancel comes back before the agent's
    worker thread runs again (forced here: the worker is held in Pump() until the cancel was
    handled). The kernel must already count as busy, or the cancel is lost and the block runs on
    to its deadline (a cancel reported as a timeout)."""
    source = workdir / "kx_agent_under_test.py"  # as the client sends it: agent.py, then rich.py
    source.write_bytes(AGENT_PY)
    spec = importlib.util.spec_from_file_location("kx_agent_under_test", source)
    assert spec is not None and spec.loader is not None
    agent_mod: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(agent_mod)
    req = request(workdir, "import time\nx = 4\nprint('started')\nwhile True:\n    time.sleep(0.01)\n")
    req = dataclasses.replace(req, runner="kernel")  # as a stateful session sends it
    frames: list[tuple[bytes, Any]] = []
    handled = threading.Event()
    agent: Any = None

    class Out:
        def send(self, kind: bytes, payload: bytes = b"") -> None:
            frames.append((kind, payload))
            if kind == b"O" and b"started" in payload and not handled.is_set():
                agent.cancel(req.nonce)  # what the serve thread does with the C frame
                handled.set()

        def json(self, kind: bytes, obj: Any) -> None:
            frames.append((kind, obj))

    real_pump = agent_mod.Pump

    def held_pump(*args: Any) -> Any:
        pump = real_pump(*args)
        assert handled.wait(30)  # the worker thread resumes only after the cancel
        return pump

    agent_mod.Pump = held_pump
    agent = agent_mod.Agent("unit-" + req.nonce[:8], AGENT_PY.decode())
    agent.out = Out()
    agent.running = True
    try:
        agent.run(req.encode())
        (exit_frame,) = [obj for kind, obj in frames if kind == b"X"]
        assert exit_frame["cancelled"] and not exit_frame["timed_out"] and not exit_frame["state_lost"]
        assert exit_frame["exit_code"] == 1 and agent.kernel.alive()  # interrupted, not killed
    finally:
        agent.kernel.kill()
        agent.registry.remove()
