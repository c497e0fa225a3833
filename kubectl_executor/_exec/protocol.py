"""The stateless exec protocol with the in-pod runner (``_pod/run.py``, or ``_pod/run.sh`` when the
image has no python3): pure encode/parse.

kubectl's own exit code cannot tell a remote ``exit 1`` from its own failure, and it has exited
0 after dropped streams. So each run carries a random nonce, the runner prints
``__KX_START_<nonce>__`` before the program starts and ``__KX_EXIT_<nonce>__ rc timed_out kept``
after it ends, and only that marker decides the outcome. No marker: outcome unknown.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from .._cluster.manifest import validate_env_name, validate_env_value
from .._cluster.runner import Sink
from ..defaults import MAX_OUTPUT_BYTES
from ..errors import InvalidInputError

LOG_DIR = "/tmp/kx-logs"
"""Where the in-pod runner keeps full logs, pid files and its compiled cache (the _pod scripts
say the same path: they are shipped as they are, so they cannot import it)."""

OutputCallback = Callable[[str, bytes], None]
"""Receives ("stdout" | "stderr", chunk) as the code produces output."""

TIMEOUT_NOTE = "Timeout: the code ran longer than {timeout:g}s and was stopped."


def pod_file(name: str) -> bytes:
    """A file of ``_pod/`` (what runs in the pod), read beside this module: importing
    importlib.resources would cost more than reading all of them."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_pod", name), "rb") as fh:
        return fh.read()


def _sent_form(script: str) -> str:
    """A script as it travels in the exec URL: its first line (which names it, for `ps`) and no
    other comment lines. Some proxies refuse URLs over 8 KiB."""
    first, _, rest = script.partition("\n")
    return (
        first + "\n" + "".join(line + "\n" for line in rest.splitlines() if not line.lstrip().startswith("#"))
    )


RUN_SCRIPT = _sent_form(pod_file("run.sh").decode())
RICH_PY = pod_file("rich.py")
"""The in-pod rich-results code, shared by the stateless runner (put in front of run.py) and the
session agent (put after agent.py)."""
RUN_PY = RICH_PY + b"\n" + pod_file("run.py")
PY_END = b"\n__KX_PY_END__\n"
RUNNER_PREFIX = RUN_PY + PY_END  # what the exec's stdin starts with, before the request
# Arguments: $1 nonce, $2 LOADER, $3 run.sh. stdin: run.py, PY_END, then the request. run.py
# starts no helper processes, so it runs whenever the image has python3; it travels on stdin
# because a URL (where kubectl puts the command) of over 8 KiB is refused by some proxies. KX_RUN
# marks run.py's own environment, so that what a Python block forks (it runs in a fork of run.py)
# carries the mark too; run.py spares itself when it kills by it. Without python3, skip run.py.
LAUNCH = (
    'if command -v python3 >/dev/null 2>&1; then export KX_RUN="$1"; exec python3 -c "$2"; fi\n'
    'while IFS= read -r l; do [ "$l" = __KX_PY_END__ ] && break; done\n'
    'exec sh -c "$3" kx'
)
# Compiling run.py takes longer than all the rest it does for print(1), so the first run in a pod
# keeps the code object (marshal, per interpreter version) and later runs load it. The key is
# run.py's hash: a new version of this library never loads an old runner.
RUN_PY_CACHE = f"{LOG_DIR}/.run-{hashlib.sha256(RUN_PY).hexdigest()[:20]}."  # + cache tag
LOADER = """# kubectl-executor in-pod runner: run.py comes on stdin, compiled once per pod
import marshal, os, sys
chunks = []
while True:
    chunk = os.read(0, 1 << 20)
    if not chunk:
        break
    chunks.append(chunk)
source, _, STDIN = b"".join(chunks).partition(PY_END)
del chunks, chunk
cached = "CACHE" + sys.implementation.cache_tag
try:
    with open(cached, "rb") as fh:
        code = marshal.load(fh)
    if type(code).__name__ != "code":
        raise ValueError(cached)
except Exception:
    code = compile(source, "kx_run.py", "exec")
    try:
        with open(cached + ".%d" % os.getpid(), "wb") as fh:
            marshal.dump(code, fh)
        os.rename(cached + ".%d" % os.getpid(), cached)
    except OSError:
        pass
del source, cached
exec(code)
""".replace("PY_END", repr(PY_END)).replace("CACHE", RUN_PY_CACHE)


