"""The tools' work, blocking (each runs in its client's worker thread) and pure of the SDK's
transport: what the sandbox is asked, and the result it becomes.

Everything goes through the executor's public API (:class:`Sandbox` names the part of it used):
``run()`` for code and the server's fixed in-pod scripts, the file transfer and the tool
functions. Tool errors are :class:`RefusedError`: a message for the model, no traceback.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import pydantic_core
from mcp.types import BlobResourceContents, EmbeddedResource, ImageContent, TextContent, TextResourceContents

from .._exec.dispatcher import TOOL_RUNNER_FILE
from .._exec.outputs import output_filename
from .._exec.protocol import LOG_DIR, OutputCallback
from .._exec.tar import TransferLimits, pod_relative
from ..errors import RemoteNotFoundError, TransferError
from ..executor import SCRATCH_STEM, BlockResult
from .models import (
    CallResult,
    ChangedFileEntry,
    DownloadResult,
    FileEntry,
    FunctionError,
    ListResult,
    OutputEntry,
    RunResult,
    UploadResult,
    render_download,
)

if TYPE_CHECKING:
    from ..boundary import ToolCommandLineCodeResult

HIDDEN_PREFIX = ".kx-"  # the server's and the library's own files in the workspace (runner, scratch, logs)
_MISSING_RUNNER = "no tool runner at"
_NO_SUCH = "kubectl-executor: no such "
_NOT_A_DIR = "kubectl-executor: not a directory: "
RANGE_METADATA = 4096  # room a download range leaves for its summary text and structured result
EXTENSION_RUNNERS = {".py": "python", ".sh": "sh", ".bash": "bash", ".ps1": "pwsh"}

assert SCRATCH_STEM.startswith(HIDDEN_PREFIX)  # run()'s scratch files stay out of list_files

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
    if [ "$KX_MCP_HIDE" = 1 ]; then case "$f" in ./.kx-*) continue ;; esac; fi
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


class RefusedError(Exception):
    """A tool call that cannot be done as asked: the message is for the model."""


class Sandbox(Protocol):
    """What the tools use of :class:`~kubectl_executor.KubernetesCommandLineCodeExecutor`."""

    @property
    def pod_name(self) -> str: ...

    @property
    def work_dir(self) -> Path: ...

    @property
    def max_output_bytes(self) -> int: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def cancel(self) -> bool: ...

    def run(
        self,
        code: str,
        language: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
        keep_file: bool = False,
    ) -> BlockResult: ...

    def upload_file_content(
        self, relative_path: str, content: str | bytes, *, timeout: float | None = None
    ) -> str: ...

    def download_file(
        self, remote_path: str, local_path: Path, *, limits: TransferLimits | None = None
    ) -> Path: ...

    def install_pod_dispatcher(self, *, default_module: str, runner_filename: str) -> str: ...

    def execute_tool_function(
        self,
        arguments: dict[str, Any],
        func_name: str,
        *,
        module: str | None = None,
        runner_script: str = ...,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> ToolCommandLineCodeResult: ...


@dataclass
class Reply:
    """A tool's answer: the structured result, its text, and content blocks with data (once)."""

    result: Any  # a models.PodResult
    text: str
    blocks: list[TextContent | ImageContent | EmbeddedResource] = field(default_factory=list)


def truncation_note(truncated: bool, log_files: tuple[str, ...] | list[str], cap: int) -> str | None:
    if not truncated:
        return None
    where = f"; the full output is in the pod: {', '.join(log_files)}" if log_files else ""
    return f"output over {cap} bytes per stream was cut (head and tail kept){where}"


IMAGE_TYPES = ("image/png", "image/jpeg")
TEXT_RESOURCE_TYPES = ("text/html", "text/markdown", "image/svg+xml", "application/json", "text/latex")


