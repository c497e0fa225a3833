"""The tools as one table: each a :class:`ToolSpec` with its arguments (a pydantic model: the input
schema), its result model (the output schema), its description (stating this server's limits) and
a blocking handler that runs in the client's worker thread. The server serves them all through
one adapter (:meth:`~kubectl_executor.mcp.server.KubectlExecutorMcp._serve`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from . import models, tools
from .clients import Workspace
from .config import McpConfig
from .tools import RefusedError, Reply, Sandbox

A = TypeVar("A", bound=BaseModel)


# -- the tools' arguments -------------------------------------------------------------------------

Timeout = Annotated[
    int | None, Field(description="seconds before the program is stopped (exit 124); default: the server's")
]


class RunCodeArgs(BaseModel):
    language: Annotated[str, Field(description="python, bash, sh or pwsh")]
    code: Annotated[
        str, Field(description="the program; a first line '# filename: x.py' keeps it as that file")
    ]
    timeout: Timeout = None


class RunFileArgs(BaseModel):
    path: Annotated[str, Field(description="a file in the workspace (relative path)")]
    timeout: Timeout = None
    language: Annotated[
        str | None, Field(description="python, bash, sh or pwsh; default: from the extension")
    ] = None


class UploadArgs(BaseModel):
    path: Annotated[str, Field(description="where in the workspace (relative path)")]
    content_base64: Annotated[str | None, Field(description="the bytes, base64 (binary-safe)")] = None
    text: Annotated[str | None, Field(description="or: the content as text (written as UTF-8)")] = None


class DownloadArgs(BaseModel):
    path: Annotated[str, Field(description="a file in the workspace (relative path), or a run log it named")]
    offset: Annotated[
        int, Field(description="first byte to return (from a previous range's next_offset)")
    ] = 0
    length: Annotated[
        int | None, Field(description="bytes to return at most; default: as many as fit in one response")
    ] = None


class CallArgs(BaseModel):
    module: Annotated[str, Field(description="a module in the workspace, e.g. 'tools' for tools.py")]
    function: Annotated[str, Field(description="the function's name")]
    arguments: Annotated[dict[str, Any] | None, Field(description="keyword arguments (a JSON object)")] = None
    timeout: Timeout = None


class ListArgs(BaseModel):
    path: Annotated[str, Field(description="a directory in the workspace")] = "."
    recursive: Annotated[bool, Field(description="also list subdirectories' content")] = False


class NoArgs(BaseModel):
    pass


# -- one call's context, as the handlers see it -----------------------------------------------------


@dataclass
class Call:
    """What a handler needs: its client's workspace, the limits, and this connection's budget."""

    ws: Workspace
    config: McpConfig
    budget: int

    def sandbox(self) -> Sandbox:
        return self.ws.ensure()

    def timeout(self, asked: int | None) -> int:
        if asked is None:
            return self.config.run_timeout
        if asked < 1 or asked > self.config.max_timeout:
            raise RefusedError(
                f"timeout must be between 1 and {self.config.max_timeout} seconds, got {asked}"
            )
        return asked


@dataclass(frozen=True)
class ToolSpec(Generic[A]):
    name: str
    title: str
    description: str
    args: type[A]
    result: type[models.PodResult]
    handler: Callable[[Call, A], Reply]
    annotations: ToolAnnotations
    changes_files: bool = True  # a file copy kept for ranged downloads may be stale after it


def _run_code(call: Call, a: RunCodeArgs) -> Reply:
    r = tools.run_code(call.sandbox(), a.language, a.code, call.timeout(a.timeout), call.ws.on_output)
    return Reply(r, models.render_run(r), list(r.blocks))


def _run_file(call: Call, a: RunFileArgs) -> Reply:
    r = tools.run_file(call.sandbox(), a.path, a.language, call.timeout(a.timeout), call.ws.on_output)
    return Reply(r, models.render_run(r), list(r.blocks))


def _upload(call: Call, a: UploadArgs) -> Reply:
    r = tools.upload_file(call.sandbox(), a.path, a.content_base64, a.text, call.config.max_file_bytes)
    return Reply(r, models.render_upload(r))


def _download(call: Call, a: DownloadArgs) -> Reply:
    sb = call.sandbox()
    copy = call.ws.file_copy
    if a.offset == 0 or copy is None or not _same_file(copy.path, a.path, str(sb.work_dir)):
        copy = call.ws.file_copy = tools.fetch_file(sb, a.path, call.config.max_file_bytes)
    return tools.file_range(copy, a.offset, a.length, call.budget, sb.pod_name)


def _same_file(shown: str, asked: str, work_dir: str) -> bool:
    return shown in (asked, f"{work_dir.rstrip('/')}/{asked.removeprefix('./')}")


def _call_function(call: Call, a: CallArgs) -> Reply:
    sb, seconds = call.sandbox(), call.timeout(a.timeout)
    r = tools.call_function(
        sb,
        a.module,
        a.function,
        dict(a.arguments or {}),
        seconds,
        not call.ws.dispatcher_installed,
        call.ws.on_output,
    )
    call.ws.dispatcher_installed = True
    return Reply(r, models.render_run(r))


def _list(call: Call, a: ListArgs) -> Reply:
    r = tools.list_files(call.sandbox(), a.path, a.recursive, call.config.max_list_entries)
    return Reply(r, models.render_list(r))


def _reset(call: Call, a: NoArgs) -> Reply:
    name = call.ws.discard()
    call.ws.notice = None
    message = (
        f"pod {name} deleted; the next call starts a fresh pod"
        if name
        else "no pod yet; the next call starts a fresh one"
    )
    r = models.ResetResult(pod=None, deleted_pod=name, message=message)
    return Reply(r, models.render_reset(r))


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n // 1024} KiB"


def tool_specs(config: McpConfig) -> list[ToolSpec[Any]]:
    """The tools, their descriptions stating this server's limits."""
    t, cap, top, every = (
        config.run_timeout,
        _size(config.max_output_bytes),
        config.max_timeout,
        config.progress_interval,
    )
    runs = (
        f"The default timeout is {t} s (timeout: 1 to {top}); the exit code is the program's own result "
        f"(124: stopped at the timeout). Output over {cap} per stream is cut to its head and tail, the "
        "whole of it staying in the pod (truncation_note names the file: read it with download_file). "
        f"While the pod starts and the program runs, progress is reported every {every:g} s to clients that "
        "ask for it."
    )
    runs_ann = ToolAnnotations(destructive_hint=True, open_world_hint=True)
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    writes = ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False)
    return [
        ToolSpec(
            "run_code",
            "Run code in the sandbox",
            "Run a program (python, bash, sh or pwsh) in this MCP session's sandbox pod, in its workspace "
            "directory; files persist between calls. No file is left behind unless the code's first line "
            f"names one ('# filename: job.py'). {runs}",
            RunCodeArgs,
            models.RunResult,
            _run_code,
            runs_ann,
        ),
        ToolSpec(
            "run_file",
            "Run a workspace file",
            f"Run a file that is already in the workspace (uploaded, or written by earlier code), with the "
            f"interpreter its extension names (.py, .sh, .bash, .ps1) or the given language. {runs}",
            RunFileArgs,
            models.RunResult,
            _run_file,
            runs_ann,
        ),
        ToolSpec(
            "upload_file",
            "Write a file into the workspace",
            "Write a file into the workspace, replacing it whole: content_base64 for any bytes, or text "
            f"(written as UTF-8). At most {_size(config.max_file_bytes)}, and the request must fit in what "
            "the connection accepts.",
            UploadArgs,
            models.UploadResult,
            _upload,
            writes,
        ),
        ToolSpec(
            "download_file",
            "Read a file from the workspace",
            "Read a file from the workspace (or a run's full output log) in ranges that fit one response: "
            "the bytes come once, as a text block when the file is UTF-8, else as an embedded resource "
            "(base64). next_offset says where the next range starts (call again with offset=next_offset) "
            f"and is null at the end; sha256 is the whole file's. Files up to {_size(config.max_file_bytes)}.",
            DownloadArgs,
            models.DownloadResult,
            _download,
            read_only,
            changes_files=False,
        ),
        ToolSpec(
            "call_function",
            "Call a Python function in the sandbox",
            "Call module.function(**arguments) in the pod (upload the module into the workspace first); "
            f"returns its JSON value, or the exception it raised, and what it printed. {runs}",
            CallArgs,
            models.CallResult,
            _call_function,
            runs_ann,
        ),
        ToolSpec(
            "list_files",
            "List workspace files",
            "List a directory of the workspace: paths, types and sizes (the server's own files are left "
            f"out; at most {config.max_list_entries} entries).",
            ListArgs,
            models.ListResult,
            _list,
            read_only,
            changes_files=False,
        ),
        ToolSpec(
            "reset_workspace",
            "Reset the sandbox",
            "Delete this MCP session's pod with all its files and processes; the next call starts a fresh one.",
            NoArgs,
            models.ResetResult,
            _reset,
            writes,
        ),
    ]
