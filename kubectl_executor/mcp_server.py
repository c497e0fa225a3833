"""MCP server: the executor as tools for any agent host that speaks the Model Context Protocol.

``kubectl-executor mcp`` (optional extra ``kubectl-executor[mcp]``, built on the official MCP
Python SDK) serves over stdio (one client per process) or streamable HTTP (one MCP session per
``Mcp-Session-Id``). Each MCP session gets ONE pod, created on its first tool call and deleted
when the session ends (stdin closes, the client sends DELETE, the server shuts down) or idles
out (a reaper thread). A server killed with SIGKILL leaves pods labelled with its pid, which
``kubectl-executor gc`` deletes.

Blocking executor calls run in one worker thread per session, so the event loop keeps serving
other sessions; a cancelled request stops its run in the pod. Anything that goes wrong reaches
the model as a tool error (``isError``) with a message that says what and why; a non-zero exit of
the user's code is a result, never an error.

The 2026-07-28 protocol era has no sessions, so over HTTP ``server/discover`` is refused and the
SDK's clients fall back to the ``initialize`` handshake (stdio serves both eras).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

try:
    import anyio
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.shared.exceptions import MCPError
    from mcp.types import METHOD_NOT_FOUND, CallToolResult, TextContent, ToolAnnotations
except ImportError as exc:  # pragma: no cover - exercised in a subprocess without the SDK
    raise ImportError(
        "the kubectl-executor MCP server needs the MCP Python SDK: pip install 'kubectl-executor[mcp]'"
    ) from exc
from pydantic import BaseModel, Field

from . import __version__
from .errors import (
    ForbiddenError,
    InvalidInputError,
    KubectlExecutorError,
    KubectlNotFoundError,
    NotFoundError,
    OutcomeUnknownError,
    PodStartError,
    RemoteNotFoundError,
    StartupTimeoutError,
    TransferError,
)
from .executor import KubernetesCommandLineCodeExecutor
from .kubectl import ClusterAccess, Kubectl
from .languages import code_filename, quiet_pip, resolve_language, should_execute
from .protocol import RunRequest
from .transfer import TransferLimits, pod_relative

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .pool import WarmPool
    from .protocol import ExecResult

logger = logging.getLogger(__name__)

T = TypeVar("T")

STDIO_SESSION = "stdio"
TOOL_RUNNER_FILE = ".kx-tool-runner.py"
HELPER_DIR = ".kx-mcp"  # in-pod helper scripts; hidden from list_files like the tool runner
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024
_MISSING_RUNNER = "no tool runner at"
_NO_SUCH = "kubectl-executor: no such "
_NOT_A_DIR = "kubectl-executor: not a directory: "

INSTRUCTIONS = """\
Runs code in a Kubernetes pod that belongs to this session: created on the first tool call, \
deleted when the session ends or has been idle too long. Files persist between calls in the \
workspace (the pod's working directory). A non-zero exit_code is the program's own result (124: it \
timed out), not a tool failure. Tool errors mean the sandbox could not do what was asked."""

# Fixed in-pod scripts: their inputs come from the environment of the run, never spliced in.
RUN_FILE_SCRIPT = """\
# kubectl-executor mcp: run a file that is already in the workspace.
f=$KX_MCP_FILE
if [ ! -f "$f" ]; then echo "kubectl-executor: no such file: $f" >&2; exit 2; fi
case "$KX_MCP_RUNNER" in
  python) if command -v python3 >/dev/null 2>&1; then exec python3 "$f"; else exec python "$f"; fi ;;
  sh) exec sh "$f" ;;
  bash) exec bash "$f" ;;
  pwsh) exec pwsh -NoLogo -NonInteractive -File "$f" ;;
