"""Tool functions: call ``module.function(**arguments)`` in the pod, get the seed's result plus structure.

The in-pod runner (``_pod/tool_runner.py``, stdlib only) is uploaded by
:meth:`~kubectl_executor.KubernetesCommandLineCodeExecutor.install_pod_dispatcher` or baked into the image. Each call is one exec of the
fixed ``_pod/run.sh`` with runner ``call``: the JSON payload travels on stdin, straight into the
runner's stdin (no parameter file), under the same completion marker and in-pod deadline as code.

The structured result must not corrupt the function's stdout, so the runner writes it to a file
named by ``$KX_TOOL_RESULT``; after the runner exits, run.sh emits it on stdout as a frame
delimited by the per-call nonce (``\\n__KX_FRAME_<nonce>__ <bytes>\\n<json>``), between the program's
output and the exit marker. The client cuts the frame out of the stream (``protocol.FrameSplitter``)
before the output budget sees it. A seed-style runner writes no frame: ``tool_result`` is None.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .protocol import TIMEOUT_NOTE, ExecResult, OutputCallback, RunRequest, pod_file
from .tar import pod_relative

if TYPE_CHECKING:
    from ..boundary import ToolCallResult, ToolCommandLineCodeResult
    from .transfer import PodFiles

logger = logging.getLogger(__name__)

TOOL_RUNNER = pod_file("tool_runner.py").decode()
TOOL_RUNNER_FILE = ".kx-tool-runner.py"
"""Where the CLI and the MCP server install the tool runner in the work_dir (a dot-name: uploads skip it)."""
_DEFAULT_MODULE_LINE = 'DEFAULT_MODULE = "robin_user"\n'

_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", re.ASCII)


def parse_arguments(arguments: dict[str, Any] | str) -> dict[str, Any]:
    """The seed's rule: a dict, or a JSON string of one. Bad JSON -> ValueError, else TypeError."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"arguments is not valid JSON: {exc}") from exc
    if not isinstance(arguments, dict):
        raise TypeError(f"arguments must be a dict or a JSON object string, not {type(arguments).__name__}")
    for key in arguments:
        if not isinstance(key, str):
            raise TypeError(f"argument names must be strings, got {key!r}")
    return arguments


def encode_payload(func_name: str, arguments: dict[str, Any], module: str | None) -> bytes:
    """The runner's JSON payload (the seed's schema: function, arguments, module?)."""
    if not isinstance(func_name, str):
        raise TypeError(f"func_name must be a str, not {type(func_name).__name__}")
    if not func_name.isidentifier():
        raise InvalidInputError(f"func_name {func_name!r} is not a Python identifier")
    payload: dict[str, Any] = {"function": func_name, "arguments": arguments}
    if module is not None:
        payload["module"] = validate_module(module)
    try:
        return json.dumps(payload, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"arguments are not JSON-serialisable: {exc}") from exc


def validate_module(name: str) -> str:
    if not isinstance(name, str) or not _MODULE.match(name):
        raise InvalidInputError(f"module {name!r} is not a dotted Python module name")
    return name


def runner_source(default_module: str) -> str:
    """The packaged runner with its default module set."""
    if _DEFAULT_MODULE_LINE not in TOOL_RUNNER:
        raise AssertionError("the packaged tool runner lost its DEFAULT_MODULE line")
    line = f"DEFAULT_MODULE = {json.dumps(validate_module(default_module))}\n"
    return TOOL_RUNNER.replace(_DEFAULT_MODULE_LINE, line, 1)


def build_tool_result(frame: bytes | None, stdout: bytes, stderr: bytes) -> ToolCallResult | None:
    """The frame as a model, with the function's own stdout/stderr (the runner's additions cut)."""
    if frame is None:
        return None
    from ..boundary import ToolCallResult

    try:
        data = json.loads(frame)
        own_out = _cut_tail(stdout, int(data.get("runner_stdout_bytes", 0)))
        own_err = _cut_tail(stderr, int(data.get("runner_stderr_bytes", 0)))
        return ToolCallResult(
            module=data.get("module"),
            function=data.get("function"),
            status=data["status"],
            value=data.get("value"),
            value_is_json=bool(data.get("value_is_json", False)),
            value_repr=data.get("value_repr"),
            value_truncated=bool(data.get("value_truncated", False)),
            error=data.get("error"),
            stdout=own_out.decode(errors="replace"),
            stderr=own_err.decode(errors="replace"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # pydantic's ValidationError too
        logger.warning("ignoring a malformed tool result frame: %s", exc)
        return None


def _cut_tail(data: bytes, n: int) -> bytes:
    return data[: len(data) - n] if 0 < n <= len(data) else data


class PodTools:
    """Tool functions in a pod (the executor's tool methods): the runner goes in with ``files``,
    each call is one stateless ``execute`` of a :class:`RunRequest`."""

    def __init__(
        self, files: PodFiles, execute: Callable[[RunRequest, OutputCallback | None], ExecResult]
    ) -> None:
        self._files = files
        self._execute = execute

    def install(self, default_module: str, runner_filename: str) -> str:
        """Upload the tool runner to ``runner_filename`` under work_dir; returns its pod path."""
        return self._files.upload_file_content(runner_filename, runner_source(default_module))

    def call(
        self,
        arguments: dict[str, Any] | str,
        func_name: str,
        *,
        module: str | None,
        runner_script: str,
        work_dir: Path,
        timeout: float,
        budget: int,
        env: dict[str, str],
        on_output: OutputCallback | None,
    ) -> ToolCommandLineCodeResult:
        """``module.func_name(**arguments)`` through the runner at ``runner_script`` (see
        :meth:`~kubectl_executor.KubernetesCommandLineCodeExecutor.execute_tool_function`)."""
        args = parse_arguments(arguments)
        payload = encode_payload(func_name, args, module)
        _, runner = pod_relative(runner_script, [str(work_dir)])
        seconds = float(timeout)
        if seconds < 1:
            raise InvalidInputError("timeout must be >= 1 second")
        request = RunRequest(
            code=payload,
            work_dir=str(work_dir),
            path=runner,
            runner="call",
            timeout=seconds,
            budget=budget,
            env=env,
        )
        done = self._execute(request, on_output)
        output = (done.stdout + done.stderr).decode(errors="replace")
        if done.timed_out:
            output += "\n" + TIMEOUT_NOTE.format(timeout=seconds)
        from ..boundary import ToolCommandLineCodeResult

        return ToolCommandLineCodeResult(
            exit_code=done.exit_code,
            output=output,
            code_file=f"{work_dir}/{runner}",
            stdout=done.stdout.decode(errors="replace"),
            stderr=done.stderr.decode(errors="replace"),
            timed_out=done.timed_out,
            truncated=done.truncated,
            log_files=done.log_files,
            tool_result=build_tool_result(done.frame, done.stdout, done.stderr),
        )


__all__ = [
    "PodTools",
    "build_tool_result",
    "encode_payload",
    "parse_arguments",
    "runner_source",
]
