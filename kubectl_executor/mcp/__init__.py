"""MCP server: the executor as tools for any agent host that speaks the Model Context Protocol.

``kubectl-executor mcp`` (optional extra ``kubectl-executor[mcp]``, built on the official MCP
Python SDK) serves over stdio (one client per process) or streamable HTTP (one client per MCP
session, ``Mcp-Session-Id``). Each client gets ONE pod, created on its first tool call and deleted
when the client goes (stdin closes, the client sends DELETE, the server shuts down), idles out,
or is reclaimed for a new client at ``max_sessions``. A server killed with SIGKILL leaves pods
labelled with its pid, which ``kubectl-executor gc`` deletes. ("MCP session" is the protocol's
word; a bare "session" in this library is the executor's persistent exec channel.)

Layout: :mod:`.config` (options, the response budgets from the clients' limits), :mod:`.models`
(results and their text), :mod:`.tools` (the blocking work, through the executor's public API),
:mod:`.clients` (a pod per client), :mod:`.catalog` (the tool table), :mod:`.server` (the one
adapter, progress, the transports).
"""

try:
    import mcp.server.mcpserver  # noqa: F401  (the SDK, an optional extra)
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the SDK
    raise ImportError(
        "the kubectl-executor MCP server needs the MCP Python SDK: pip install 'kubectl-executor[mcp]'"
    ) from exc

from ..defaults import MCP_RUN_TIMEOUT as DEFAULT_RUN_TIMEOUT  # the name mcp/ has always exported
from .clients import ClientRegistry, Workspace
from .config import DEFAULT_MAX_OUTPUT_BYTES, McpConfig, response_budget
from .models import CallResult, DownloadResult, FileEntry, ListResult, ResetResult, RunResult, UploadResult
from .server import KubectlExecutorMcp, client_key
from .tools import RefusedError, Sandbox

__all__ = [
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_RUN_TIMEOUT",
    "CallResult",
    "ClientRegistry",
    "DownloadResult",
    "FileEntry",
    "KubectlExecutorMcp",
    "ListResult",
    "McpConfig",
    "RefusedError",
    "ResetResult",
    "RunResult",
    "Sandbox",
    "UploadResult",
    "Workspace",
    "client_key",
    "response_budget",
]


def __getattr__(name: str) -> object:
    """The deprecated former names: ``SessionRegistry`` and ``session_key``."""
    if name == "SessionRegistry":
        from .sessions import SessionRegistry

        return SessionRegistry
    if name == "session_key":
        from .server import session_key

        return session_key
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
