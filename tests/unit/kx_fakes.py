"""Unit-test doubles (imported by tests/unit/conftest.py and the tests): a fake kubectl runner (never a real kubectl) and helpers shared by the unit tests.

:class:`FakeRunner` implements :class:`kubectl_executor._cluster.runner.Runner`. It records every argv and stdin it
is given and answers like a small cluster would: ``apply`` stores the pod (from stdin) and returns it
Ready, ``get``/``delete`` work on the stored pods, a ``--watch`` reports the pod's state, and an exec of
the in-pod runner is answered by a queue of :class:`ExecReply` handlers that build kubectl's stdout by
hand (start marker, program output, exit marker). ``exec_locally=True`` instead runs the exec'd command
(the real ``_pod/run.sh`` or any fixed script) with the host's ``/bin/sh``: a local process, not kubectl.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubectl_executor._cluster.labels import IMAGE_ANNOTATION, WORK_DIR_ANNOTATION
from kubectl_executor._cluster.runner import Completed, Process, Runner, Sink, StdinData
from kubectl_executor._exec.protocol import LAUNCH, LOADER, PY_END, RUN_SCRIPT, RUNNER_PREFIX

# ---------------------------------------------------------------------------------------------
# Wire format of the in-pod runner, written out here on purpose (not imported), so that a change
# of the protocol is noticed by both the run.sh tests and the executor tests.


def start_marker(nonce: str) -> bytes:
    return f"__KX_START_{nonce}__\n".encode()


def exit_marker(nonce: str, rc: int, timed_out: int = 0, kept: int = 0) -> bytes:
    return f"\n__KX_EXIT_{nonce}__ {rc} {timed_out} {kept}\n".encode()


def runner_stdout(
    nonce: str, program_stdout: bytes = b"", rc: int = 0, timed_out: int = 0, kept: int = 0
) -> bytes:
    """What run.sh prints on stdout for one run."""
    return start_marker(nonce) + program_stdout + exit_marker(nonce, rc, timed_out, kept)


@dataclass
class ParsedRequest:
    """A RunRequest as the in-pod runner reads it from stdin."""

    nonce: str
    timeout: str
    kill_after: str
    runner: str
    budget: int
    work_dir: str
    path: str
    env: dict[str, str]
    code: bytes


def parse_request(data: bytes) -> ParsedRequest:
    """A request as the executor sends it (after the Python runner) or alone."""
    data = data.partition(PY_END)[2] or data
    head, rest = data.split(b"\n", 1)
    magic, nonce, tmo, kafter, runner, budget, nenv = head.decode().split(" ")
    assert magic == "KX1"
    work_dir, rest = rest.split(b"\n", 1)
    path, rest = rest.split(b"\n", 1)
    env: dict[str, str] = {}
    for _ in range(int(nenv)):
        line, rest = rest.split(b"\n", 1)
        key, value = line.decode().split("=", 1)
        env[key] = value
    return ParsedRequest(nonce, tmo, kafter, runner, int(budget), work_dir.decode(), path.decode(), env, rest)


# ---------------------------------------------------------------------------------------------
# Pod objects as kubectl prints them with -o json.


def pod_json(
    name: str,
    *,
    namespace: str = "default",
    image: str = "python:3-slim",
    work_dir: str = "/workspace",
    phase: str = "Running",
    ready: bool = True,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    waiting: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    container_state: dict[str, Any] = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    if waiting is not None:
        container_state = {"waiting": dict(waiting)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
            "labels": dict(labels or {}),
            "annotations": dict(
                annotations
                if annotations is not None
                else {IMAGE_ANNOTATION: image, WORK_DIR_ANNOTATION: work_dir}
            ),
        },
        "spec": {"containers": [{"name": "executor", "image": image}]},
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True" if ready else "False"},
            ],
            "containerStatuses": [
                {"name": "executor", "ready": ready, "image": image, "state": container_state}
            ],
        },
    }


def _selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in selector.split(","):
        key, value = term.split("=", 1)
        if labels.get(key) != value:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# The fake runner.


@dataclass
class RunCall:
    """One Runner.run call."""

    argv: list[str]
    stdin: bytes | None
    stdin_replayable: bool
    timeout: float | None

    @property
    def args(self) -> list[str]:
        return kubectl_args(self.argv)


def kubectl_args(argv: Sequence[str]) -> list[str]:
    """The kubectl argv without the binary and the leading global flags."""
    rest = list(argv[1:])
    while rest and rest[0].startswith("--"):
        rest.pop(0)
    return rest


@dataclass
class ExecReply:
    """How a fake exec behaves: output chunks (kubectl's stdout, markers included), stderr, exit code.

    ``hang=True``: the process never exits (``wait`` reports still running at once, as if the client
    deadline had passed)."""

    stdout: bytes | list[bytes] = b""
    stderr: bytes = b""
    returncode: int = 0
    hang: bool = False
    ran: bool = True  # whether the user's code counts as having run in the pod


ExecHandler = Callable[[ParsedRequest], ExecReply]


def reply_with(
    program_stdout: bytes = b"", rc: int = 0, *, stderr: bytes = b"", timed_out: int = 0
) -> ExecHandler:
    """An exec handler that behaves like run.sh: the markers around the program's output."""

    def handler(req: ParsedRequest) -> ExecReply:
        return ExecReply(runner_stdout(req.nonce, program_stdout, rc, timed_out), stderr=stderr)

    return handler


class FakeProcess:
    """A Process from Runner.spawn: records stdin; the answer is produced when stdin is closed."""

    def __init__(
        self,
        argv: Sequence[str],
        on_stdout: Sink | None,
        on_stderr: Sink | None,
        respond: Callable[[FakeProcess], ExecReply | None],
    ) -> None:
        self.argv = list(argv)
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self._respond = respond
        self.stdin = bytearray()
        self.stdin_closed = threading.Event()
        self.done = threading.Event()
        self.returncode: int | None = None
        self.hang = False
        self.killed = False
        self.wait_timeouts: list[float | None] = []

    @property
    def args(self) -> list[str]:
        return kubectl_args(self.argv)

    @property
    def pid(self) -> int:
        return 424242

    def emit(self, reply: ExecReply) -> None:
        chunks = [reply.stdout] if isinstance(reply.stdout, bytes) else reply.stdout
        for chunk in chunks:
            if self.on_stdout and chunk:
                self.on_stdout(chunk)
        if self.on_stderr and reply.stderr:
            self.on_stderr(reply.stderr)
        self.hang = reply.hang
        if not reply.hang:
            self.returncode = reply.returncode
            self.done.set()

    def write(self, data: bytes) -> None:
        if self.stdin_closed.is_set():
            raise BrokenPipeError("stdin closed")
        self.stdin += data

    def close_stdin(self) -> None:
        if self.stdin_closed.is_set():
            return
        self.stdin_closed.set()
        reply = self._respond(self)
        if reply is not None:
            self.emit(reply)

    def wait(self, timeout: float | None = None) -> int | None:
        self.wait_timeouts.append(timeout)
        if self.hang:
            return None
        if self.done.wait(timeout):
            return self.returncode
        return None

    def kill(self) -> None:
        self.killed = True
        if self.returncode is None:
            self.returncode = -9
        self.done.set()


class FakeRunner:
    """A fake kubectl behind the Runner interface; see the module docstring."""

    def __init__(self, *, local_home: Path | None = None) -> None:
        self.runs: list[RunCall] = []
        self.spawns: list[FakeProcess] = []
        self.pods: dict[str, dict[str, Any]] = {}
        # Hook for a test: return a Completed to answer a run() call yourself, None for the default.
        self.on_run: Callable[[RunCall], Completed | None] | None = None
        # Exec handlers, used in order; when empty, `default_exec` answers.
        self.exec_replies: deque[ExecHandler] = deque()
        self.default_exec: ExecHandler = reply_with(b"", 0)
        # What the watch reports for a pod: a pod_json() dict, or None for the stored pod.
        self.watch_pod: dict[str, Any] | None = None
        # Answers a spawned exec of anything but the in-pod runner.
        self.other_exec: Callable[[FakeProcess], ExecReply] = lambda proc: ExecReply()
        self.exec_locally = False
        self.local_home = local_home
        self.ran_blocks: list[ParsedRequest] = []  # requests whose code "ran" in the fake pod

    # -- recorded calls ----------------------------------------------------------------------

    def all_argvs(self) -> list[list[str]]:
        return [c.argv for c in self.runs] + [p.argv for p in self.spawns]

    def runs_of(self, verb: str) -> list[RunCall]:
        return [c for c in self.runs if c.args[:1] == [verb]]

    def execs(self) -> list[FakeProcess]:
        """Exec processes of the in-pod runner."""
        return [p for p in self.spawns if p.args[:1] == ["exec"]]

    # -- Runner ------------------------------------------------------------------------------

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
        data = _read_stdin(stdin)
        call = RunCall(list(argv), data, stdin is None or isinstance(stdin, bytes), timeout)
        self.runs.append(call)
        done = self.on_run(call) if self.on_run else None
        if done is None:
            done = self._answer(call)
        if on_stdout and done.stdout:
            on_stdout(done.stdout)
            done = Completed(done.argv, done.returncode, b"", done.stderr, done.timed_out)
        if on_stderr and done.stderr:
            on_stderr(done.stderr)
            done = Completed(done.argv, done.returncode, done.stdout, b"", done.timed_out)
        return done

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> FakeProcess:
        proc = FakeProcess(argv, on_stdout, on_stderr, self._respond_exec)
        self.spawns.append(proc)
        args = proc.args
        if args[:2] == ["get", "pod"] and "--watch" in args:
            pod = self.watch_pod or self.pods.get(args[2])
            if pod is None:
                msg = f'Error from server (NotFound): pods "{args[2]}" not found\n'
                proc.emit(ExecReply(stderr=msg.encode(), returncode=1))
            else:
                proc.emit(ExecReply(json.dumps(pod).encode(), hang=True))
        return proc

    # -- the small cluster ---------------------------------------------------------------------

    def _answer(self, call: RunCall) -> Completed:
        args = call.args
        argv = tuple(call.argv)
        if args[:3] == ["apply", "-f", "-"]:
            assert call.stdin is not None
            manifest = json.loads(call.stdin)
            meta = manifest["metadata"]
            pod = pod_json(
                meta["name"],
                image=manifest["spec"]["containers"][0]["image"],
                labels=meta.get("labels"),
                annotations=meta.get("annotations"),
            )
            pod["spec"] = manifest["spec"]
            self.pods[meta["name"]] = pod
            return Completed(argv, 0, json.dumps(pod).encode())
        if args[:2] == ["get", "pod"]:
            found = self.pods.get(args[2])
            if found is None:
                return Completed(
                    argv, 1, b"", f'Error from server (NotFound): pods "{args[2]}" not found\n'.encode()
                )
            return Completed(argv, 0, json.dumps(found).encode())
        if args[:3] == ["get", "pods", "-l"]:
            items = [p for p in self.pods.values() if _selector_matches(args[3], p["metadata"]["labels"])]
            return Completed(
                argv, 0, json.dumps({"apiVersion": "v1", "kind": "List", "items": items}).encode()
            )
        if args[:2] == ["delete", "pod"]:
            self.pods.pop(args[2], None)
            return Completed(argv, 0, b"")
        if args[:1] == ["exec"] and self.exec_locally:
            return self._run_locally(argv, call.stdin or b"")
        if args[:1] == ["exec"]:
            return Completed(argv, 0, b"")
        raise AssertionError(f"the fake kubectl has no answer for {args}")

    def _command_after_dashdash(self, argv: Sequence[str]) -> list[str]:
        return list(argv[list(argv).index("--") + 1 :])

    def _local_env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        if self.local_home is not None:
            env["HOME"] = str(self.local_home)
        return env

    def _run_locally(self, argv: Sequence[str], stdin: bytes) -> Completed:
        done = subprocess.run(
            self._command_after_dashdash(argv),
            input=stdin,
            capture_output=True,
            env=self._local_env(),
            timeout=60,
            check=False,
        )
        return Completed(tuple(argv), done.returncode, done.stdout, done.stderr)

    def _respond_exec(self, proc: FakeProcess) -> ExecReply | None:
        if proc.args[:1] != ["exec"]:
            return None
        data = bytes(proc.stdin)
        if RUN_SCRIPT not in proc.argv and not self.exec_locally:
            return self.other_exec(proc)
        if self.exec_locally:
            done = self._run_locally(proc.argv, data)
            return ExecReply(done.stdout, stderr=done.stderr, returncode=done.returncode)
        request = parse_request(data)
        handler = self.exec_replies.popleft() if self.exec_replies else self.default_exec
        reply = handler(request)
        if reply.ran:
            self.ran_blocks.append(request)
        return reply


def _read_stdin(stdin: StdinData) -> bytes | None:
    if stdin is None:
        return None
    if isinstance(stdin, bytes):
        return stdin
    if isinstance(stdin, io.IOBase) or hasattr(stdin, "read"):
        return stdin.read()  # type: ignore[no-any-return]
    assert isinstance(stdin, Iterable)
    return b"".join(stdin)


# ---------------------------------------------------------------------------------------------
# Local processes (the real in-pod script; never kubectl).


def run_sh_locally(
    request_bytes: bytes,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    runner: str = "run.sh",
) -> subprocess.CompletedProcess[bytes]:
    """Run the real in-pod runner with the host's /bin/sh, as `kubectl exec` would: the executor's
    launcher and stdin, with python3 on PATH ("run.py") or hidden from it ("run.sh": an image
    without python3, where `python` still runs Python blocks)."""
    path = os.environ.get("PATH", "/usr/bin:/bin")
    if runner == "run.sh":
        path = path_without_python3()
    base = {"PATH": path, "LANG": "C.UTF-8", "HOME": "/nonexistent"}
    head = request_bytes.split(b"\n", 1)[0].split(b" ")
    nonce = head[1].decode() if len(head) > 1 and head[1].isalnum() else "0"
    return subprocess.run(
        ["/bin/sh", "-c", LAUNCH, "kx", nonce, LOADER, RUN_SCRIPT],
        input=RUNNER_PREFIX + request_bytes,
        capture_output=True,
        env={**base, **(env or {})},
        timeout=timeout,
        check=False,
    )


_NO_PYTHON3: list[tempfile.TemporaryDirectory[str]] = []


def path_without_python3() -> str:
    """A PATH of one directory linking every command on ours except python3 (and `python` to it)."""
    if not _NO_PYTHON3:
        tmp = tempfile.TemporaryDirectory(prefix="kx-no-python3-")
        python = subprocess.run(
            ["python3", "-c", "import sys; print(sys.executable)"], capture_output=True, text=True, check=True
        ).stdout.strip()
        os.symlink(python, os.path.join(tmp.name, "python"))
        for directory in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                target = os.path.join(tmp.name, name)
                if not name.startswith("python") and not os.path.lexists(target):
                    os.symlink(os.path.join(directory, name), target)
        _NO_PYTHON3.append(tmp)
    return _NO_PYTHON3[0].name


@dataclass
class Collected:
    parts: list[bytes] = field(default_factory=list)

    def __call__(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    @property
    def value(self) -> bytes:
        return b"".join(self.parts)


def as_runner(fake: FakeRunner) -> Runner:
    """The fake, typed as the interface it stands for: ``mypy --strict tests/unit/kx_fakes.py``
    (in .ci/test) fails when FakeRunner or FakeProcess stop conforming to Runner and Process."""
    return fake


def as_process(fake: FakeProcess) -> Process:
    return fake
