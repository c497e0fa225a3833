"""The MCP server: one adapter that serves the table of tools (:mod:`.catalog`), clients, progress,
the two transports.

Each tool is a :class:`~kubectl_executor.mcp.catalog.ToolSpec`: its arguments (a pydantic model:
the input schema), its result model (the output schema), and a blocking handler. :meth:`KubectlExecutorMcp._serve` does what
every call needs: the client's workspace, its worker thread, progress notifications while the
pod starts and the run goes on, the notice of a fresh pod, a pod that vanished, the size check
against the connection's budget, and errors as tool errors (never a dropped MCP session).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp.types import METHOD_NOT_FOUND, CallToolResult, TextContent
from pydantic import BaseModel, Field

from .._cluster.kubectl import Kubectl
from .._version import __version__
from ..boundary import ClusterAccess
from ..errors import (
    ForbiddenError,
    InvalidInputError,
    KubectlExecutorError,
    KubectlNotFoundError,
    NotFoundError,
    OutcomeUnknownError,
    PodStartError,
    StartupTimeoutError,
)
from ..executor import KubernetesCommandLineCodeExecutor
from .catalog import Call, ToolSpec, tool_specs
from .clients import ClientRegistry, SandboxFactory, Workspace
from .config import McpConfig, Transport, response_budget
from .models import RunResult, render_run
from .tools import RefusedError, Reply, Sandbox

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ..pool import WarmPool

logger = logging.getLogger(__name__)

STDIO_CLIENT = "stdio"
NO_CLUSTER = (
    "no cluster configured: set KUBECONFIG in the server's env (the host starts MCP servers with a "
    "minimal environment), or pass --kubeconfig / KUBECTL_EXECUTOR_KUBECONFIG"
)

INSTRUCTIONS = """\
Runs code in a Kubernetes pod that belongs to this MCP session: created on the first tool call, \
deleted when the MCP session ends or has been idle too long. Files persist between calls in the \
workspace (the pod's working directory). A non-zero exit_code is the program's own result (124: it \
timed out), not a tool failure. Tool errors mean the sandbox could not do what was asked."""

# -- errors ---------------------------------------------------------------------------------------


def error_text(exc: BaseException) -> str:
    """A clear message for the model, whatever failed."""
    if isinstance(exc, RefusedError):
        return str(exc)
    if isinstance(exc, OutcomeUnknownError):
        return f"the result of this run was lost and the run was NOT repeated (it may or may not have run): {exc}"
    if isinstance(exc, PodStartError):
        return f"the sandbox pod cannot start: {exc.reason}: {exc.message}"
    if isinstance(exc, StartupTimeoutError):
        return f"the sandbox pod did not become ready in time: {exc}"
    if isinstance(exc, KubectlNotFoundError):
        return f"the server cannot reach the cluster: {exc}"
    if isinstance(exc, ForbiddenError):
        return f"the cluster refused (RBAC): {exc.message}"
    if isinstance(exc, (InvalidInputError, TypeError, ValueError)):
        return str(exc)
    if isinstance(exc, KubectlExecutorError):
        return f"{type(exc).__name__}: {exc}"
    logger.error("unexpected error in a tool call", exc_info=exc)
    return f"internal error ({type(exc).__name__}): {exc}"


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def cluster_problem(access: ClusterAccess, environ: Mapping[str, str]) -> str | None:
    """Why no cluster can be reached at all (nothing configured), else None. kubectl would fall
    back to localhost:8080 and fail after its retries; this fails at once, saying what to set."""
    if access.kubeconfig or access.remote_control_plane:
        return None
    if any(p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p):
        return None
    if environ.get("KUBERNETES_SERVICE_HOST"):  # in a pod: the service account
        return None
    home = environ.get("HOME")
    if home and (Path(home) / ".kube" / "config").is_file():
        return None
    return NO_CLUSTER


def client_key(ctx: Context) -> str:
    """The client a request comes from: stdio serves one client per process; over HTTP the MCP
    session id (``Mcp-Session-Id``) names the client."""
    request = ctx.request_context.request
    if request is None:
        return STDIO_CLIENT
    headers = getattr(request, "headers", None)
    mcp_session_id = headers.get("mcp-session-id") if headers is not None else None
    if not mcp_session_id:
        raise RefusedError(
            "this request belongs to no MCP session (no Mcp-Session-Id): the server keeps one pod per "
            "MCP session, so connect with the initialize handshake"
        )
    return f"http:{mcp_session_id}"


def session_key(ctx: Context) -> str:
    """Deprecated alias of :func:`client_key` ("session" now means the executor's exec channel)."""
    warnings.warn("session_key is deprecated: use client_key", DeprecationWarning, stacklevel=2)
    return client_key(ctx)


def _wants_progress(ctx: Context) -> bool:
    meta: Any = ctx.request_context.meta
    if meta is None:
        return False
    if isinstance(meta, Mapping):
        return meta.get("progress_token", meta.get("progressToken")) is not None
    return getattr(meta, "progress_token", None) is not None


async def _mcp_sessions_need_handshake(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Over HTTP the 2026-07-28 era has no MCP sessions: refuse its discovery, clients fall back."""
    if ctx.method == "server/discover" and ctx.request is not None:
        raise MCPError(
            code=METHOD_NOT_FOUND,
            message="kubectl-executor keeps one pod per MCP session: use the initialize handshake over HTTP",
        )
    return await call_next(ctx)


# -- the server -------------------------------------------------------------------------------------


class KubectlExecutorMcp:
    """The MCP server: tools, a pod per client, optional warm pool, and the two transports."""

    def __init__(
        self,
        config: McpConfig | None = None,
        *,
        executor_factory: SandboxFactory | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config or McpConfig()
        self._executor_factory = executor_factory
        self.cluster_problem = (
            cluster_problem(self.config.access, os.environ if environ is None else environ)
            if executor_factory is None
            else None
        )
        self._pool: WarmPool | None = None
        self._pool_kubectl: Kubectl | None = None
        self._state_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self.clients = ClientRegistry(
            self._make_executor, idle_timeout=self.config.idle_timeout, max_clients=self.config.max_sessions
        )
        # The SDK's constructor calls logging.basicConfig(); a library leaves logging to the application.
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            self.mcp: MCPServer[Any] = MCPServer(
                "kubectl-executor",
                title="kubectl-executor",
                instructions=INSTRUCTIONS,
                version=__version__,
                lifespan=self._lifespan,
                middleware=[_mcp_sessions_need_handshake],
            )
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        for spec in tool_specs(self.config):
            self.mcp.add_tool(
                self._tool_function(spec),
                name=spec.name,
                title=spec.title,
                description=spec.description,
                annotations=spec.annotations,
            )

    @property
    def sessions(self) -> ClientRegistry:
        """Deprecated alias of :attr:`clients` ("session" now means the executor's exec channel)."""
        warnings.warn(
            "KubectlExecutorMcp.sessions is deprecated: use clients", DeprecationWarning, stacklevel=2
        )
        return self.clients

    # -- lifecycle ------------------------------------------------------------------------------

    def _make_executor(self) -> Sandbox:
        if self._executor_factory is not None:
            return self._executor_factory()
        config = self.config
        kwargs = {"session": True, **config.executor_kwargs}  # the executor's exec session: one per pod
        return KubernetesCommandLineCodeExecutor(
            access=config.access,
            pod=config.pod,
            run_options=config.run_options,
            start=False,
            pool=self._pool,
            **kwargs,
        )

    def check_options(self) -> None:
        """Build (and drop) one executor, so that bad options or a missing kubectl fail at start-up
        rather than in every tool call. Touches no cluster."""
        self._make_executor().stop()

    def open(self) -> None:
        """Start the reaper (and the warm pool); the transports call this."""
        with self._state_lock:
            self.clients.reopen()
            if (
                self.config.pool_size
                and self._pool is None
                and self._executor_factory is None
                and self.cluster_problem is None
            ):
                self._pool, self._pool_kubectl = _make_pool(self.config)
        self.clients.start_reaper()

    def close(self) -> None:
        """Delete every client's pod and the pool's. Idempotent; a concurrent caller (the lifespan
        and a SIGTERM handler) waits until the first one is done."""
        with self._close_lock:
            self.clients.close_all()
            with self._state_lock:
                pool, self._pool = self._pool, None
                kubectl, self._pool_kubectl = self._pool_kubectl, None
            try:
                if pool is not None:
                    pool.stop()
            finally:
                if kubectl is not None:
                    kubectl.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _: MCPServer[Any]) -> AsyncIterator[dict[str, Any]]:
        await anyio.to_thread.run_sync(self.open)
        try:
            yield {}
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.close)

    # -- transports -----------------------------------------------------------------------------

    async def run_stdio(self) -> None:
        """Serve one client on stdin/stdout until stdin closes; then its pod is deleted. A client
        that goes away mid-call ends the server quietly (its pod is deleted all the same)."""
        try:
            await self.mcp.run_stdio_async()
        except BaseException as exc:
            if not _only_client_gone(exc):
                raise
            logger.info("the stdio client went away; shutting down")

    def serve_stdio(self) -> None:
        anyio.run(self.run_stdio)

    def http_app(self, *, path: str = "/mcp", host: str = "127.0.0.1") -> ASGIApp:
        """The streamable-HTTP ASGI app; an MCP session's DELETE deletes its client's pod at once."""
        body = max(4 * 1024 * 1024, self.config.max_file_bytes * 4 // 3 + 1024 * 1024)
        app = self.mcp.streamable_http_app(
            streamable_http_path=path,
            json_response=self.config.json_response,
            max_request_body_size=body,
            session_idle_timeout=self.config.idle_timeout or None,
            host=host,
        )
        return _McpSessionEndWatcher(app, lambda sid: self.clients.end(f"http:{sid}"))

    async def run_http(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        path: str = "/mcp",
        on_listening: Callable[[str], None] | None = None,
        log_level: str = "warning",
    ) -> None:
        """Serve streamable HTTP until the process is told to stop (uvicorn handles SIGINT/SIGTERM)."""
        import uvicorn

        sock = _bind(host, port)
        actual = sock.getsockname()[1]
        config = uvicorn.Config(
            self.http_app(path=path, host=host),
            log_config=None,
            log_level=log_level,
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        if on_listening is not None:
            on_listening(f"http://{shown}:{actual}{path}")
        await server.serve(sockets=[sock])

    def serve_http(self, **kwargs: Any) -> None:
        anyio.run(lambda: self.run_http(**kwargs))

    # -- the one adapter --------------------------------------------------------------------------

    def _tool_function(self, spec: ToolSpec[Any]) -> Callable[..., Awaitable[CallToolResult]]:
        """An async function whose signature is ``spec.args``' fields plus the SDK's Context (the SDK
        derives the input schema from it) and whose return annotation names the output schema."""

        async def tool(ctx: Context, **kwargs: Any) -> CallToolResult:
            return await self._serve(ctx, spec, spec.args.model_validate(kwargs))

        params = [
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if f.is_required() else f.default,
                annotation=Annotated[f.annotation, Field(description=f.description)],
            )
            for name, f in spec.args.model_fields.items()
        ]
        params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context))
        returns = Annotated[CallToolResult, spec.result]
        tool.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
        tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
        tool.__name__ = tool.__qualname__ = spec.name
        return tool

    def _budget(self, ctx: Context) -> int:
        transport: Transport = "stdio" if ctx.request_context.request is None else self.config.http_transport
        return response_budget(transport)

    async def _serve(self, ctx: Context, spec: ToolSpec[Any], args: BaseModel) -> CallToolResult:
        if self.cluster_problem is not None and spec.name != "reset_workspace":
            return _error(self.cluster_problem)
        try:
            ws = self.clients.acquire(client_key(ctx))
        except RefusedError as exc:
            return _error(str(exc))
        call = Call(ws, self.config, self._budget(ctx))

        def job(w: Workspace) -> Reply:
            if spec.changes_files:
                w.file_copy = None
            try:
                reply = spec.handler(call, args)
            except NotFoundError as exc:
                name = w.discard()
                raise RefusedError(
                    f"the client's pod {name} is gone ({exc.message}); the next call starts a fresh pod "
                    "with an empty workspace"
                ) from exc
            notice = w.take_notice()
            if notice and spec.name != "reset_workspace":
                reply.result.notice = notice
                reply.text = f"{notice}\n{reply.text}"
            return reply

        try:
            async with self._progress(ctx, ws):
                reply = await ws.run(job)
        except Exception as exc:
            return _error(error_text(exc))
        finally:
            self.clients.release(ws)
        return _fit(reply, call.budget)

    @contextlib.asynccontextmanager
    async def _progress(self, ctx: Context, ws: Workspace) -> AsyncIterator[None]:
        """Progress notifications every ``progress_interval`` while the call is in flight (only
        when the client sent a progress token)."""
        if not _wants_progress(ctx):
            yield
            return
        interval = self.config.progress_interval

        async def beat() -> None:
            # One notification per interval, and one at once when the call enters a new phase
            # (a pod start that ends within the first interval is still reported). The phase is
            # looked at often: each phase is at least one kubectl process (tens of ms).
            step = min(interval, PHASE_POLL_SECONDS)
            last_phase, next_beat = first_phase, started + interval
            while True:
                await anyio.sleep(step)
                now, phase = anyio.current_time(), ws.phase
                if phase == last_phase and now < next_beat:
                    continue
                last_phase, next_beat = phase, now + interval
                elapsed = round(now - started, 2)
                with contextlib.suppress(Exception):  # a client gone is the call's problem, not ours
                    await ctx.report_progress(elapsed, None, f"{ws.activity()} ({elapsed:g}s)")

        # Taken before the call's job is handed to its worker, which may change the phase at once.
        first_phase, started = ws.phase, anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(beat)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()


PHASE_POLL_SECONDS = 0.02
"""How often a call's progress loop looks for a new phase (pod start, run)."""


def _fit(reply: Reply, budget: int) -> CallToolResult:
    """The reply as the SDK sends it, or a tool error if it would not fit in ``budget``. A run's
    rich outputs that do not fit are left out (the result says so), not the run's result."""
    content: list[Any] = [TextContent(type="text", text=reply.text), *reply.blocks]
    result = CallToolResult(content=content, structured_content=reply.result.model_dump(mode="json"))
    size = len(result.model_dump_json(by_alias=True, exclude_none=True))
    if size > budget and isinstance(reply.result, RunResult) and reply.blocks:
        run = reply.result.model_copy(
            update={"outputs": [o.model_copy(update={"in_content": False}) for o in reply.result.outputs]}
        )
        note = (
            f"\nnote: the rich outputs ({size} bytes with them) are over the {budget} bytes every client "
            "of this connection accepts, and were left out"
        )
        return _fit(Reply(run, render_run(run) + note), budget)
    if size > budget:
        return _error(
            f"the result would be {size} bytes, over the {budget} bytes every client of this connection "
            "accepts: ask for less (a shorter download range, or less output: the full output stays in "
            "the pod and download_file reads it in ranges)"
        )
    return result


def _only_client_gone(exc: BaseException) -> bool:
    """A broken pipe / closed stream, alone or in exception groups: the client went away."""
    inner = getattr(exc, "exceptions", None)  # an exception group (3.11+, or the backport)
    if isinstance(inner, tuple) and inner:
        return all(_only_client_gone(e) for e in inner)
    return isinstance(
        exc, (BrokenPipeError, ConnectionResetError, anyio.BrokenResourceError, anyio.ClosedResourceError)
    )


class _McpSessionEndWatcher:
    """ASGI wrapper: a DELETE that the SDK accepted ends that MCP session's client (and its pod)."""

    def __init__(self, app: ASGIApp, on_end: Callable[[str], None]) -> None:
        self.app = app
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "DELETE":
            await self.app(scope, receive, send)
            return
        mcp_session_id = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"mcp-session-id"), None
        )
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, watch)
        if mcp_session_id and status and 200 <= status[0] < 300:
            self._on_end(mcp_session_id)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), so the URL is known before serving starts."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        # Listening now, before the URL is announced: a client that connects before uvicorn is up
        # waits in the backlog instead of being refused (seen under load).
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _make_pool(config: McpConfig) -> tuple[WarmPool, Kubectl]:
    """A warm pool with the executors' pod shape, on a kubectl shared by its refill thread."""
    from ..pool import WarmPool

    kubectl = Kubectl(config.access, runner=config.executor_kwargs.get("runner"))
    try:
        pool = WarmPool(
            config.pool_size, name="mcp", client=kubectl, pod=config.pod, run_options=config.run_options
        )
    except BaseException:
        kubectl.close()
        raise
    return pool, kubectl
