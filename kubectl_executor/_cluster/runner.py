"""The only code in the package that starts a process (kubectl).

Everything else builds an argv (pure functions) and hands it to a :class:`Runner`. Unit tests
replace the runner with a fake; integration tests use the real one against a real kubectl.

Two ways to start a process, one for each shape of work:

* :meth:`Runner.run` -- one-shot: stdin in (bytes, a binary file or an iterator of chunks), stdout
  and stderr out (collected, or streamed to sinks so memory stays bounded), optional deadline.
  Backed by the ``sh`` package, with ``_tty_out=False`` so output is binary-safe and with raw byte
  sinks (``sh`` decodes text for plain callbacks).
* :meth:`Runner.spawn` -- long-lived and interactive (persistent sessions, watches): backed by
  ``subprocess.Popen``, because ``sh`` can only hand over partial output one byte at a time or in
  fixed-size chunks, which a request/response protocol cannot use.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

logger = logging.getLogger(__name__)

Sink = Callable[[bytes], None]
StdinData = bytes | IO[bytes] | Iterable[bytes] | None

_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Completed:
    """What one process did. ``stdout``/``stderr`` are empty when they were streamed to sinks."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""
    timed_out: bool = False


class Runner(Protocol):
    """Starts processes. Implementations: :class:`ShRunner`; tests use a fake."""

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
        """Run to completion; on ``timeout`` kill the process and return ``timed_out=True``."""
        ...

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> Process:
        """Start a long-lived process whose output goes to the sinks as soon as it is read."""
        ...


class Process(Protocol):
    """A running process started by :meth:`Runner.spawn`."""

    @property
    def pid(self) -> int: ...

    def write(self, data: bytes) -> None:
        """Write to stdin (raises BrokenPipeError if the process is gone)."""
        ...

    def close_stdin(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit code, or None if still running after ``timeout``; output is drained first."""
        ...

    def kill(self) -> None: ...


class _ByteSink:
    """A file-like object: ``sh`` hands file-likes raw bytes (callbacks get decoded text)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def write(self, chunk: bytes) -> None:
        self._sink(chunk)


class _Collector:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def value(self) -> bytes:
        return b"".join(self.parts)


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str]:
    # sh's _env and Popen's env replace the whole environment; callers pass only additions.
    merged = dict(os.environ)
    if env:
        merged.update(env)
    return merged


class ShRunner:
    """The real runner."""

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
        import sh  # imported on use: keeps `import kubectl_executor` fast

        out = _Collector()
        err = _Collector()
        kwargs: dict[str, Any] = {
            "_out": _ByteSink(on_stdout) if on_stdout else out,
            "_err": _ByteSink(on_stderr) if on_stderr else err,
            "_env": _merged_env(env),
            "_tty_out": False,
            "_tty_in": False,
            "_ok_code": list(range(-64, 256)),
            "_return_cmd": True,
            "_out_bufsize": _READ_CHUNK,
            "_err_bufsize": _READ_CHUNK,
            "_no_pipe": True,
        }
        if stdin is not None:
            kwargs["_in"] = stdin
        try:
            # Started in the background and killed by our own timer: sh's _timeout costs ~100 ms
            # on every call (measured), a timer costs nothing when the call ends in time.
            running = sh.Command(argv[0])(*argv[1:], _bg=True, _bg_exc=False, **kwargs)
        except sh.CommandNotFound as exc:
            raise FileNotFoundError(argv[0]) from exc
        fired = threading.Event()

        def expire() -> None:
            fired.set()
            with contextlib.suppress(ProcessLookupError):
                running.process.kill()

        timer = threading.Timer(timeout, expire) if timeout is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            running.wait()
        finally:
            if timer is not None:
                timer.cancel()
        code = int(running.exit_code)
        return Completed(tuple(argv), code, out.value(), err.value(), fired.is_set())

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> _PopenProcess:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_merged_env(env),
            bufsize=0,
        )
        return _PopenProcess(proc, on_stdout, on_stderr)


@dataclass
class _PopenProcess:
    proc: subprocess.Popen[bytes]
    on_stdout: Sink | None
    on_stderr: Sink | None
    _pumps: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for stream, sink in (
            (self.proc.stdout, self.on_stdout),
            (self.proc.stderr, self.on_stderr),
        ):
            assert stream is not None
            t = threading.Thread(target=_pump, args=(stream, sink), daemon=True)
            t.start()
            self._pumps.append(t)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        view = memoryview(data)
        with self._lock:
            while view:
                written = self.proc.stdin.write(view)
                view = view[written or 0 :]

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with self._lock, contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()

    def wait(self, timeout: float | None = None) -> int | None:
        # Join the output pumps first: they end at EOF, i.e. as soon as kubectl exits.
        # Popen.wait(timeout) polls with sleeps of up to 50 ms, which every exec would pay.
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._pumps:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return None
        try:
            return self.proc.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._pumps:
            t.join()
        if self.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()


def _pump(stream: IO[bytes], sink: Sink | None) -> None:
    """Hand output over as soon as it is read (os.read returns what is there, up to 64 KiB)."""
    fd = stream.fileno()
    while True:
        try:
            chunk = os.read(fd, _READ_CHUNK)
        except OSError:
            break
        if not chunk:
            break
        if sink is not None:
            try:
                sink(chunk)
            except Exception:  # a broken sink must not kill the pump and wedge the process
                logger.exception("output sink failed")
    stream.close()
