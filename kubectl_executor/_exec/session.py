"""Persistent sessions: ONE ``kubectl exec -i`` to an in-pod agent runs many blocks.

A stateless block pays for a kubectl start-up (~75-100 ms); a session pays it once per
connection. The agent (``_pod/agent.py``, stdlib Python; ``_pod/agent.sh`` when the image has no
Python) runs each block exactly as the stateless runner does (file in work_dir, own process
group, in-pod deadline, stdin /dev/null, budgeted output with the full log kept in the pod).

Wire format, both directions: 1 type byte, 4-byte big-endian payload length, payload::

    client -> agent   R  run request: RunRequest.encode() (the stateless KX1 header, then the code)
                      C  cancel (nonce): kill the block in flight      Q  quit
    agent -> client   H  hello (JSON)    S  started (nonce)    O  stdout chunk    E  stderr chunk
                      D  rich results (JSON report of _pod/rich.py), before X
                      X  exit (JSON: exit_code, timed_out, truncated, log_kept, state_lost)

Before the frames, the bootstrap (``sh -c BOOT``, fixed text) answers ``KXBOOT python`` or
``KXBOOT sh``, and the client sends that agent's source on stdin (``KXA <session> <length>``, the
source, and for sh an end line). Nothing user-given is ever on argv.

Outcomes are never guessed: the X frame decides. A channel that breaks, or a block with no X
frame by the client-side deadline, raises :class:`~kubectl_executor.errors.OutcomeUnknownError`;
the block is not re-run, and the next block reconnects (the new agent kills what the old one of
the same session left running).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from .._cluster.kubectl import Kubectl, classify_failure, redact
from .._cluster.manifest import CONTAINER, validate_dns_label
from .._cluster.retry import call_with_retry
from .._cluster.runner import Process
from ..defaults import MAX_OUTPUT_BYTES
from ..errors import (
    InvalidInputError,
    KubectlError,
    KubectlExecutorError,
    OutcomeUnknownError,
    TransientError,
)
from .protocol import (
    LOG_DIR,
    RICH_PY,
    ExecResult,
    OutputBudget,
    OutputCallback,
    RunRequest,
    kill_args,
    new_nonce,
    pod_file,
)

logger = logging.getLogger(__name__)

FRAME = struct.Struct(">cI")
PROTOCOL = 1
AGENT_PY = pod_file("agent.py") + b"\n" + RICH_PY  # the agent's rich results (and its kernel's)
AGENT_SH = pod_file("agent.sh")
SH_END = b"\n__KX_SH_END__\n"

STATE_LOST_NOTE = (
    "\n[kubectl-executor] The Python interpreter was restarted: variables, imports and "
    "definitions from earlier blocks are lost.\n"
)

# $1 = auto|sh (sh: skip Python, for tests), $2 = LOADER. Says which agent it can run, then
# becomes that agent; the agent's source follows on stdin.
BOOT = r"""
if [ "$1" != sh ]; then
  if command -v python3 >/dev/null 2>&1; then echo "KXBOOT python"; exec python3 -c "$2"; fi
  if command -v python >/dev/null 2>&1 &&
    python -c 'import sys; sys.exit(sys.version_info < (3, 6))' >/dev/null 2>&1; then
    echo "KXBOOT python"; exec python -c "$2"
  fi
fi
echo "KXBOOT sh"
IFS=' ' read -r magic sid size || exit 97
[ "$magic" = KXA ] || exit 97
case "$sid" in *[!0-9a-f]* | '') exit 97 ;; esac
src=
while IFS= read -r line; do
  [ "$line" = __KX_SH_END__ ] && break
  src="$src$line
"
done
eval "$src"
"""

LOADER = r"""
import os, sys
def take(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            os._exit(97)
        buf += chunk
    return bytes(buf)
head = bytearray()
while not head.endswith(b"\n"):
    head += take(1)
magic, sid, size = head.decode().split()
source = take(int(size))
g = {"__name__": "kx_agent"}
exec(compile(source, "kx_agent.py", "exec"), g)
g["main"](sid, source.decode())
"""

# Kills what a session's agents left running, by the session's pid file (start times checked).
REAP = r"""
f="LOG_DIR/session-$1.pids"
[ -f "$f" ] || exit 0
while read -r kind pid st; do
  now=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f20)
  [ -n "$st" ] && [ "$now" = "$st" ] || continue
  if [ "$kind" = group ]; then kill -s KILL -- "-$pid" 2>/dev/null; else kill -s KILL "$pid" 2>/dev/null; fi
