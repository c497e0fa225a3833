"""MCP clients and their pods: one :class:`Workspace` per client, made lazily, with one worker
thread for its blocking calls; the :class:`ClientRegistry` reaps idle ones and, at
``max_clients``, reclaims the pod of the least recently used idle client for a new one.

A client is what the server keeps one pod for: over stdio the process's one client, over
streamable HTTP one MCP session (one ``Mcp-Session-Id``; the protocol's word, qualified as
"MCP session" here: a bare "session" in this library is the executor's persistent exec channel)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from ..errors import KubectlExecutorError
from .tools import FileCopy, RefusedError, Sandbox

logger = logging.getLogger(__name__)

T = TypeVar("T")
SandboxFactory = Callable[[], Sandbox]


class Workspace:
    """One MCP client's pod: started on first use, one worker thread for its blocking calls.

    Besides the sandbox it keeps what the tools remember between calls: whether the tool runner
    is installed, the file a ranged download reads from, and what the call in flight is doing
    (for progress notifications)."""

    def __init__(self, key: str, factory: SandboxFactory, *, notice: str | None = None) -> None:
        self.key = key
        self._factory = factory
        self._lock = threading.Lock()
        self._sandbox: Sandbox | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kx-mcp")
        self._closed = False
        self.dispatcher_installed = False
        self.file_copy: FileCopy | None = None
        self.notice = notice
        self.busy = 0
        self.last_used = time.monotonic()
        self.phase = "waiting for the client's previous call"
        self.output_bytes = 0

    @property
    def pod_name(self) -> str | None:
        sb = self._sandbox
        return sb.pod_name if sb is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def take_notice(self) -> str | None:
        notice, self.notice = self.notice, None
        return notice

    def on_output(self, stream: str, chunk: bytes) -> None:
        """The run's output callback: counted for the progress messages."""
        self.output_bytes += len(chunk)

    def activity(self) -> str:
        """What the call in flight is doing, for a progress notification."""
        if self.phase == "running" and self.output_bytes:
            return f"running ({self.output_bytes} bytes of output so far)"
        return self.phase

    def ensure(self) -> Sandbox:
        """The started sandbox (created and started now if needed). Worker thread only."""
        with self._lock:
            if self._closed:
                raise RefusedError("this MCP session has ended")
            sb = self._sandbox
        if sb is not None:
            return sb
        self.phase = "starting the client's sandbox pod"
        sb = self._factory()
        with self._lock:
            if self._closed:
                sb.stop()
                raise RefusedError("this MCP session has ended")
            self._sandbox = sb
            self.dispatcher_installed = False
            self.file_copy = None
        try:
            sb.start()
        except BaseException:
            with self._lock:
                if self._sandbox is sb:
                    self._sandbox = None
            sb.stop()
            raise
        if self._closed:  # close() raced with the start: make sure the new pod goes too
            sb.stop()
            raise RefusedError("this MCP session has ended")
        logger.info("MCP client %s: pod %s", self.key, sb.pod_name)
        self.phase = "running"
        return sb

    def discard(self) -> str | None:
        """Delete the pod (the next call starts a fresh one); returns its name."""
        with self._lock:
            sb, self._sandbox = self._sandbox, None
            self.dispatcher_installed = False
            self.file_copy = None
        if sb is None:
            return None
        try:
            sb.stop()
        except KubectlExecutorError as exc:
            logger.warning("could not delete pod %s: %s", sb.pod_name, exc)
        return sb.pod_name

    async def run(self, job: Callable[[Workspace], T]) -> T:
        """Run ``job`` in this client's worker thread; a cancelled caller stops the run in the pod."""

        def tracked(ws: Workspace) -> T:
            ws.phase, ws.output_bytes = "running", 0
            return job(ws)

        try:
            future = self._worker.submit(tracked, self)
        except RuntimeError as exc:  # the worker was shut down: the client ended meanwhile
            raise RefusedError("this MCP session has ended") from exc
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            if not future.done():
                self._interrupt()
            raise

    def _interrupt(self) -> None:
        sb = self._sandbox
        if sb is not None:
            threading.Thread(target=sb.cancel, name="kx-mcp-cancel", daemon=True).start()

    def close(self) -> None:
        """End the client: delete its pod now, even with a run in flight (deleting it stops the run)."""
        with self._lock:
            self._closed = True
        name = self.discard()
        self._worker.shutdown(wait=False, cancel_futures=True)
        if name:
            logger.info("MCP client %s ended: pod %s deleted", self.key, name)