esac
echo "kubectl-executor: unknown runner $KX_MCP_RUNNER" >&2
exit 2
"""

LIST_SCRIPT = """\
# kubectl-executor mcp: list a workspace directory as NUL-separated (type, size, path) records.
d=$KX_MCP_DIR
if [ ! -e "$d" ]; then echo "kubectl-executor: no such directory: $d" >&2; exit 2; fi
if [ ! -d "$d" ]; then echo "kubectl-executor: not a directory: $d" >&2; exit 2; fi
cd -- "$d" || exit 2
if [ "$KX_MCP_RECURSIVE" = 1 ]; then set -- ; else set -- -maxdepth 1; fi
find . -mindepth 1 "$@" 2>/dev/null | {
  n=0
  while IFS= read -r f; do
    if [ "$n" -ge "$KX_MCP_MAX" ]; then printf 'more\\0\\0\\0'; break; fi
    s=
    if [ -L "$f" ]; then t=link
    elif [ -d "$f" ]; then t=dir
    elif [ -f "$f" ]; then t=file; s=$(wc -c <"$f" 2>/dev/null | tr -d ' ')
    elif [ -e "$f" ]; then t=other
    else continue
    fi
    printf '%s\\0%s\\0%s\\0' "$t" "$s" "${f#./}"
    n=$((n + 1))
  done
}
"""

EXTENSION_RUNNERS = {".py": "python", ".sh": "sh", ".bash": "bash", ".ps1": "pwsh"}
RUNNER_NAMES = ("python", "sh", "bash", "pwsh")


# -- configuration ----------------------------------------------------------------------------


@dataclass(frozen=True)
class McpConfig:
    """What the server needs besides the tools: executor options and its own limits.

    ``executor_kwargs`` go to :class:`KubernetesCommandLineCodeExecutor` (``start`` and ``pool``
    are the server's). ``idle_timeout`` 0 keeps idle sessions' pods until the session ends.
    """

    executor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    idle_timeout: float = 600.0
    pool_size: int = 0
    max_sessions: int = 16
    max_file_bytes: int = 10 * 1024 * 1024
    max_timeout: int = 600
    max_list_entries: int = 1000

    def __post_init__(self) -> None:
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
        if self.pool_size and self.executor_kwargs.get("network_policy"):
            raise InvalidInputError("a warm pool's pods have no NetworkPolicy: do not combine the two")
        for key in ("start", "pool", "pod_name", "attach", "shared_resources"):
            if key in self.executor_kwargs:
                raise InvalidInputError(f"executor option {key!r} is the MCP server's to set")


# -- results ----------------------------------------------------------------------------------


class _PodResult(BaseModel):
    pod: str | None = Field(None, description="the session's pod")
    notice: str | None = Field(None, description="something the caller should know (e.g. a fresh pod)")


class RunResult(_PodResult):
    """What a program did: its own exit code and output (a non-zero exit is not a tool error)."""

    exit_code: int = Field(description="the program's exit code (124: timed out, 128+N: killed by signal N)")
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = Field(False, description="output went over the budget: head and tail are kept")
    truncation_note: str | None = Field(None, description="what was cut and where the full output is")
    file: str | None = Field(None, description="the file in the pod that ran (or was saved)")


class FunctionError(BaseModel):
    type: str
    message: str
    traceback: str


class CallResult(RunResult):
    """A function call: its return value (JSON) or the exception it raised, plus what it printed."""

    status: Literal["returned", "raised"] | None = Field(
        None, description="None: the runner reported nothing"
    )
    value: Any = Field(None, description="the return value, when JSON-serialisable")
    value_repr: str | None = Field(None, description="repr() of a return value that is not JSON")
    error: FunctionError | None = None


class UploadResult(_PodResult):
    path: str = Field(description="the file's path in the pod")
    size: int
    sha256: str


class DownloadResult(_PodResult):
    path: str
    size: int
    sha256: str
    content_base64: str = Field(description="the file's bytes, base64")
    text: str | None = Field(None, description="the content as text, when it is valid UTF-8")


class FileEntry(BaseModel):
    path: str = Field(description="relative to the listed directory")
    type: Literal["file", "dir", "link", "other"]
    size: int | None = None


class ListResult(_PodResult):
    path: str
    entries: list[FileEntry]
    truncated: bool = Field(False, description="there were more entries than listed")


class ResetResult(_PodResult):
    deleted_pod: str | None = None
    message: str


# -- tool implementations (blocking; run in the session's worker thread) -----------------------


def _exec(
    executor: KubernetesCommandLineCodeExecutor,
    code: bytes,
    relpath: str,
    runner: str | None,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> ExecResult:
    """One run through the executor's exec path with a per-call timeout and environment.

    The executor's public ``execute_code_blocks`` has neither, so this reaches for its internal
    run path (same package); it is the only place that does."""
    request = RunRequest(
        code=code,
        work_dir=str(executor.work_dir),
        path=relpath,
        runner=runner,
        timeout=float(timeout),
        budget=executor._max_output_bytes,
        env={**executor._extra_env, **(env or {})},
    )
    return executor._execute(request, None)


def _truncation_note(done: ExecResult, budget: int) -> str | None:
    if not done.truncated:
        return None
    where = f"; the full output is in the pod: {', '.join(done.log_files)}" if done.log_files else ""
    return f"output over {budget} bytes per stream was cut (head and tail kept){where}"


def _run_result(done: ExecResult, executor: KubernetesCommandLineCodeExecutor, file: str) -> RunResult:
    return RunResult(
        pod=executor.pod_name,
        exit_code=done.exit_code,
        stdout=done.stdout.decode(errors="replace"),
        stderr=done.stderr.decode(errors="replace"),
        timed_out=done.timed_out,
        truncated=done.truncated,
        truncation_note=_truncation_note(done, executor._max_output_bytes),
        file=file,
    )


def _check_timeout(timeout: int | None, default: int, limit: int) -> int:
    if timeout is None:
        return default
    if timeout < 1 or timeout > limit:
        raise ToolError(f"timeout must be between 1 and {limit} seconds, got {timeout}")
    return timeout


def run_code(
    executor: KubernetesCommandLineCodeExecutor, language: str, code: str, timeout: int
) -> RunResult:
    """Write ``code`` to a file in the workspace and run it (or only save it, by policy)."""
    lang = resolve_language(language)
    if lang is None:
        raise ToolError(
            f"unsupported language {language!r}: use python, bash, sh or pwsh "
            "(javascript, html and css are saved, not run)"
        )
    if lang.runner in ("sh", "bash"):
        code = quiet_pip(code)
    filename = code_filename(code, lang)
    path = f"{executor.work_dir}/{filename}"
    runner = lang.runner if should_execute(language, executor.execution_policies) else None
    done = _exec(executor, code.encode(), filename, runner, timeout)
    if runner is None:
        return RunResult(
            pod=executor.pod_name, exit_code=0, stdout=f"Code saved to {path}\n", stderr="", file=path
        )
    return _run_result(done, executor, path)


def run_file(
    executor: KubernetesCommandLineCodeExecutor, path: str, language: str | None, timeout: int
) -> RunResult:
    """Run a file that is already in the workspace, with the interpreter its extension names."""
    work = str(executor.work_dir)
    _, rel = pod_relative(path, [work])
    if language is not None:
        lang = resolve_language(language)
        runner = lang.runner if lang else None
        if runner is None:
            raise ToolError(f"cannot run {language!r} files: use python, bash, sh or pwsh")
    else:
        runner = EXTENSION_RUNNERS.get(PurePosixPath(rel).suffix.lower())
        if runner is None:
            raise ToolError(f"cannot tell how to run {rel!r} from its extension: pass language")
    target = f"{work.rstrip('/')}/{rel}"
    env = {"KX_MCP_FILE": target, "KX_MCP_RUNNER": runner}
    done = _exec(executor, RUN_FILE_SCRIPT.encode(), f"{HELPER_DIR}/run-file.sh", "sh", timeout, env)
    if done.exit_code == 2 and done.stderr.startswith(_NO_SUCH.encode()):
        raise ToolError(f"no such file in the workspace: {rel}")
    return _run_result(done, executor, target)


def call_function(
    executor: KubernetesCommandLineCodeExecutor,
    module: str,
    function: str,
    arguments: dict[str, Any],
    timeout: int,
    install: bool,
) -> CallResult:
    """``module.function(**arguments)`` in the pod (the module uploaded into the workspace)."""
    if install:
        executor.install_pod_dispatcher(default_module=module, runner_filename=TOOL_RUNNER_FILE)
    result = executor.execute_tool_function(
        arguments, function, module=module, runner_script=TOOL_RUNNER_FILE, timeout=timeout
    )
    if result.exit_code == 2 and _MISSING_RUNNER in result.stderr and not install:
        # The runner was removed from the workspace; nothing ran, so installing and calling again is safe.
        return call_function(executor, module, function, arguments, timeout, install=True)
    tool = result.tool_result
    error = None
    if tool is not None and tool.error is not None:
        error = FunctionError(
            type=tool.error.type, message=tool.error.message, traceback=tool.error.traceback
        )
    budget = executor._max_output_bytes
    note = None
    if result.truncated:
        where = f"; the full output is in the pod: {', '.join(result.log_files)}" if result.log_files else ""
        note = f"output over {budget} bytes per stream was cut (head and tail kept){where}"
    return CallResult(
        pod=executor.pod_name,
        exit_code=result.exit_code,
        stdout=tool.stdout if tool is not None else result.stdout,
        stderr=tool.stderr if tool is not None else result.stderr,
        timed_out=result.timed_out,
        truncated=result.truncated,
        truncation_note=note,
        status=tool.status if tool is not None else None,
        value=tool.value if tool is not None and tool.value_is_json else None,
        value_repr=tool.value_repr if tool is not None else None,
        error=error,
    )


def upload_file(
    executor: KubernetesCommandLineCodeExecutor,
    path: str,
    content_base64: str | None,
    text: str | None,
    max_bytes: int,
) -> UploadResult:
    """Write a file into the workspace from base64 (any bytes) or text (UTF-8)."""
    if (content_base64 is None) == (text is None):
        raise ToolError("give exactly one of content_base64 (any bytes) and text (UTF-8)")
    if content_base64 is not None:
        if len(content_base64) > (max_bytes + 2) // 3 * 4 + 4:
            raise ToolError(f"the file is larger than the upload cap of {max_bytes} bytes")
        try:
            data = base64.b64decode(content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ToolError(f"content_base64 is not valid base64: {exc}") from exc
    else:
        assert text is not None
        data = text.encode("utf-8")
    if len(data) > max_bytes:
        raise ToolError(f"the file is {len(data)} bytes, over the upload cap of {max_bytes} bytes")
    written = executor.upload_file_content(path, data)
    return UploadResult(
        pod=executor.pod_name, path=written, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )


def download_file(executor: KubernetesCommandLineCodeExecutor, path: str, max_bytes: int) -> DownloadResult:
    """Read a file of the workspace (its bytes checked by the library's safe download)."""
    limits = TransferLimits(max_total_bytes=max_bytes, max_members=16)
    with tempfile.TemporaryDirectory(prefix="kx-mcp-") as tmp:
        local = Path(tmp) / "file"
        try:
            executor.download_file(path, local, limits=limits)
        except RemoteNotFoundError as exc:
            raise ToolError(f"no such file in the workspace: {path}") from exc
        except TransferError as exc:
            if "exceeds" in str(exc):
                raise ToolError(f"{path} is larger than the download cap of {max_bytes} bytes") from exc
            raise
        data = local.read_bytes()
    try:
        text: str | None = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    _, rel = pod_relative(path, [str(executor.work_dir), "/tmp/kx-logs"])
    shown = path if PurePosixPath(path).is_absolute() else f"{executor.work_dir}/{rel}"
    return DownloadResult(
        pod=executor.pod_name,
        path=shown,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_base64=base64.b64encode(data).decode("ascii"),
        text=text,
    )


def list_files(
    executor: KubernetesCommandLineCodeExecutor, path: str, recursive: bool, max_entries: int
) -> ListResult:
    """The entries of a workspace directory (the server's own helper files left out)."""
    work = str(executor.work_dir)
    _, rel = pod_relative(path, [work], allow_root=True)
    target = work if rel == "." else f"{work.rstrip('/')}/{rel}"
    env = {
        "KX_MCP_DIR": target,
        "KX_MCP_RECURSIVE": "1" if recursive else "0",
        "KX_MCP_MAX": str(max_entries),
    }
    done = _exec(executor, LIST_SCRIPT.encode(), f"{HELPER_DIR}/list.sh", "sh", 60, env)
    err = done.stderr.decode(errors="replace")
    if done.exit_code != 0:
        if err.startswith(_NO_SUCH):
            raise ToolError(f"no such directory in the workspace: {rel}")
        if err.startswith(_NOT_A_DIR):
            raise ToolError(f"not a directory: {rel} (use download_file to read a file)")
        raise ToolError(f"listing {rel} failed with exit code {done.exit_code}: {err.strip()[:500]}")
    entries, more = parse_listing(done.stdout, done.truncated)
    if rel == ".":
        entries = [e for e in entries if not PurePosixPath(e.path).parts[0].startswith(".kx-")]
    entries.sort(key=lambda e: e.path)
    return ListResult(pod=executor.pod_name, path=rel, entries=entries, truncated=more)


def parse_listing(stdout: bytes, cut: bool) -> tuple[list[FileEntry], bool]:
    """The script's records; ``cut`` (the output budget kept head and tail) keeps whole records of the head."""
    more = cut
    if cut:
        marker = stdout.find(b"\n[... ")
        stdout = stdout[: marker if marker >= 0 else len(stdout)]
        stdout = stdout[: stdout.rfind(b"\0") + 1]
    fields = stdout.split(b"\0")[:-1]
    entries: list[FileEntry] = []
    for i in range(0, len(fields) - len(fields) % 3, 3):
        kind, size, name = (f.decode(errors="replace") for f in fields[i : i + 3])
        if kind == "more":
            more = True
            continue
        if kind not in ("file", "dir", "link", "other") or not name:
            continue
        entries.append(FileEntry(path=name, type=kind, size=int(size) if size.isdigit() else None))
    return entries, more


# -- text renderings (what a host shows next to the structured result) -------------------------


def render_run(result: RunResult) -> str:
    lines = [f"exit code {result.exit_code}" + (" (timed out)" if result.timed_out else "")]
    if isinstance(result, CallResult) and result.status == "returned":
        shown = result.value_repr if result.value is None and result.value_repr else repr(result.value)
        lines.append(f"returned: {shown}")
    elif isinstance(result, CallResult) and result.error is not None:
        lines.append(f"raised {result.error.type}: {result.error.message}")
    if result.stdout:
        lines += ["--- stdout ---", result.stdout.rstrip("\n")]
    if result.stderr:
        lines += ["--- stderr ---", result.stderr.rstrip("\n")]
    if isinstance(result, CallResult) and result.error is not None and result.error.traceback:
        lines += ["--- traceback ---", result.error.traceback.rstrip("\n")]
    if result.truncation_note:
        lines.append(f"note: {result.truncation_note}")
    return _with_notice(result, "\n".join(lines))


def _with_notice(result: _PodResult, text: str) -> str:
    return f"{result.notice}\n{text}" if result.notice else text


def render_download(result: DownloadResult) -> str:
    head = f"{result.path}: {result.size} bytes, sha256 {result.sha256}"
    body = result.text if result.text is not None else "(binary content: see content_base64)"
    return _with_notice(result, f"{head}\n{body}")


def render_list(result: ListResult) -> str:
    lines = [
        f"{result.path}: {len(result.entries)} entries" + (" (more not listed)" if result.truncated else "")
    ]
    for e in result.entries:
        suffix = "/" if e.type == "dir" else (" -> (link)" if e.type == "link" else "")
        size = f"  {e.size}" if e.size is not None else ""
        lines.append(f"{e.path}{suffix}{size}")
    return _with_notice(result, "\n".join(lines))


def _tool_result(model: _PodResult, text: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=model.model_dump(mode="json")
    )


def tool_error(exc: BaseException) -> ToolError:
    """A clear message for the model, whatever failed."""
    if isinstance(exc, ToolError):
        return exc
    if isinstance(exc, OutcomeUnknownError):
        text = f"the result of this run was lost and the run was NOT repeated (it may or may not have run): {exc}"
    elif isinstance(exc, PodStartError):
        text = f"the sandbox pod cannot start: {exc.reason}: {exc.message}"
    elif isinstance(exc, StartupTimeoutError):
        text = f"the sandbox pod did not become ready in time: {exc}"
    elif isinstance(exc, KubectlNotFoundError):
        text = f"the server cannot reach the cluster: {exc}"
    elif isinstance(exc, ForbiddenError):
        text = f"the cluster refused (RBAC): {exc.message}"
    elif isinstance(exc, (InvalidInputError, TypeError, ValueError)):
        text = str(exc)
    elif isinstance(exc, KubectlExecutorError):
        text = f"{type(exc).__name__}: {exc}"
    else:
        logger.error("unexpected error in a tool call", exc_info=exc)
        text = f"internal error ({type(exc).__name__}): {exc}"
    return ToolError(text)


# -- sessions ---------------------------------------------------------------------------------

ExecutorFactory = Callable[[], KubernetesCommandLineCodeExecutor]


class Workspace:
    """One MCP session's pod: started on first use, one worker thread for its blocking calls."""

    def __init__(self, key: str, factory: ExecutorFactory, *, notice: str | None = None) -> None:
        self.key = key
        self._factory = factory
        self._lock = threading.Lock()
        self._executor: KubernetesCommandLineCodeExecutor | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kx-mcp")
        self._closed = False
        self.dispatcher_installed = False
        self.notice = notice
        self.busy = 0
        self.last_used = time.monotonic()

    @property
    def pod_name(self) -> str | None:
        ex = self._executor
        return ex.pod_name if ex is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def ensure(self) -> KubernetesCommandLineCodeExecutor:
        """The started executor (created and started now if needed). Worker thread only."""
        with self._lock:
            if self._closed:
                raise ToolError("this MCP session has ended")
            ex = self._executor
        if ex is not None:
            return ex
        ex = self._factory()
        with self._lock:
            if self._closed:
                ex.stop()
                raise ToolError("this MCP session has ended")
            self._executor = ex
            self.dispatcher_installed = False
        try:
            ex.start()
        except BaseException:
            with self._lock:
                if self._executor is ex:
                    self._executor = None
            ex.stop()
            raise
        if self._closed:  # close() raced with the start: make sure the new pod goes too
            ex.stop()
            raise ToolError("this MCP session has ended")
        logger.info("MCP session %s: pod %s", self.key, ex.pod_name)
        return ex

    def discard(self) -> str | None:
        """Delete the pod (the next call starts a fresh one); returns its name."""
        with self._lock:
            ex, self._executor = self._executor, None
            self.dispatcher_installed = False
        if ex is None:
            return None
        try:
            ex.stop()
        except KubectlExecutorError as exc:
            logger.warning("could not delete pod %s: %s", ex.pod_name, exc)
        return ex.pod_name

    async def run(self, job: Callable[[Workspace], T]) -> T:
        """Run ``job`` in this session's worker thread; a cancelled caller stops the run in the pod."""
        try:
            future = self._worker.submit(job, self)
        except RuntimeError as exc:  # the worker was shut down: the session ended meanwhile
            raise ToolError("this MCP session has ended") from exc
        try:
            return await asyncio.wrap_future(future)
        except BaseException:
            if not future.done():
                self._interrupt()
            raise

    def _interrupt(self) -> None:
        ex = self._executor
        if ex is not None:
            threading.Thread(target=ex.cancel, name="kx-mcp-cancel", daemon=True).start()

    def close(self) -> None:
        """End the session: delete its pod now, even with a run in flight (deleting it stops the run)."""
        with self._lock:
            self._closed = True
        name = self.discard()
        self._worker.shutdown(wait=False, cancel_futures=True)
        if name:
            logger.info("MCP session %s ended: pod %s deleted", self.key, name)


class SessionRegistry:
    """MCP session key -> :class:`Workspace`; reaps idle ones from a background thread."""

    def __init__(
        self,
        factory: ExecutorFactory,
        *,
        idle_timeout: float,
        max_sessions: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._factory = factory
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Workspace] = {}
        self._expired: set[str] = set()
        self._closing = False
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        self._closers: list[threading.Thread] = []

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, key: str) -> Workspace | None:
        return self._sessions.get(key)

    def acquire(self, key: str) -> Workspace:
        """The session's workspace, marked busy (creating it is cheap: the pod comes on first use)."""
        with self._lock:
            if self._closing:
                raise ToolError("the server is shutting down")
            ws = self._sessions.get(key)
            if ws is None:
                if len(self._sessions) >= self.max_sessions:
                    raise ToolError(
                        f"too many MCP sessions with a pod ({self.max_sessions}); end one, or raise the "
                        "server's --max-sessions"
                    )
                notice = None
                if key in self._expired:
                    self._expired.discard(key)
                    notice = (
                        f"note: this session's previous pod was idle for more than {self.idle_timeout:g}s and "
                        "was deleted; this is a fresh pod with an empty workspace"
                    )
                ws = Workspace(key, self._factory, notice=notice)
                self._sessions[key] = ws
            ws.busy += 1
            ws.last_used = self._clock()
            return ws

    def release(self, ws: Workspace) -> None:
        with self._lock:
            ws.busy -= 1
            ws.last_used = self._clock()

    def end(self, key: str, *, wait: bool = False) -> None:
        """The MCP session is over: delete its pod (in the background unless ``wait``)."""
        with self._lock:
            ws = self._sessions.pop(key, None)
            self._expired.discard(key)
        if ws is None:
            return
        if wait:
            ws.close()
            return
        closer = threading.Thread(target=ws.close, name="kx-mcp-close", daemon=True)
        with self._lock:
            self._closers = [t for t in self._closers if t.is_alive()] + [closer]
        closer.start()

    def reap(self) -> list[str]:
        """End the sessions idle for longer than ``idle_timeout``; returns their keys."""
        if self.idle_timeout <= 0:
            return []
        now = self._clock()
        with self._lock:
            idle = [
                key
                for key, ws in self._sessions.items()
                if ws.busy == 0 and now - ws.last_used >= self.idle_timeout
            ]
            gone = [self._sessions.pop(key) for key in idle]
            if len(self._expired) > 10_000:  # HTTP sessions that never came back
                self._expired.clear()
            self._expired.update(idle)
        for ws in gone:
            if ws.pod_name:
                logger.info(
                    "MCP session %s idle for %gs: deleting pod %s", ws.key, self.idle_timeout, ws.pod_name
                )
            ws.close()
        return idle

    def start_reaper(self) -> None:
        if self.idle_timeout <= 0 or (self._reaper is not None and self._reaper.is_alive()):
            return
        self._stop.clear()
        tick = min(max(self.idle_timeout / 4, 0.1), 30.0)

        def loop() -> None:
            while not self._stop.wait(tick):
                try:
                    self.reap()
                except Exception:
                    logger.exception("the idle-session reaper failed; it keeps going")

        self._reaper = threading.Thread(target=loop, name="kx-mcp-reaper", daemon=True)
        self._reaper.start()

    def close_all(self) -> None:
        """Stop the reaper and delete every session's pod (in parallel). Idempotent; a second
        caller waits for the deletions the first one started."""
        self._stop.set()
        with self._lock:
            self._closing = True
            sessions = list(self._sessions.values())
            self._sessions.clear()
            started = [threading.Thread(target=ws.close, name="kx-mcp-close", daemon=True) for ws in sessions]
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


# -- the server -------------------------------------------------------------------------------


def session_key(ctx: Context) -> str:
    """stdio serves one client per process; over HTTP the SDK's session id names the session."""
    request = ctx.request_context.request
    if request is None:
        return STDIO_SESSION
    headers = getattr(request, "headers", None)
    session_id = headers.get("mcp-session-id") if headers is not None else None
    if not session_id:
        raise ToolError(
            "this request belongs to no MCP session (no Mcp-Session-Id): the server keeps one pod per "
            "session, so connect with the initialize handshake"
        )
    return f"http:{session_id}"


async def _sessions_need_handshake(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Over HTTP the 2026-07-28 era has no sessions: refuse its discovery, clients fall back."""
    if ctx.method == "server/discover" and ctx.request is not None:
        raise MCPError(
            code=METHOD_NOT_FOUND,
            message="kubectl-executor keeps one pod per MCP session: use the initialize handshake over HTTP",
        )
    return await call_next(ctx)


class KubectlExecutorMcp:
    """The MCP server: tools, sessions, optional warm pool, and the two transports."""

    def __init__(
        self, config: McpConfig | None = None, *, executor_factory: ExecutorFactory | None = None
    ) -> None:
        self.config = config or McpConfig()
        self._executor_factory = executor_factory
        self._pool: WarmPool | None = None
        self._pool_kubectl: Kubectl | None = None
        self._state_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self.sessions = SessionRegistry(
            self._make_executor, idle_timeout=self.config.idle_timeout, max_sessions=self.config.max_sessions
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
                middleware=[_sessions_need_handshake],
            )
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        self._register_tools()

    # -- lifecycle ------------------------------------------------------------------------------

    def _make_executor(self) -> KubernetesCommandLineCodeExecutor:
        if self._executor_factory is not None:
            return self._executor_factory()
        kwargs = dict(self.config.executor_kwargs)
        kwargs.setdefault("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)
        return KubernetesCommandLineCodeExecutor(start=False, pool=self._pool, **kwargs)

    def check_options(self) -> None:
        """Build (and drop) one executor, so that bad options or a missing kubectl fail at start-up
        rather than in every tool call. Touches no cluster."""
        self._make_executor().stop()

    def open(self) -> None:
        """Start the reaper (and the warm pool); the transports call this."""
        with self._state_lock:
            self.sessions.reopen()
            if self.config.pool_size and self._pool is None and self._executor_factory is None:
                self._pool, self._pool_kubectl = _make_pool(self.config)
        self.sessions.start_reaper()

    def close(self) -> None:
        """Delete every session's pod and the pool's. Idempotent; a concurrent caller (the lifespan
        and a SIGTERM handler) waits until the first one is done."""
        with self._close_lock:
            self.sessions.close_all()
            with self._state_lock:
                pool, self._pool = self._pool, None
                kubectl, self._pool_kubectl = self._pool_kubectl, None
            try:
                if pool is not None:
                    pool.close()
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

    async def run_stdio(self) -> None:
        """Serve one client on stdin/stdout until stdin closes; then its pod is deleted."""
        await self.mcp.run_stdio_async()

    def serve_stdio(self) -> None:
        anyio.run(self.run_stdio)

    def http_app(self, *, path: str = "/mcp", host: str = "127.0.0.1") -> ASGIApp:
        """The streamable-HTTP ASGI app; a session's DELETE deletes its pod at once."""
        body = max(4 * 1024 * 1024, self.config.max_file_bytes * 4 // 3 + 1024 * 1024)
        app = self.mcp.streamable_http_app(
            streamable_http_path=path,
            max_request_body_size=body,
            session_idle_timeout=self.config.idle_timeout or None,
            host=host,
        )
        return _SessionEndWatcher(app, lambda sid: self.sessions.end(f"http:{sid}"))

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

    # -- tools ----------------------------------------------------------------------------------

    async def _call(self, ctx: Context, job: Callable[[Workspace], T]) -> T:
        ws = self.sessions.acquire(session_key(ctx))
        try:
            return await ws.run(job)
        except BaseException as exc:
            if isinstance(exc, Exception):
                raise tool_error(exc) from exc
            raise
        finally:
            self.sessions.release(ws)

    def _timeout(self, timeout: int | None, ws: Workspace) -> int:
        if timeout is not None:
            return _check_timeout(timeout, 0, self.config.max_timeout)
        return ws.ensure().timeout

    def _notice(self, ws: Workspace, result: _PodResult) -> None:
        if ws.notice:
            result.notice, ws.notice = ws.notice, None

    def _guarded(self, ws: Workspace, fn: Callable[[KubernetesCommandLineCodeExecutor], T]) -> T:
        """Run ``fn`` on the session's executor; a pod that vanished is dropped (the next call
        starts a fresh one) and the error says so."""
        ex = ws.ensure()
        try:
            return fn(ex)
        except NotFoundError as exc:
            name = ws.discard()
            raise ToolError(
                f"the session's pod {name} is gone ({exc.message}); the next call starts a fresh pod "
                "with an empty workspace"
            ) from exc

    def _register_tools(self) -> None:
        server = self.mcp
        config = self.config

        async def run_code_tool(
            language: Annotated[str, Field(description="python, bash, sh or pwsh")],
            code: Annotated[
                str, Field(description="the program; a first line '# filename: x.py' names its file")
            ],
            ctx: Context,
            timeout: Annotated[
                int | None,
                Field(description="seconds before it is stopped (exit 124); default: the server's"),
            ] = None,
        ) -> Annotated[CallToolResult, RunResult]:
            """Run code in this session's sandbox pod. The file stays in the workspace; a non-zero
            exit code is the program's result, 124 means it timed out."""

            def job(ws: Workspace) -> RunResult:
                seconds = self._timeout(timeout, ws)
                result = self._guarded(ws, lambda ex: run_code(ex, language, code, seconds))
                self._notice(ws, result)
                return result

            result = await self._call(ctx, job)
            return _tool_result(result, render_run(result))

        async def run_file_tool(
            path: Annotated[str, Field(description="a file in the workspace (relative path)")],
            ctx: Context,
            timeout: Annotated[
                int | None, Field(description="seconds before it is stopped (exit 124)")
            ] = None,
            language: Annotated[
                str | None, Field(description="python, bash, sh or pwsh; default: from the extension")
            ] = None,
        ) -> Annotated[CallToolResult, RunResult]:
            """Run a file that is already in the workspace (uploaded, or written by earlier code)."""

            def job(ws: Workspace) -> RunResult:
                seconds = self._timeout(timeout, ws)
                result = self._guarded(ws, lambda ex: run_file(ex, path, language, seconds))
                self._notice(ws, result)
                return result

            result = await self._call(ctx, job)
            return _tool_result(result, render_run(result))

        async def upload_file_tool(
            path: Annotated[str, Field(description="where in the workspace (relative path)")],
            ctx: Context,
            content_base64: Annotated[
                str | None, Field(description="the bytes, base64 (binary-safe)")
            ] = None,
            text: Annotated[
                str | None, Field(description="or: the content as text (written as UTF-8)")
            ] = None,
        ) -> Annotated[CallToolResult, UploadResult]:
            """Write a file into the workspace (replacing it whole). Give content_base64 or text."""

            def job(ws: Workspace) -> UploadResult:
                result = self._guarded(
                    ws, lambda ex: upload_file(ex, path, content_base64, text, config.max_file_bytes)
                )
                self._notice(ws, result)
                return result

            result = await self._call(ctx, job)
            return _tool_result(result, _with_notice(result, f"wrote {result.path} ({result.size} bytes)"))

        async def download_file_tool(
            path: Annotated[str, Field(description="a file in the workspace (relative path)")],
            ctx: Context,
        ) -> Annotated[CallToolResult, DownloadResult]:
            """Read a file from the workspace: its bytes as base64, and as text when it is UTF-8."""

            def job(ws: Workspace) -> DownloadResult:
                result = self._guarded(ws, lambda ex: download_file(ex, path, config.max_file_bytes))
                self._notice(ws, result)
                return result

            result = await self._call(ctx, job)
            return _tool_result(result, render_download(result))

        async def call_function_tool(
            module: Annotated[str, Field(description="a module in the workspace, e.g. 'tools' for tools.py")],
            function: Annotated[str, Field(description="the function's name")],
            ctx: Context,
            arguments: Annotated[
                dict[str, Any] | None, Field(description="keyword arguments (a JSON object)")
            ] = None,
            timeout: Annotated[
                int | None, Field(description="seconds before it is stopped (exit 124)")
            ] = None,
        ) -> Annotated[CallToolResult, CallResult]:
            """Call module.function(**arguments) in the pod (upload the module first); returns its
            value, or the exception it raised, and what it printed."""

            def job(ws: Workspace) -> CallResult:
                seconds = self._timeout(timeout, ws)
                install = not ws.dispatcher_installed

                def go(ex: KubernetesCommandLineCodeExecutor) -> CallResult:
                    result = call_function(ex, module, function, dict(arguments or {}), seconds, install)
                    ws.dispatcher_installed = True
                    return result

                result = self._guarded(ws, go)
                self._notice(ws, result)
                return result

            result = await self._call(ctx, job)
            return _tool_result(result, render_run(result))

        async def list_files_tool(
            ctx: Context,
            path: Annotated[str, Field(description="a directory in the workspace")] = ".",
            recursive: Annotated[bool, Field(description="also list subdirectories' content")] = False,
        ) -> Annotated[CallToolResult, ListResult]:
            """List a directory of the workspace: paths, types and sizes."""

            def job(ws: Workspace) -> ListResult:
                result = self._guarded(
                    ws, lambda ex: list_files(ex, path, recursive, config.max_list_entries)
                )
                self._notice(ws, result)
                return result

            result = await self._call(ctx, job)
            return _tool_result(result, render_list(result))

        async def reset_workspace_tool(ctx: Context) -> Annotated[CallToolResult, ResetResult]:
            """Delete this session's pod with all its files and processes; the next call starts a
            fresh one."""

            def job(ws: Workspace) -> ResetResult:
                name = ws.discard()
                ws.notice = None
                message = (
                    f"pod {name} deleted; the next call starts a fresh pod"
                    if name
                    else "no pod yet; the next call starts a fresh one"
                )
                return ResetResult(pod=None, deleted_pod=name, message=message)

            result = await self._call(ctx, job)
            return _tool_result(result, result.message)

        read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
        runs = ToolAnnotations(destructive_hint=True, open_world_hint=True)
        server.add_tool(run_code_tool, name="run_code", annotations=runs)
        server.add_tool(run_file_tool, name="run_file", annotations=runs)
        server.add_tool(
            upload_file_tool,
            name="upload_file",
            annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False),
        )
        server.add_tool(download_file_tool, name="download_file", annotations=read_only)
        server.add_tool(call_function_tool, name="call_function", annotations=runs)
        server.add_tool(list_files_tool, name="list_files", annotations=read_only)
        server.add_tool(
            reset_workspace_tool,
            name="reset_workspace",
            annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False),
        )


class _SessionEndWatcher:
    """ASGI wrapper: a DELETE that the SDK accepted ends that MCP session's pod."""

    def __init__(self, app: ASGIApp, on_end: Callable[[str], None]) -> None:
        self.app = app
        self._on_end = on_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "DELETE":
            await self.app(scope, receive, send)
            return
        session_id = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"mcp-session-id"), None
        )
        status: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, watch)
        if session_id and status and 200 <= status[0] < 300:
            self._on_end(session_id)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), so the URL is known before serving starts."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _make_pool(config: McpConfig) -> tuple[WarmPool, Kubectl]:
    """A warm pool with the executors' pod options, on a kubectl shared by its refill thread."""
    from .pool import WarmPool

    kw = dict(config.executor_kwargs)
    kubectl = Kubectl(
        ClusterAccess(
            kubectl=kw.get("kubectl"),
            kubeconfig=kw.get("kubeconfig"),
            context=kw.get("context"),
            namespace=kw.get("namespace"),
            remote_control_plane=kw.get("remote_control_plane"),
            kube_token=kw.get("kube_token"),
            certificate_authority=kw.get("certificate_authority"),
            insecure_skip_tls_verify=bool(kw.get("insecure_skip_tls_verify")),
        ),
        runner=kw.get("runner"),
    )
    env = {item["key"]: item["value"] for item in kw.get("env_vars") or []}
    options = {
        k: kw[k]
        for k in (
            "resources",
            "hardened",
            "run_as_user",
            "read_only_root_filesystem",
            "runtime_class_name",
            "active_deadline_seconds",
            "startup_timeout",
            "labels",
            "pod_overrides",
        )
        if kw.get(k) is not None
    }
    try:
        pool = WarmPool(
            config.pool_size,
            kw.get("image", "python:3-slim"),
            name="mcp",
            namespace=kw.get("namespace"),
            kubectl=kubectl,
            work_dir=str(kw.get("work_dir", "/workspace")),
            env=env,
            **options,
        )
    except BaseException:
        kubectl.close()
        raise
    return pool, kubectl


__all__ = [
    "CallResult",
    "DownloadResult",
    "FileEntry",
    "KubectlExecutorMcp",
    "ListResult",
    "McpConfig",
    "ResetResult",
    "RunResult",
    "SessionRegistry",
    "UploadResult",
    "Workspace",
    "session_key",
]