done <"$f"
rm -f "$f"
""".replace("LOG_DIR", LOG_DIR)

_HEX = re.compile(r"^[0-9a-f]{1,64}$")


class _Pending:
    """The block in flight: its budgets, its callback, and how it ended."""

    def __init__(self, nonce: str, budget: int, callback: OutputCallback | None, work_dir: str) -> None:
        self.nonce = nonce
        self.work_dir = work_dir
        self.out = OutputBudget(budget)
        self.err = OutputBudget(budget)
        self.callback = callback
        self.started = False
        self.exit: dict[str, Any] | None = None
        self.rich: bytes | None = None
        self.done = threading.Event()


class _Connection:
    """One kubectl exec process and the agent at its other end."""

    def __init__(self, kubectl: Kubectl, args: list[str]) -> None:
        self.argv = redact(kubectl.argv(args))
        self._cond = threading.Condition()
        self._line = bytearray()
        self._buf = bytearray()
        self._stderr = bytearray()
        self.boot: str | None = None
        self.hello: dict[str, Any] | None = None
        self.closed = False
        self.returncode: int | None = None
        self.current: _Pending | None = None
        self.proc: Process = kubectl.spawn(args, on_stdout=self._on_stdout, on_stderr=self._on_stderr)
        threading.Thread(target=self._wait, name="kx-session-wait", daemon=True).start()

    # -- process side (pump threads) --------------------------------------------------------

    def _wait(self) -> None:
        code = self.proc.wait()  # returns after the output pumps have drained
        with self._cond:
            self.returncode = code
            self.closed = True
            self._cond.notify_all()
        pending = self.current
        if pending is not None:
            pending.done.set()

    def _on_stderr(self, chunk: bytes) -> None:
        self._stderr += chunk
        if len(self._stderr) > 65536:
            del self._stderr[:-65536]

    def _on_stdout(self, chunk: bytes) -> None:
        if self.boot is None:
            self._line += chunk
            end = self._line.find(b"\n")
            if end < 0:
                if len(self._line) > 4096:
                    self._line.clear()
                return
            first, rest = bytes(self._line[:end]), bytes(self._line[end + 1 :])
            self._line.clear()
            with self._cond:
                self.boot = first.decode(errors="replace").strip()
                self._cond.notify_all()
            chunk = rest
        self._buf += chunk
        pos = 0
        while len(self._buf) - pos >= FRAME.size:
            kind, size = FRAME.unpack_from(self._buf, pos)
            if len(self._buf) - pos - FRAME.size < size:
                break
            start = pos + FRAME.size
            try:
                self._frame(kind, bytes(self._buf[start : start + size]))
            except Exception:  # a bad frame or a failing callback must not stall the channel
                logger.exception("session frame %r could not be handled", kind)
            pos = start + size
        if pos:
            del self._buf[:pos]

    def _frame(self, kind: bytes, payload: bytes) -> None:
        pending = self.current
        if kind == b"O" or kind == b"E":
            if pending is None:
                return
            (pending.out if kind == b"O" else pending.err)(payload)
            if pending.callback is not None and payload:
                pending.callback("stdout" if kind == b"O" else "stderr", payload)
        elif kind == b"S":
            if pending is not None:
                pending.started = True
        elif kind == b"D":
            if pending is not None:
                pending.rich = payload
        elif kind == b"X":
            exit_info = json.loads(payload)
            nonce = exit_info.get("nonce") or ""
            if pending is not None and nonce in ("", pending.nonce):
                pending.exit = exit_info
                pending.done.set()
        elif kind == b"H":
            with self._cond:
                self.hello = json.loads(payload)
                self._cond.notify_all()
        else:
            logger.warning("session agent sent an unknown frame type %r", kind)

    # -- caller side ------------------------------------------------------------------------

    @property
    def stderr(self) -> str:
        return bytes(self._stderr).decode(errors="replace")

    def handshake(self, session_id: str, timeout: float) -> None:
        """Wait for the bootstrap, send the agent it asked for, wait for the agent's hello."""
        deadline = time.monotonic() + timeout
        self._await(lambda: self.boot is not None, deadline, "the session bootstrap")
        if self.boot == "KXBOOT python":
            source = AGENT_PY
            self.send_raw(f"KXA {session_id} {len(source)}\n".encode() + source)
        elif self.boot == "KXBOOT sh":
            source = AGENT_SH
            self.send_raw(f"KXA {session_id} {len(source)}\n".encode() + source.rstrip(b"\n") + SH_END)
        else:
            self.kill()
            raise KubectlError(
                self.argv, -1, self.stderr, f"unexpected session bootstrap reply {self.boot!r}"
            )
        self._await(lambda: self.hello is not None, deadline, "the session agent")
        assert self.hello is not None
        if self.hello.get("protocol") != PROTOCOL:
            self.kill()
            raise KubectlError(
                self.argv, -1, "", f"session agent speaks protocol {self.hello.get('protocol')}"
            )

    def _await(self, ready: Callable[[], bool], deadline: float, what: str) -> None:
        with self._cond:
            self._cond.wait_for(lambda: ready() or self.closed, max(deadline - time.monotonic(), 0))
            if ready():
                return
            closed, code = self.closed, self.returncode
        if closed:
            raise classify_failure(self.argv, code if code is not None else -1, self.stderr, exec_call=True)
        self.kill()
        raise TransientError(self.argv, -1, self.stderr, f"{what} did not answer in time")

    def send_raw(self, data: bytes) -> None:
        self.proc.write(data)

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.proc.write(FRAME.pack(kind, len(payload)) + payload)

    @property
    def alive(self) -> bool:
        return not self.closed

    def close(self, timeout: float = 5.0) -> None:
        """Ask the agent to quit (it kills what it started), then make sure kubectl is gone."""
        if not self.closed:
            try:
                self.send(b"Q")
                self.proc.close_stdin()
            except OSError:
                pass
            with self._cond:
                self._cond.wait_for(lambda: self.closed, timeout)
        self.kill()

    def kill(self) -> None:
        self.proc.kill()