def rich_content(done: BlockResult, pod: str) -> tuple[list[OutputEntry], list[Any]]:
    """The outputs' entries and content blocks: images as image content (hosts show them), HTML,
    Markdown and the other text types as embedded text resources; an object's text/plain only
    when nothing richer of it is shown. Kept (over budget) outputs have no block."""
    entries, blocks = [], []
    shown: set[Any] = set()  # bundles with a rich block
    for n, out in enumerate(done.outputs):
        if not out.kept_path and out.mime_type in IMAGE_TYPES + TEXT_RESOURCE_TYPES:
            shown.add(out.metadata.get("bundle", ("alone", n)))
    for n, out in enumerate(done.outputs):
        data = out.data
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        block: Any = None
        if out.kept_path:
            size = int(out.metadata.get("size") or 0)
        elif out.mime_type in IMAGE_TYPES and isinstance(data, bytes):
            block = ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=out.mime_type)
        elif out.mime_type in TEXT_RESOURCE_TYPES and isinstance(data, str):
            uri = f"kubectl-executor://{pod}/outputs/{output_filename(n, out)}"
            block = EmbeddedResource(
                type="resource", resource=TextResourceContents(uri=uri, mime_type=out.mime_type, text=data)
            )
        elif isinstance(data, str) and out.metadata.get("bundle", ("alone", n)) not in shown:
            block = TextContent(type="text", text=data)
        if block is not None:
            blocks.append(block)
        entries.append(
            OutputEntry(
                mime_type=out.mime_type,
                size=size,
                metadata={k: v for k, v in out.metadata.items() if k != "size"},
                in_content=block is not None,
                kept_path=out.kept_path,
            )
        )
    return entries, blocks


def run_result(done: BlockResult, sandbox: Sandbox, file: str | None) -> RunResult:
    entries, blocks = rich_content(done, sandbox.pod_name)
    result = RunResult(
        pod=sandbox.pod_name,
        exit_code=done.exit_code,
        stdout=done.stdout,
        stderr=done.stderr,
        timed_out=done.timed_out,
        truncated=done.truncated,
        truncation_note=truncation_note(done.truncated, done.log_files, sandbox.max_output_bytes),
        file=file,
        outputs=entries,
        files=[ChangedFileEntry(path=f.path, size=f.size, sha256=f.sha256) for f in done.files],
        files_truncated=done.files_truncated,
    )
    result.blocks.extend(blocks)
    return result


def run_code(
    sandbox: Sandbox, language: str, code: str, timeout: float, on_output: OutputCallback | None = None
) -> RunResult:
    """Run ``code`` (or only save it, by the execution policy); no file is kept unless it names one."""
    done = sandbox.run(code, language, timeout=timeout, on_output=on_output)
    return run_result(done, sandbox, done.file)


def run_file(
    sandbox: Sandbox,
    path: str,
    language: str | None,
    timeout: float,
    on_output: OutputCallback | None = None,
) -> RunResult:
    """Run a file that is already in the workspace, with the interpreter its extension names."""
    work = str(sandbox.work_dir)
    _, rel = pod_relative(path, [work])
    if language is not None:
        runner = {"python": "python", "py": "python", "sh": "sh", "bash": "bash", "pwsh": "pwsh"}.get(
            language.strip().lower()
        )
        if runner is None:
            raise RefusedError(f"cannot run {language!r} files: use python, bash, sh or pwsh")
    else:
        runner = EXTENSION_RUNNERS.get(PurePosixPath(rel).suffix.lower())
        if runner is None:
            raise RefusedError(f"cannot tell how to run {rel!r} from its extension: pass language")
    target = f"{work.rstrip('/')}/{rel}"
    env = {"KX_MCP_FILE": target, "KX_MCP_RUNNER": runner}
    done = sandbox.run(RUN_FILE_SCRIPT, "sh", timeout=timeout, env=env, on_output=on_output)
    if done.exit_code == 2 and done.stderr.startswith(_NO_SUCH):
        raise RefusedError(f"no such file in the workspace: {rel}")
    return run_result(done, sandbox, target)


