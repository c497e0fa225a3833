"""What the tools return: structured results (their JSON schemas are the tools' output schemas)
and the text a host shows the model beside them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr


class PodResult(BaseModel):
    pod: str | None = Field(None, description="the MCP session's pod")
    notice: str | None = Field(None, description="something the caller should know (e.g. a fresh pod)")


class OutputEntry(BaseModel):
    """One rich output (a chart, HTML...): its data is a content block of the result (image
    content for images, an embedded text resource for HTML, Markdown, SVG, JSON, LaTeX), unless it
    was over budget and is kept in the pod."""

    mime_type: str
    size: int = Field(description="bytes of its data (base64 text for images is 4/3 of it)")
    metadata: dict[str, Any] = Field(default_factory=dict, description="e.g. an image's width and height")
    in_content: bool = Field(False, description="its data is one of this result's content blocks")
    kept_path: str | None = Field(None, description="over budget: the full output is in the pod here")


class ChangedFileEntry(BaseModel):
    path: str = Field(description="relative to the workspace")
    size: int
    sha256: str


class RunResult(PodResult):
    """What a program did: its own exit code and output (a non-zero exit is not a tool error)."""

    exit_code: int = Field(description="the program's exit code (124: timed out, 128+N: killed by signal N)")
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = Field(False, description="output went over the cap: head and tail are kept")
    truncation_note: str | None = Field(None, description="what was cut and where the full output is")
    file: str | None = Field(None, description="the file in the pod that ran (or was saved), when kept")
    outputs: list[OutputEntry] = Field(default_factory=list, description="rich outputs, in order")
    files: list[ChangedFileEntry] = Field(
        default_factory=list, description="files the run created or changed in the workspace"
    )
    files_truncated: bool = Field(False, description="the scan was cut: more files may have changed")
    _blocks: list[Any] = PrivateAttr(default_factory=list)  # the outputs' content blocks

    @property
    def blocks(self) -> list[Any]:
        """The content blocks carrying the outputs' data (not part of the structured result)."""
        return self._blocks


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


class UploadResult(PodResult):
    path: str = Field(description="the file's path in the pod")
    size: int
    sha256: str


class DownloadResult(PodResult):
    """One range of a file. Its bytes are in the result's content (once): a text block when the
    file is UTF-8, else an embedded resource with the bytes as base64."""

    path: str
    size: int = Field(description="the whole file's size in bytes")
    sha256: str = Field(description="the whole file's SHA-256 (check it once all ranges are in)")
    encoding: Literal["text", "base64"] = Field(description="how the content carries the bytes")
    offset: int = Field(description="where this range starts (bytes)")
    length: int = Field(description="how many bytes of the file this range holds")
    next_offset: int | None = Field(None, description="offset of the next range; None: this was the last")


class FileEntry(BaseModel):
    path: str = Field(description="relative to the listed directory")
    type: Literal["file", "dir", "link", "other"]
    size: int | None = None


class ListResult(PodResult):
    path: str
    entries: list[FileEntry]
    truncated: bool = Field(False, description="there were more entries than listed")


class ResetResult(PodResult):
    deleted_pod: str | None = None
    message: str


# -- text renderings ------------------------------------------------------------------------------


def with_notice(result: PodResult, text: str) -> str:
    return f"{result.notice}\n{text}" if result.notice else text


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
    for n, out in enumerate(result.outputs, 1):
        size = out.metadata.get("width"), out.metadata.get("height")
        shape = f" {size[0]}x{size[1]}" if all(isinstance(v, int) for v in size) else ""
        if out.kept_path:
            where = f"over budget, kept in the pod at {out.kept_path}"
        else:
            where = "in this result's content" if out.in_content else "in the structured result only"
        lines.append(f"output {n}: {out.mime_type}{shape}, {out.size} bytes, {where}")
    if result.files:
        shown = ", ".join(f"{f.path} ({f.size} bytes)" for f in result.files[:20])
        more = f" and {len(result.files) - 20} more" if len(result.files) > 20 else ""
        lines.append(
            f"files changed: {shown}{more}" + (" (scan cut: maybe more)" if result.files_truncated else "")
        )
    return with_notice(result, "\n".join(lines))


def render_download(result: DownloadResult) -> str:
    end = result.offset + result.length
    head = f"{result.path}: bytes {result.offset}-{end} of {result.size} (sha256 {result.sha256})"
    if result.next_offset is not None:
        head += f"; more: call again with offset={result.next_offset}"
    return with_notice(result, head)


def render_upload(result: UploadResult) -> str:
    return with_notice(result, f"wrote {result.path} ({result.size} bytes)")


def render_list(result: ListResult) -> str:
    lines = [
        f"{result.path}: {len(result.entries)} entries" + (" (more not listed)" if result.truncated else "")
    ]
    for e in result.entries:
        suffix = "/" if e.type == "dir" else (" -> (link)" if e.type == "link" else "")
        size = f"  {e.size}" if e.size is not None else ""
        lines.append(f"{e.path}{suffix}{size}")
    return with_notice(result, "\n".join(lines))


def render_reset(result: ResetResult) -> str:
    return result.message