class Session:
    """A persistent channel to one pod. Blocks run one at a time; each costs no kubectl start.

    ``stateful=True`` runs Python blocks in one persistent interpreter (variables, imports and
    definitions survive between blocks). Results are :class:`~kubectl_executor.protocol.ExecResult` (``state_lost`` set when the interpreter restarted).
    """

    def __init__(
        self,
        kubectl: Kubectl,
        pod: str,
        *,
        container: str = CONTAINER,
        stateful: bool = False,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        session_id: str | None = None,
        connect_timeout: float = 60.0,
        deadline_margin: float = 30.0,
        agent: str = "auto",
    ) -> None:
        validate_dns_label(pod, "pod name")
        if agent not in ("auto", "sh"):
            raise InvalidInputError("agent must be 'auto' or 'sh'")
        self.session_id = session_id or new_nonce()[:16]
        if not _HEX.match(self.session_id):
            raise InvalidInputError("session_id must be lower-case hex")
        self.pod = pod
        self.container = container
        self.stateful = stateful
        self.max_output_bytes = max_output_bytes
        self.connect_timeout = connect_timeout
        self.deadline_margin = deadline_margin
        self.connects = 0
        self._kubectl = kubectl
        self._agent = agent
        self._conn: _Connection | None = None
        self._lock = threading.Lock()
        self._kernel_used = False  # a kernel ran on the current connection
        self._kernel_lost = False  # ... and the connection was lost since: report on the next block
        self._dirty = False  # a block may still run in the pod with no agent watching it

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.alive

    @property
    def agent_kind(self) -> str | None:
        """The agent in the pod once connected: ``python`` or ``sh``."""
        return str(self._conn.hello.get("agent")) if self._conn and self._conn.hello else None

    def _args(self) -> list[str]:
        return [
            "exec",
            "-i",
            self.pod,
            "-c",
            self.container,
            "--",
            "sh",
            "-c",
            BOOT,
            "kx",
            self._agent,
            LOADER,
        ]

    def connect(self) -> None:
        """Open the channel now (otherwise the first block does). Connecting runs no code, so a
        failure to connect is retried like any transient kubectl failure."""
        with self._lock:
            self._ensure_connected()

    def _ensure_connected(self) -> _Connection:
        if self._conn is not None and self._conn.alive:
            return self._conn
        self._drop()

        def attempt() -> _Connection:
            conn = _Connection(self._kubectl, self._args())
            try:
                conn.handshake(self.session_id, self.connect_timeout)
            except BaseException:
                conn.kill()
                raise
            return conn

        self._conn = call_with_retry(
            self._kubectl.retry, attempt, retry_on=(TransientError,), what="session connect"
        )
        self.connects += 1
        self._dirty = False  # the new agent killed whatever the old one left behind
        logger.debug("session %s connected to pod %s (%s agent)", self.session_id, self.pod, self.agent_kind)
        return self._conn

    def _drop(self) -> None:
        """Forget a dead or stuck connection; a kernel that ran on it is gone."""
        if self._conn is not None:
            self._conn.kill()
            self._conn = None
        if self._kernel_used:
            self._kernel_lost = True
            self._kernel_used = False

    def run(self, request: RunRequest, on_output: OutputCallback | None = None) -> ExecResult:
        """Run one block. Its exit is data; a lost channel raises OutcomeUnknownError."""
        with self._lock:
            if self.stateful and request.runner == "python":
                request = dataclasses.replace(request, runner="kernel")
            payload = request.encode()
            pending = _Pending(request.nonce, self.max_output_bytes, on_output, request.work_dir)
            conn = self._ensure_connected()
            conn.current = pending
            try:
                conn.send(b"R", payload)
            except (OSError, ValueError):
                # The frame was not written whole, so the agent cannot have run it: reconnect once.
                self._drop()
                conn = self._ensure_connected()
                conn.current = pending
                try:
                    conn.send(b"R", payload)
                except (OSError, ValueError) as exc:
                    self._drop()
                    raise OutcomeUnknownError(
                        f"could not send the block to the session agent in pod {self.pod}: {exc}"
                    ) from exc
            deadline = request.timeout + request.kill_after + self.deadline_margin + len(request.code) / 1e6
            end = time.monotonic() + deadline
            # The done event wakes us at once; the short cap only bounds how late a close is seen.
            while not pending.done.wait(min(max(end - time.monotonic(), 0.0), 1.0)):
                if conn.closed or time.monotonic() >= end:
                    break
            conn.current = None
            if pending.exit is not None:
                if request.runner == "kernel":
                    self._kernel_used = True
                return self._result(request, pending)
            note = f"full output may be in the pod at {LOG_DIR}/{request.nonce}.*"
            if conn.closed:  # the channel closed under the block
                self._drop()
                self._dirty = True
                raise OutcomeUnknownError(
                    f"the session channel to pod {self.pod} broke during the block (kubectl exit code "
                    f"{conn.returncode}; {conn.stderr.strip()[-300:] or 'no error text'}); the code may "
                    "or may not have run and was not re-run",
                    stdout=pending.out.value(note),
                    stderr=pending.err.value(note),
                )
            # No answer long after the in-pod deadline: the agent or the channel is stuck.
            self._drop()
            self._dirty = True
            self._reconnect_quietly()
            raise OutcomeUnknownError(
                f"no result from the session agent in pod {self.pod} within {deadline:g}s; the block "
                "was stopped and was not re-run",
                stdout=pending.out.value(note),
                stderr=pending.err.value(note),
            )

    def cancel(self, nonce: str) -> bool:
        """Kill the block ``nonce`` if it is in flight; thread-safe (the caller of :meth:`run` holds
        the session). Its result still arrives as usual (a killed program: 137). The Python
        agent is told on the channel (C frame); the sh agent reads no frames while a block runs,
        so its block is killed by its pid file with one ``kubectl exec``."""
        conn = self._conn
        pending = conn.current if conn is not None else None
        if conn is None or pending is None or pending.nonce != nonce:
            return False
        if conn.hello is not None and conn.hello.get("agent") == "python":
            try:
                conn.send(b"C", nonce.encode())
                return True
            except (OSError, ValueError):
                return False
        self._kubectl.run(
            kill_args(self.pod, self.container, nonce, pending.work_dir),
            timeout=30,
            check=False,
            idempotent=False,
        )
        return True

    def _reconnect_quietly(self) -> None:
        """A fresh agent of this session kills what a stuck one left running."""
        try:
            self._ensure_connected()
        except KubectlExecutorError as exc:
            logger.warning("session to pod %s could not reconnect: %s", self.pod, exc)

    def _result(self, request: RunRequest, pending: _Pending) -> ExecResult:
        x = pending.exit or {}
        base = f"{x.get('log_dir') or LOG_DIR}/{request.nonce}"
        note = f"full output in the pod at {base}.*"
        logs = [f"{base}.out", f"{base}.err"] if x.get("log_kept") else []
        state_lost = bool(x.get("state_lost"))
        if request.runner == "kernel" and self._kernel_lost:
            state_lost = True
            self._kernel_lost = False
        stderr = pending.err.value(note)
        if state_lost:
            stderr += STATE_LOST_NOTE.encode()
        return ExecResult(
            int(x.get("exit_code", 1)),
            pending.out.value(note),
            stderr,
            bool(x.get("timed_out")),
            pending.out.truncated or pending.err.truncated or bool(x.get("truncated")),
            logs,
            state_lost=state_lost,
            rich=pending.rich,
        )

    def close(self) -> None:
        """Quit the agent (it kills what it started); idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()
            if self._dirty:
                self._dirty = False
                try:
                    self._kubectl.run(
                        [
                            "exec",
                            self.pod,
                            "-c",
                            self.container,
                            "--",
                            "sh",
                            "-c",
                            REAP,
                            "kx",
                            self.session_id,
                        ],
                        timeout=30,
                        check=False,
                        idempotent=False,
                    )
                except KubectlExecutorError as exc:
                    logger.warning(
                        "could not clean up session %s in pod %s: %s", self.session_id, self.pod, exc
                    )

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