def call_function(
    sandbox: Sandbox,
    module: str,
    function: str,
    arguments: dict[str, Any],
    timeout: float,
    install: bool,
    on_output: OutputCallback | None = None,
) -> CallResult:
    """``module.function(**arguments)`` in the pod (the module uploaded into the workspace)."""
    if install:
        sandbox.install_pod_dispatcher(default_module=module, runner_filename=TOOL_RUNNER_FILE)
    result = sandbox.execute_tool_function(
        arguments,
        function,
        module=module,
        runner_script=TOOL_RUNNER_FILE,
        timeout=timeout,
        on_output=on_output,
    )
    if result.exit_code == 2 and _MISSING_RUNNER in result.stderr and not install:
        # The runner was removed from the workspace; nothing ran, so installing and calling again is safe.
        return call_function(sandbox, module, function, arguments, timeout, True, on_output)
    tool = result.tool_result
    error = None
    if tool is not None and tool.error is not None:
        error = FunctionError(
            type=tool.error.type, message=tool.error.message, traceback=tool.error.traceback
        )
    return CallResult(
        pod=sandbox.pod_name,
        exit_code=result.exit_code,
        stdout=tool.stdout if tool is not None else result.stdout,
        stderr=tool.stderr if tool is not None else result.stderr,
        timed_out=result.timed_out,
        truncated=result.truncated,
        truncation_note=truncation_note(result.truncated, result.log_files, sandbox.max_output_bytes),
        status=tool.status if tool is not None else None,
        value=tool.value if tool is not None and tool.value_is_json else None,
        value_repr=tool.value_repr if tool is not None else None,
        error=error,
    )