@dataclass
class ExecResult:
    """What one run in the pod produced (internal; blocks map it to the public result). Every
    way of running (stateless exec, session, stateful kernel) returns one."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    truncated: bool
    log_files: list[str]
    frame: bytes | None = None  # a tool call's structured result frame, if the runner wrote one
    state_lost: bool = False  # a stateful session had to restart its interpreter
    rich: bytes | None = None  # the rich-results report (outputs, changed files), if any


RICH_ENV = "KX_RICH"  # _pod/rich.py reads the budgets from the request's environment
SCAN_MAX_FILES = 1000
"""Changed files listed per block, at most (beyond: ``files_truncated``)."""
SCAN_MAX_HASH_BYTES = 64 * 1024 * 1024
"""Bytes of changed files hashed per block, at most (beyond: the rest is not listed, truncated)."""


@dataclass(frozen=True)
class RichLimits:
    """Budgets of a block's rich results, enforced in the pod: an output over ``per_output``, or
    past ``per_result`` in total (both in bytes as sent, base64 for binary data), is kept in the
    pod and named. ``list_files`` False: no scan of work_dir."""

    per_output: int = 8 * 1024 * 1024
    per_result: int = 32 * 1024 * 1024
    list_files: bool = True
    max_files: int = SCAN_MAX_FILES
    max_hash_bytes: int = SCAN_MAX_HASH_BYTES

    def env_value(self) -> str:
        files = self.max_files if self.list_files else -1
        return f"{self.per_output} {self.per_result} {files} {self.max_hash_bytes}"

    def frame_limit(self) -> int:
        """The largest rich frame the client buffers: the outputs, the kept names, the files."""
        return self.per_result + 2 * self.per_output + 512 * max(self.max_files, 0) + (1 << 20)


def new_nonce() -> str:
    return secrets.token_hex(12)


@dataclass(frozen=True)
class RunRequest:
    """One block for the in-pod runner. ``runner`` None = save only."""

    code: bytes
    work_dir: str
    path: str
    runner: str | None
    timeout: float
    kill_after: float = 2.0
    budget: int = MAX_OUTPUT_BYTES
    env: dict[str, str] = field(default_factory=dict)
    nonce: str = field(default_factory=new_nonce)

    def encode(self) -> bytes:
        """Header lines then the code: everything user-given travels on stdin, never argv."""
        for key, value in self.env.items():
            validate_env_name(key)
            validate_env_value(key, value)
        for what, value in (("work_dir", self.work_dir), ("path", self.path)):
            if "\n" in value or "\x00" in value:
                raise InvalidInputError(f"{what} contains a line break or NUL")
        header = (
            f"KX1 {self.nonce} {_seconds(self.timeout)} {_seconds(self.kill_after)} "
            f"{self.runner or 'none'} {self.budget} {len(self.env)}\n"
            f"{self.work_dir}\n{self.path}\n"
        )
        env_lines = "".join(f"{k}={v}\n" for k, v in self.env.items())
        return (header + env_lines).encode() + self.code


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def exec_args(pod: str, container: str, nonce: str) -> list[str]:
    """``kubectl exec`` arguments: fixed scripts and our own nonce, nothing user-given."""
    _check_nonce(nonce)
    return ["exec", "-i", pod, "-c", container, "--", "sh", "-c", LAUNCH, "kx", nonce, LOADER, RUN_SCRIPT]


def exec_input(request: RunRequest) -> bytes:
    """The exec's stdin: the Python runner, then the request."""
    return RUNNER_PREFIX + request.encode()