class ClientRegistry:
    """MCP client key -> :class:`Workspace`; reaps idle ones from a background thread.

    ``wait`` is the reaper's pause between rounds (``threading.Event.wait``-like: True stops it);
    tests give one that does not wait on the clock."""

    def __init__(
        self,
        factory: SandboxFactory,
        *,
        idle_timeout: float,
        max_clients: int,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self._factory = factory
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, Workspace] = {}
        self._gone: dict[str, str] = {}  # key -> why its pod went (told on its next call)
        self._closing = False
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait
        self._reaper: threading.Thread | None = None
        self._closers: list[threading.Thread] = []

    def __len__(self) -> int:
        return len(self._clients)

    def get(self, key: str) -> Workspace | None:
        return self._clients.get(key)

    def acquire(self, key: str) -> Workspace:
        """The client's workspace, marked busy (creating it is cheap: the pod comes on first use).

        At ``max_clients`` the least recently used idle client loses its pod (it is told on its
        next call, which gets a fresh one); only when every client is busy is the new one refused."""
        victim = None
        with self._lock:
            if self._closing:
                raise RefusedError("the server is shutting down")
            ws = self._clients.get(key)
            if ws is None:
                if len(self._clients) >= self.max_clients:
                    idle = [w for w in self._clients.values() if w.busy == 0]
                    if not idle:
                        raise RefusedError(
                            f"all {self.max_clients} MCP clients with a pod are busy; try again when one "
                            "is done, or raise the server's --max-sessions"
                        )
                    victim = min(idle, key=lambda w: w.last_used)
                    del self._clients[victim.key]
                    self._forget_some()
                    self._gone[victim.key] = (
                        f"note: this client's previous pod was reclaimed for another client while this "
                        f"one was idle (the server keeps at most {self.max_clients} pods); this is a fresh "
                        "pod with an empty workspace"
                    )
                ws = Workspace(key, self._factory, notice=self._gone.pop(key, None))
                self._clients[key] = ws
            ws.busy += 1
            ws.last_used = self._clock()
        if victim is not None:
            logger.info("max clients reached: reclaiming the pod of idle client %s", victim.key)
            self._close_in_background(victim)
        return ws

    def release(self, ws: Workspace) -> None:
        with self._lock:
            ws.busy -= 1
            ws.last_used = self._clock()

    def _forget_some(self) -> None:
        if len(self._gone) > 10_000:  # HTTP clients that never came back
            self._gone.clear()

    def _close_in_background(self, ws: Workspace) -> None:
        closer = threading.Thread(target=ws.close, name="kx-mcp-close", daemon=True)
        with self._lock:
            self._closers = [t for t in self._closers if t.is_alive()] + [closer]
        closer.start()

    def end(self, key: str, *, wait: bool = False) -> None:
        """The MCP client is gone (stdio closed, its MCP session ended): delete its pod (in the
        background unless ``wait``)."""
        with self._lock:
            ws = self._clients.pop(key, None)
            self._gone.pop(key, None)
        if ws is None:
            return
        if wait:
            ws.close()
        else:
            self._close_in_background(ws)

    def reap(self) -> list[str]:
        """End the clients idle for longer than ``idle_timeout``; returns their keys."""
        if self.idle_timeout <= 0:
            return []
        now = self._clock()
        with self._lock:
            idle = [
                key
                for key, ws in self._clients.items()
                if ws.busy == 0 and now - ws.last_used >= self.idle_timeout
            ]
            gone = [self._clients.pop(key) for key in idle]
            self._forget_some()
            for key in idle:
                self._gone[key] = (
                    f"note: this client's previous pod was idle for more than {self.idle_timeout:g}s and "
                    "was deleted; this is a fresh pod with an empty workspace"
                )
        for ws in gone:
            if ws.pod_name:
                logger.info(
                    "MCP client %s idle for %gs: deleting pod %s", ws.key, self.idle_timeout, ws.pod_name
                )
            ws.close()
        return idle

    def start_reaper(self) -> None:
        if self.idle_timeout <= 0 or (self._reaper is not None and self._reaper.is_alive()):
            return
        self._stop.clear()
        tick = min(max(self.idle_timeout / 4, 0.1), 30.0)

        def loop() -> None:
            while not self._wait(tick) and not self._stop.is_set():
                try:
                    self.reap()
                except Exception:
                    logger.exception("the idle-client reaper failed; it keeps going")

        self._reaper = threading.Thread(target=loop, name="kx-mcp-reaper", daemon=True)
        self._reaper.start()

    def close_all(self) -> None:
        """Stop the reaper and delete every client's pod (in parallel). Idempotent; a second
        caller waits for the deletions the first one started."""
        self._stop.set()
        with self._lock:
            self._closing = True
            clients = list(self._clients.values())
            self._clients.clear()
            started = [threading.Thread(target=ws.close, name="kx-mcp-close", daemon=True) for ws in clients]
            self._closers = [t for t in self._closers if t.is_alive()] + started
            closers = list(self._closers)
        for t in started:
            t.start()
        for t in closers:
            t.join(timeout=120)
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(timeout=5)

    def reopen(self) -> None:
        with self._lock:
            self._closing = False