def upload_file(
    sandbox: Sandbox, path: str, content_base64: str | None, text: str | None, max_bytes: int
) -> UploadResult:
    """Write a file into the workspace from base64 (any bytes) or text (UTF-8)."""
    if (content_base64 is None) == (text is None):
        raise RefusedError("give exactly one of content_base64 (any bytes) and text (UTF-8)")
    if content_base64 is not None:
        if len(content_base64) > (max_bytes + 2) // 3 * 4 + 4:
            raise RefusedError(f"the file is larger than the upload cap of {max_bytes} bytes")
        try:
            data = base64.b64decode(content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RefusedError(f"content_base64 is not valid base64: {exc}") from exc
    else:
        assert text is not None
        data = text.encode("utf-8")
    if len(data) > max_bytes:
        raise RefusedError(f"the file is {len(data)} bytes, over the upload cap of {max_bytes} bytes")
    written = sandbox.upload_file_content(path, data)
    return UploadResult(
        pod=sandbox.pod_name, path=written, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )


@dataclass(frozen=True)
class FileCopy:
    """A file read whole from the pod; the ranges of a download are served from it."""

    path: str  # as shown: absolute in the pod
    data: bytes
    sha256: str
    text: bool  # the whole file is UTF-8


def fetch_file(sandbox: Sandbox, path: str, max_bytes: int) -> FileCopy:
    """Read a file of the workspace (or the run logs) through the library's checked download."""
    limits = TransferLimits(max_total_bytes=max_bytes, max_members=16)
    with tempfile.TemporaryDirectory(prefix="kx-mcp-") as tmp:
        local = Path(tmp) / "file"
        try:
            sandbox.download_file(path, local, limits=limits)
        except RemoteNotFoundError as exc:
            raise RefusedError(f"no such file in the workspace: {path}") from exc
        except TransferError as exc:
            if "exceeds" in str(exc):
                raise RefusedError(
                    f"{path} is larger than the server's download cap of {max_bytes} bytes (--max-file-bytes)"
                ) from exc
            raise
        data = local.read_bytes()
    try:
        data.decode("utf-8")
        text = True
    except UnicodeDecodeError:
        text = False
    work = str(sandbox.work_dir)
    base, rel = pod_relative(path, [work, LOG_DIR])
    shown = f"{base.rstrip('/')}/{rel}"
    return FileCopy(shown, data, hashlib.sha256(data).hexdigest(), text)


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte < 0xC0


def file_range(copy: FileCopy, offset: int, length: int | None, budget: int, pod: str) -> Reply:
    """The range ``offset`` .. ``offset + length`` of ``copy``, cut to what fits in ``budget``
    bytes of JSON. Text ranges end on character boundaries; the result says where to go on."""
    size = len(copy.data)
    if offset < 0 or (offset >= size and not (offset == 0 and size == 0)):
        raise RefusedError(f"offset {offset} is outside {copy.path} ({size} bytes)")
    if length is not None and length < 1:
        raise RefusedError("length must be >= 1 byte")
    want = min(size - offset, length if length is not None else size)
    budget = max(budget - RANGE_METADATA, 64)  # the summary line and the structured result go beside it
    block: TextContent | EmbeddedResource
    if copy.text:
        if offset < size and _is_continuation(copy.data[offset]):
            raise RefusedError(f"offset {offset} is inside a UTF-8 character: use the next_offset of a range")
        want = min(want, budget)
        while True:
            end = offset + want
            while offset < end < size and _is_continuation(copy.data[end]):
                end -= 1
            text = copy.data[offset:end].decode("utf-8")
            encoded = len(pydantic_core.to_json(text))
            if encoded <= budget or end - offset <= 4:
                break
            want = max(4, (end - offset) * budget // encoded * 15 // 16)  # escapes took more room
        block = TextContent(type="text", text=text)
        encoding = "text"
    else:
        end = offset + min(want, budget // 4 * 3)
        blob = base64.b64encode(copy.data[offset:end]).decode("ascii")
        block = EmbeddedResource(
            type="resource",
            resource=BlobResourceContents(
                uri=f"file://{copy.path}", mime_type="application/octet-stream", blob=blob
            ),
        )
        encoding = "base64"
    result = DownloadResult(
        pod=pod,
        path=copy.path,
        size=size,
        sha256=copy.sha256,
        encoding=encoding,
        offset=offset,
        length=end - offset,
        next_offset=end if end < size else None,
    )
    return Reply(result, render_download(result), [block])


def list_files(sandbox: Sandbox, path: str, recursive: bool, max_entries: int) -> ListResult:
    """The entries of a workspace directory (the server's and library's own files left out)."""
    work = str(sandbox.work_dir)
    _, rel = pod_relative(path, [work], allow_root=True)
    target = work if rel == "." else f"{work.rstrip('/')}/{rel}"
    env = {
        "KX_MCP_DIR": target,
        "KX_MCP_RECURSIVE": "1" if recursive else "0",
        "KX_MCP_MAX": str(max_entries),
        "KX_MCP_HIDE": "1" if rel == "." else "0",  # the workspace's own .kx-* files (scratch, runner, logs)
    }
    done = sandbox.run(LIST_SCRIPT, "sh", timeout=60, env=env)
    if done.exit_code != 0:
        if done.stderr.startswith(_NO_SUCH):
            raise RefusedError(f"no such directory in the workspace: {rel}")
        if done.stderr.startswith(_NOT_A_DIR):
            raise RefusedError(f"not a directory: {rel} (use download_file to read a file)")
        raise RefusedError(
            f"listing {rel} failed with exit code {done.exit_code}: {done.stderr.strip()[:500]}"
        )
    entries, more = parse_listing(done.stdout.encode(), done.truncated)
    entries.sort(key=lambda e: e.path)
    return ListResult(pod=sandbox.pod_name, path=rel, entries=entries, truncated=more)


def parse_listing(stdout: bytes, cut: bool) -> tuple[list[FileEntry], bool]:
    """The script's records; ``cut`` (the output cap kept head and tail) keeps whole records of the head."""
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