def _check_nonce(nonce: str) -> None:
    if not re.fullmatch(r"[0-9a-f]+", nonce):
        raise InvalidInputError("bad nonce")


def kill_args(pod: str, container: str, nonce: str, work_dir: str) -> list[str]:
    """Kill a run's process group (deadline passed, or cancelled), and what carries its mark. The
    nonce is ours (hex); the pid file ("<group> [<run.py>]") is in whichever log directory the
    runner could write. run.py carries the mark itself and is spared: it reports the kill."""
    _check_nonce(nonce)
    script = (
        f's=; for d in {LOG_DIR} "${{HOME:-/nonexistent}}/.kx-logs" "$2/.kx-logs"; do '
        'p=; { read -r p s <"$d/$1.pid"; } 2>/dev/null; [ -n "$p" ] && kill -s KILL -- "-$p" 2>/dev/null; done; '
        'for e in $(grep -l -s -a "KX_RUN=$1" /proc/[0-9]*/environ 2>/dev/null); do '
        'e=${e#/proc/}; e=${e%/environ}; [ "$e" = "$s" ] || kill -s KILL "$e" 2>/dev/null; done; true'
    )
    return ["exec", pod, "-c", container, "--", "sh", "-c", script, "kx", nonce, work_dir]


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    timed_out: bool
    log_kept: bool
    log_dir: str = LOG_DIR


class MarkerFilter:
    """Streams stdout through, minus the start marker and the exit marker.

    Only bytes that could be the beginning of the exit marker are held back, so output reaches
    ``sink`` as it arrives (a progress line is not delayed until the program ends).
    """

    _MAX_HOLD = 8192  # a "marker" longer than this is not ours: let it through

    def __init__(self, nonce: str, sink: Sink) -> None:
        self._start = f"__KX_START_{nonce}__\n".encode()
        self._head = f"\n__KX_EXIT_{nonce}__ ".encode()
        self._exit = re.compile(
            rb"\n__KX_EXIT_" + nonce.encode() + rb"__ (\d+) ([01]) ([01])(?: ([^\n]*))?\n$"
        )
        self._sink = sink
        self._pending = b""
        self._checked_start = False
        self.started = False
        self.outcome: Outcome | None = None

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        if not self._checked_start:
            if len(self._pending) < len(self._start) and self._start.startswith(self._pending):
                return
            self._checked_start = True
            if self._pending.startswith(self._start):
                self.started = True
                self._pending = self._pending[len(self._start) :]
            # else: not our runner speaking (the shell failed): everything passes through.
        cut = self._safe_length()
        if cut:
            self._sink(self._pending[:cut])
            self._pending = self._pending[cut:]

    def _safe_length(self) -> int:
        """How many leading bytes of what is pending cannot be part of the exit marker."""
        pending = self._pending
        found = pending.rfind(self._head)
        if found != -1 and len(pending) - found <= self._MAX_HOLD:
            return found
        for k in range(min(len(self._head) - 1, len(pending)), 0, -1):
            if pending.endswith(self._head[:k]):
                return len(pending) - k
        return len(pending)

    def close(self) -> Outcome | None:
        """End of stream: find the marker in what is held back; flush the rest."""
        m = self._exit.search(self._pending)
        if m and self.started:
            self._sink(self._pending[: m.start()])
            log_dir = m.group(4).decode(errors="replace") if m.group(4) else LOG_DIR
            self.outcome = Outcome(int(m.group(1)), m.group(2) == b"1", m.group(3) == b"1", log_dir)
        else:
            self._sink(self._pending)
        self._pending = b""
        return self.outcome


