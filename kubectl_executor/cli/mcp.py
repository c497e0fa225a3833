"""``mcp``: serve the executor as MCP tools (the SDK is imported only when the command runs)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click  # a core dependency: the command works on the base install

from .._version import __version__
from ..defaults import ACTIVE_DEADLINE_SECONDS, MCP_RUN_TIMEOUT
from . import base
from .base import (
    EXIT_OK,
    Common,
    F,
    Failure,
    access_options,
    command,
    env_pairs,
    make_executor,
    missing_extra,
    output_options,
    pod_options_with,
    show_manifest,
    with_exit_codes,
)
from .pods import parse_duration

if TYPE_CHECKING:
    from ..mcp import KubectlExecutorMcp

logger = logging.getLogger(__name__)


def _mcp_option(*decls: str, env: str, **kw: Any) -> Callable[[F], F]:
    return click.option(*decls, envvar=f"KUBECTL_EXECUTOR_MCP_{env}", show_envvar=True, **kw)


@click.command(
    epilog=with_exit_codes(
        "Host configuration (Claude Desktop and other `mcpServers` JSON):\n\n\b\n"
        '  {"mcpServers": {"kubectl-executor": {"command": "kubectl-executor", "args": ["mcp"],\n'
        '     "env": {"KUBECTL_EXECUTOR_NAMESPACE": "sandbox"}}}}\n\n'
        "One pod per MCP session, made on the first tool call and deleted when the MCP session ends or\n"
        "idles out. Pods of a killed server are removed by `kubectl-executor gc`."
    )
)
@_mcp_option(
    "--transport",
    env="TRANSPORT",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio (one client) or streamable HTTP (many MCP sessions)",
)
@_mcp_option("--host", env="HOST", default="127.0.0.1", show_default=True, help="HTTP: address to listen on")
@_mcp_option(
    "--port",
    env="PORT",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="HTTP: port (0: any free port; the URL is printed on stderr)",
)
@_mcp_option("--path", "http_path", env="PATH", default="/mcp", show_default=True, help="HTTP: endpoint path")
@_mcp_option(
    "--idle-timeout",
    env="IDLE_TIMEOUT",
    default="600",
    show_default=True,
    metavar="DURATION",
    help="delete an MCP session's pod after this long without a call (90s, 10m; 0: never)",
)
@_mcp_option(
    "--pool-size", env="POOL_SIZE", type=click.IntRange(min=0), default=0, help="keep N warm pods ready"
)
@_mcp_option(
    "--max-sessions",
    env="MAX_SESSIONS",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="MCP sessions with a pod at once",
)
@_mcp_option(
    "--max-file-bytes",
    env="MAX_FILE_BYTES",
    type=click.IntRange(min=1),
    default=64 * 1024 * 1024,
    show_default=True,
    help="cap for upload_file and for the file download_file reads in ranges",
)
@_mcp_option(
    "--json-response",
    env="JSON_RESPONSE",
    is_flag=True,
    help="HTTP: answer with JSON instead of server-sent events (larger download ranges; no progress)",
)
@_mcp_option(
    "--progress-interval",
    env="PROGRESS_INTERVAL",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="seconds between progress notifications of a call in flight",
)
@_mcp_option(
    "--max-timeout",
    env="MAX_TIMEOUT",
    type=click.IntRange(min=1),
    default=600,
    show_default=True,
    help="largest timeout a tool call may ask for (seconds)",
)
@_mcp_option("--cpu-request", env="CPU_REQUEST", help="pod CPU request [default: 100m]")
@_mcp_option("--cpu-limit", env="CPU_LIMIT", help="pod CPU limit [default: 2]")
@_mcp_option("--memory-request", env="MEMORY_REQUEST", help="pod memory request [default: 256Mi]")
@_mcp_option("--memory-limit", env="MEMORY_LIMIT", help="pod memory limit [default: 2Gi]")
@_mcp_option(
    "--hardened/--no-hardened",
    env="HARDENED",
    default=True,
    show_default=True,
    help="restricted Pod Security profile (non-root, no capabilities, seccomp)",
)
@_mcp_option(
    "--read-only-root-filesystem", env="READ_ONLY_ROOT_FILESYSTEM", is_flag=True, help="read-only root"
)
@_mcp_option("--runtime-class", env="RUNTIME_CLASS", help="runtimeClassName (gVisor, Kata...)")
@_mcp_option(
    "--network-policy", env="NETWORK_POLICY", is_flag=True, help="default-deny egress NetworkPolicy per pod"
)
@_mcp_option(
    "--active-deadline",
    env="ACTIVE_DEADLINE",
    type=click.IntRange(min=0),
    default=ACTIVE_DEADLINE_SECONDS,
    show_default=True,
    help="activeDeadlineSeconds backstop of each pod (0: none)",
)
@access_options
@pod_options_with(timeout_default=MCP_RUN_TIMEOUT)
@output_options
@command
def mcp(
    common: Common,
    transport: str,
    host: str,
    port: int,
    http_path: str,
    idle_timeout: str,
    pool_size: int,
    max_sessions: int,
    max_file_bytes: int,
    json_response: bool,
    progress_interval: float,
    max_timeout: int,
    cpu_request: str | None,
    cpu_limit: str | None,
    memory_request: str | None,
    memory_limit: str | None,
    hardened: bool,
    read_only_root_filesystem: bool,
    runtime_class: str | None,
    network_policy: bool,
    active_deadline: int,
    env: tuple[str, ...],
    print_manifest: bool,
) -> int:
    """Serve the executor as MCP tools (run code, files, function calls) over stdio or HTTP."""
    from ..boundary import Resources

    limits = {
        "cpu_request": cpu_request,
        "cpu_limit": cpu_limit,
        "memory_request": memory_request,
        "memory_limit": memory_limit,
    }
    resources = (
        Resources(**{k: v for k, v in limits.items() if v is not None}) if any(limits.values()) else None
    )
    pod: dict[str, Any] = {
        "resources": resources,
        "hardened": hardened,
        "read_only_root_filesystem": read_only_root_filesystem,
        "runtime_class_name": runtime_class,
        "active_deadline_seconds": active_deadline or None,
    }
    if print_manifest:
        return show_manifest(make_executor(common, env=env, pod=pod, network_policy=network_policy))
    try:
        from ..mcp import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_RUN_TIMEOUT, KubectlExecutorMcp, McpConfig
    except ImportError as exc:
        raise Failure(missing_extra("mcp", exc)) from exc
    settings = common.settings
    extra: dict[str, Any] = {"network_policy": True} if network_policy else {}
    if base.kubectl_runner() is not None:
        extra["runner"] = base.kubectl_runner()
    config = McpConfig(
        access=settings.cluster_access(),
        pod=settings.pod_shape(**pod, **({"env": env_pairs(env)} if env else {})),
        # Unless configured, runs and streams sized for MCP clients.
        run_options=settings.run_options(
            timeout=settings.timeout or DEFAULT_RUN_TIMEOUT,
            max_output_bytes=settings.max_output_bytes or DEFAULT_MAX_OUTPUT_BYTES,
        ),
        executor_kwargs=extra,
        idle_timeout=parse_duration(idle_timeout),
        pool_size=pool_size,
        max_sessions=max_sessions,
        max_file_bytes=max_file_bytes,
        max_timeout=max_timeout,
        json_response=json_response,
        progress_interval=progress_interval,
    )
    server = KubectlExecutorMcp(config)
    server.check_options()
    if not common.quiet:
        _mcp_banner(server, transport)
    if transport == "stdio":
        _close_on_sigterm(server.close)
        server.serve_stdio()
        return EXIT_OK
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s without authentication: anyone who reaches it can run code", host)

    def listening(url: str) -> None:
        if not common.quiet:
            click.echo(f"kubectl-executor mcp: serving streamable HTTP on {url}", err=True)

    level = "error" if common.quiet else {0: "warning", 1: "info"}.get(common.verbose, "debug")
    server.serve_http(host=host, port=port, path=http_path, on_listening=listening, log_level=level)
    return EXIT_OK


def _mcp_banner(server: KubectlExecutorMcp, transport: str) -> None:
    """One start-up line on stderr (the host's log): what serves, where its pods go, the limits;
    and at once, rather than at the first call, the reason no cluster can be reached."""
    config = server.config
    where = f"namespace {config.access.namespace or '(the context default)'}"
    if config.access.context:
        where = f"context {config.access.context}, {where}"
    click.echo(
        f"kubectl-executor mcp {__version__} ({transport}): pods of {config.pod.image} in "
        f"{where}; at most {config.max_sessions} MCP sessions; run timeout {config.run_timeout}s "
        f"(max {config.max_timeout}s); output cap {config.max_output_bytes} bytes per stream",
        err=True,
    )
    if server.cluster_problem:
        click.echo(f"kubectl-executor mcp: warning: {server.cluster_problem}", err=True)


def _close_on_sigterm(close: Callable[[], None]) -> None:
    """stdio hosts end a server with SIGTERM (after closing stdin): delete its pods, then exit."""
    import os
    import signal

    def handler(signum: int, frame: object) -> None:
        def finish() -> None:
            try:
                close()
            finally:
                os._exit(128 + signum)

        threading.Thread(target=finish, name="kx-mcp-sigterm", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
