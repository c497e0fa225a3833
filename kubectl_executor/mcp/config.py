"""The MCP server's options and the response budgets derived from its clients' limits.

Every response is built to fit the smallest limit of the clients a transport serves:

* stdio: the TypeScript SDK reads messages into a 10 MiB buffer (a larger message closes the
  client, and with it the MCP session, the pod and the workspace);
* streamable HTTP with server-sent events: the Python SDK's and fastmcp's clients refuse events over
  1 MiB (their default);
* streamable HTTP with JSON responses (``json_response``): no event limit, so the stdio budget;
  but then nothing is sent before the result, so no progress notifications either.

A response is budgeted below the limit by a fixed envelope allowance (the JSON-RPC frame, the SSE
framing and the result's metadata); what does not fit is a tool error, never a dropped MCP session.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..boundary import ClusterAccess, PodShape, RunOptions
from ..defaults import MCP_RUN_TIMEOUT as DEFAULT_RUN_TIMEOUT  # defined once, shown by `mcp --help`
from ..errors import InvalidInputError

DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024
DEFAULT_PROGRESS_INTERVAL = 5.0

STDIO_MESSAGE_LIMIT = 10 * 1024 * 1024
SSE_EVENT_LIMIT = 1024 * 1024
ENVELOPE = 32 * 1024

Transport = Literal["stdio", "sse", "json"]

_LIMITS: dict[Transport, int] = {
    "stdio": STDIO_MESSAGE_LIMIT,
    "sse": SSE_EVENT_LIMIT,
    "json": STDIO_MESSAGE_LIMIT,
}


def response_budget(transport: Transport) -> int:
    """The largest serialized result (bytes of JSON) that every client of ``transport`` accepts."""
    return _LIMITS[transport] - ENVELOPE


def mcp_run_options() -> RunOptions:
    """The MCP server's run options unless configured: runs and streams sized for its clients."""
    return RunOptions(timeout=DEFAULT_RUN_TIMEOUT, max_output_bytes=DEFAULT_MAX_OUTPUT_BYTES)


@dataclass(frozen=True)
class McpConfig:
    """What the server needs besides the tools: the executors' options and its own limits.

    Every client's executor (and the warm pool) gets the same ``access``, ``pod`` and
    ``run_options`` (the MCP defaults: a 45 s run, 64 KiB per stream); ``executor_kwargs`` are the
    executor's other keywords (``network_policy``, ``runner``...; ``start`` and ``pool`` are the
    server's). A field of the three models given in ``executor_kwargs`` is moved into its model.
    ``idle_timeout`` 0 keeps idle clients' pods until the MCP session ends. ``max_sessions``: MCP
    sessions (clients) with a pod at once. ``max_file_bytes`` caps an upload and the file a ranged
    download reads from. ``progress_interval`` is how often a call in progress reports (clients
    that reset their request timeout on progress then wait as long as the run needs).
    """

    executor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    access: ClusterAccess = field(default_factory=ClusterAccess)
    pod: PodShape = field(default_factory=PodShape)
    run_options: RunOptions = field(default_factory=mcp_run_options)
    idle_timeout: float = 600.0
    pool_size: int = 0
    max_sessions: int = 16
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_timeout: int = 600
    max_list_entries: int = 1000
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
    json_response: bool = False

    def __post_init__(self) -> None:
        rest = dict(self.executor_kwargs)
        if "env_vars" in rest:  # the executor's seed keyword: the pod's env
            rest["env"] = {item["key"]: item["value"] for item in rest.pop("env_vars") or []}
        for name in ("access", "pod", "run_options"):
            model = getattr(self, name)
            moved = {k: rest.pop(k) for k in list(rest) if k in type(model).model_fields}
            if moved:
                object.__setattr__(self, name, type(model).of(None, **{**dict(model), **moved}))
        object.__setattr__(self, "executor_kwargs", rest)
        if self.idle_timeout < 0:
            raise InvalidInputError("idle_timeout must be >= 0 seconds (0: never)")
        if self.pool_size < 0:
            raise InvalidInputError("pool_size must be >= 0")
        if self.max_sessions < 1:
            raise InvalidInputError("max_sessions must be >= 1")
        if self.max_file_bytes < 1:
            raise InvalidInputError("max_file_bytes must be >= 1")
        if self.max_timeout < 1:
            raise InvalidInputError("max_timeout must be >= 1 second")
        if self.progress_interval <= 0:
            raise InvalidInputError("progress_interval must be > 0 seconds")
        if self.pool_size and rest.get("network_policy"):
            raise InvalidInputError("a warm pool's pods have no NetworkPolicy: do not combine the two")
        for key in ("start", "pool", "pod_name", "attach", "shared_resources"):
            if key in rest:
                raise InvalidInputError(f"executor option {key!r} is the MCP server's to set")

    @property
    def run_timeout(self) -> int:
        """The default timeout of a run."""
        return int(self.run_options.timeout)

    @property
    def max_output_bytes(self) -> int:
        return self.run_options.max_output_bytes

    @property
    def http_transport(self) -> Transport:
        return "json" if self.json_response else "sse"