class OutputBudget:
    """Keeps the head and the tail of a stream within ``limit`` bytes; counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = max(limit, 0)
        self._tail_cap = self.limit // 2
        self._head_cap = self.limit - self._tail_cap
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def __call__(self, chunk: bytes) -> None:
        self.total += len(chunk)
        space = self._head_cap - len(self._head)
        if space > 0:
            self._head += chunk[:space]
            chunk = chunk[space:]
        if chunk:
            self._tail += chunk
            if len(self._tail) > self._tail_cap:
                del self._tail[: len(self._tail) - self._tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    def value(self, note: str = "") -> bytes:
        if not self.truncated:
            return bytes(self._head + self._tail)
        omitted = self.total - len(self._head) - len(self._tail)
        marker = f"\n[... {omitted} bytes omitted{'; ' + note if note else ''} ...]\n".encode()
        return bytes(self._head) + marker + bytes(self._tail)


FRAME_TAGS = {"FRAME": b"\n__KX_FRAME_%s__ ", "RICH": b"__KX_RICH_%s__ "}


class FrameSplitter:
    """Passes the program's stdout on to ``sink`` and cuts out the runner's frames.

    A frame is its tag, ``<n>\\n``, then n bytes, after all program output: kind FRAME
    (``\\n__KX_FRAME_<nonce>__ ``) is a tool call's result, RICH (``__KX_RICH_<nonce>__ ``, no
    line break first, so that a line's end is never held back) a block's rich results. Only bytes
    that could begin a tag are held back, to recognise it across chunk boundaries. A frame larger
    than ``limit`` is dropped (``overflow``) rather than buffered.
    """

    def __init__(self, nonce: str, sink: Sink, limit: int, kinds: tuple[str, ...] = ("FRAME",)) -> None:
        self._tags = [(kind, FRAME_TAGS[kind] % nonce.encode()) for kind in kinds]
        self._hold = max(len(tag) for _, tag in self._tags) + 24
        self._sink = sink
        self._limit = limit
        self._pending = b""
        self._kind: str | None = None
        self._want = 0
        self._frame = bytearray()
        self._got = 0
        self.overflow = False
        self.frames: dict[str, bytes] = {}

    def feed(self, chunk: bytes) -> None:
        if self._kind is not None:
            chunk = self._take(chunk)
            if self._kind is not None or not chunk:
                return
        self._pending += chunk
        while True:
            found = [(at, kind, tag) for kind, tag in self._tags if (at := self._pending.find(tag)) >= 0]
            if not found:
                break
            at, kind, tag = min(found)
            end = self._pending.find(b"\n", at + len(tag))
            size = self._pending[at + len(tag) : end] if end >= 0 else b""
            if end >= 0 and size.isdigit():
                self._sink(self._pending[:at])
                rest = self._pending[end + 1 :]
                self._pending = b""
                self._kind, self._want, self._got = kind, int(size), 0
                self._frame = bytearray()
                if self._want > self._limit:
                    self.overflow = True
                rest = self._take(rest)
                if self._kind is not None or not rest:
                    return
                self._pending = rest
                continue
            if end < 0 and len(self._pending) - at <= self._hold:
                self._flush_before(at)
                return
            break
        self._flush_before(len(self._pending) - self._tag_prefix())

    def _tag_prefix(self) -> int:
        """How many trailing bytes could begin a tag: only those wait (output is not delayed)."""
        pending = self._pending
        for k in range(min(self._hold, len(pending)), 0, -1):
            tail = pending[-k:]
            if any(tag.startswith(tail) for _, tag in self._tags):
                return k
        return 0

    def _flush_before(self, cut: int) -> None:
        if cut > 0:
            self._sink(self._pending[:cut])
            self._pending = self._pending[cut:]

    def _take(self, data: bytes) -> bytes:
        """Add to the frame in progress; returns what follows it once it is complete."""
        need = self._want - self._got
        part, rest = data[:need], data[need:]
        self._got += len(part)
        if self._want <= self._limit:
            self._frame += part
        if self._got == self._want and self._kind is not None:
            if self._want <= self._limit:
                self.frames[self._kind] = bytes(self._frame)
            self._kind = None
            self._frame = bytearray()
        return rest

    def close(self) -> bytes | None:
        """End of the stream: the first kind's complete frame, or None (none, cut short, too big).
        The others are in ``frames``."""
        if self._kind is None:
            self._sink(self._pending)
            self._pending = b""
        return self.frames.get(self._tags[0][0])
