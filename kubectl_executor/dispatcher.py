"""Tool functions: call ``module.function(**arguments)`` in the pod, get the seed's result plus structure.

The in-pod runner (``_pod/tool_runner.py``, stdlib only) is uploaded by
:meth:`ToolsMixin.install_pod_dispatcher` or baked into the image. Each call is one exec of the
fixed ``_pod/call.sh``: the JSON payload travels on stdin, straight into the runner's stdin (no
parameter file), under the same completion-marker and in-pod-deadline protocol as code blocks.

The structured result must not corrupt the function's stdout, so the runner writes it to a file
named by ``$KX_TOOL_RESULT``; after the runner exits, call.sh emits it on stdout as a frame
delimited by the per-call nonce (``\\n__KX_FRAME_<nonce>__ <bytes>\\n<json>``), between the program's
output and the exit marker. The client cuts the frame out of the stream (:class:`FrameSplitter`)
before the output budget sees it. A seed-style runner writes no frame: ``tool_result`` is None.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from importlib import resources
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ExecNotStartedError, InvalidInputError, OutcomeUnknownError
from .kubectl import Kubectl, classify_failure
from .manifest import CONTAINER, validate_env_name, validate_env_value
from .protocol import MarkerFilter, OutputBudget, new_nonce
from .results import CommandLineCodeResult
from .retry import call_with_retry
from .runner import Sink
from .transfer import pod_relative

logger = logging.getLogger(__name__)

_POD = resources.files("kubectl_executor").joinpath("_pod")
CALL_SCRIPT = _POD.joinpath("call.sh").read_text()
TOOL_RUNNER = _POD.joinpath("tool_runner.py").read_text()
_DEFAULT_MODULE_LINE = 'DEFAULT_MODULE = "robin_user"\n'

TIMEOUT_NOTE = "Timeout: the code ran longer than {timeout:g}s and was stopped."
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$", re.ASCII)

OutputCallback = Callable[[str, bytes], None]


class ToolError(BaseModel):
    """What the function raised: qualified type name, ``str(exc)``, the formatted traceback."""

    model_config = ConfigDict(frozen=True)

    type: str
    message: str
    traceback: str


class ToolCallResult(BaseModel):
    """The structured side of a tool call, as the in-pod runner reported it.

    ``value`` is the return value when it is JSON-serialisable (``value_is_json``), else None and
    ``value_repr`` says what it was. ``stdout``/``stderr`` are the function's own output, without
    the result the runner prints (seed compatibility) or the traceback it writes.
    """

    model_config = ConfigDict(frozen=True)

    module: str | None = None
    function: str | None = None
    status: Literal["returned", "raised"]
    value: Any = None
    value_is_json: bool = False
    value_repr: str | None = None
    value_truncated: bool = False
    error: ToolError | None = None
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "returned"


class ToolCommandLineCodeResult(CommandLineCodeResult):
    """The seed's result for a tool call (``output`` = what it printed) plus ``tool_result``."""

    tool_result: ToolCallResult | None = None


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


def encode_call(
    *,
    nonce: str,
    timeout: float,
    kill_after: float,
    budget: int,
    work_dir: str,
    runner: str,
    env: dict[str, str],
    payload: bytes,
) -> bytes:
    """call.sh's stdin: header lines, env, then the payload (user data only ever on stdin)."""
    for key, value in env.items():
        validate_env_name(key)
        validate_env_value(key, value)
    for what, value in (("work_dir", work_dir), ("runner", runner)):
        if "\n" in value or "\x00" in value:
            raise InvalidInputError(f"{what} contains a line break or NUL")
    header = (
        f"KXC1 {nonce} {_seconds(timeout)} {_seconds(kill_after)} {budget} {len(env)}\n{work_dir}\n{runner}\n"
    )
    return (header + "".join(f"{k}={v}\n" for k, v in env.items())).encode() + payload


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


class FrameSplitter:
    """Passes the program's stdout on to ``sink`` and cuts out the runner's result frame.

    The frame is ``\\n__KX_FRAME_<nonce>__ <n>\\n`` then n bytes; it comes after all program output.
    Enough bytes are held back to recognise the tag across chunk boundaries. A frame larger than
    ``limit`` is dropped (``overflow``) rather than buffered.
    """

    def __init__(self, nonce: str, sink: Sink, limit: int) -> None:
        self._tag = b"\n__KX_FRAME_" + nonce.encode() + b"__ "
        self._hold = len(self._tag) + 24
        self._sink = sink
        self._limit = limit
        self._pending = b""
        self._want: int | None = None
        self._frame = bytearray()
        self._got = 0
        self.overflow = False

    def feed(self, chunk: bytes) -> None:
        if self._want is not None:
            self._take(chunk)
            return
        self._pending += chunk
        at = self._pending.find(self._tag)
        if at >= 0:
            end = self._pending.find(b"\n", at + len(self._tag))
            size = self._pending[at + len(self._tag) : end] if end >= 0 else b""
            if end >= 0 and size.isdigit():
                self._sink(self._pending[:at])
                rest = self._pending[end + 1 :]
                self._pending = b""
                self._want = int(size)
                self.overflow = self._want > self._limit
                self._take(rest)
                return
            if end < 0 and len(self._pending) - at <= self._hold:
                self._flush_before(at)
                return
        if len(self._pending) > self._hold:
            self._flush_before(len(self._pending) - self._hold)

    def _flush_before(self, cut: int) -> None:
        if cut > 0:
            self._sink(self._pending[:cut])
            self._pending = self._pending[cut:]

    def _take(self, data: bytes) -> None:
        self._got += len(data)
        if not self.overflow:
            self._frame += data

    def close(self) -> bytes | None:
        """End of the stream: the complete frame, or None (no frame, cut short, or too big)."""
        if self._want is None:
            self._sink(self._pending)
            self._pending = b""
            return None
        if self.overflow or self._got != self._want:
            return None
        return bytes(self._frame)


def build_tool_result(frame: bytes | None, stdout: bytes, stderr: bytes) -> ToolCallResult | None:
    """The frame as a model, with the function's own stdout/stderr (the runner's additions cut)."""
    if frame is None:
        return None
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
    except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        logger.warning("ignoring a malformed tool result frame: %s", exc)
        return None


def _cut_tail(data: bytes, n: int) -> bytes:
    return data[: len(data) - n] if 0 < n <= len(data) else data


class ToolsMixin:
    """Tool-function methods of :class:`~kubectl_executor.KubernetesCommandLineCodeExecutor`."""

    _kubectl: Kubectl
    _pod_name: str
    _work_dir: Path
    _timeout: int
    _max_output_bytes: int
    _extra_env: dict[str, str]
    _on_output: OutputCallback | None

    if TYPE_CHECKING:

        def _ensure_pod(self) -> None: ...

        def _kill_in_pod(self, nonce: str) -> None: ...

        def upload_file_content(
            self, relative_path: str | PurePath, content: str | bytes, *, timeout: float | None = None
        ) -> str: ...

    def install_pod_dispatcher(
        self, *, default_module: str = "robin_user", runner_filename: str = "executor.py"
    ) -> str:
        """Upload the tool runner to ``runner_filename`` under work_dir; returns its pod path.

        Upload your code first (:meth:`upload_from_disk`); ``default_module`` is imported when a
        call names no module."""
        return self.upload_file_content(runner_filename, runner_source(default_module))

    def execute_tool_function(
        self,
        arguments: dict[str, Any] | str,
        func_name: str,
        *,
        module: str | None = None,
        runner_script: str = "executor.py",
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> ToolCommandLineCodeResult:
        """Call ``module.func_name(**arguments)`` in the pod through the runner at ``runner_script``.

        Seed semantics: ``arguments`` is a dict or a JSON string (bad JSON -> ValueError, anything
        else -> TypeError, raised here before any kubectl call); ``module`` defaults to the
        runner's default; ``output`` is what the call printed, including a non-None result; an
        exception in the pod (a TypeError for mismatched arguments too) is exit code 1, not an
        exception here. ``tool_result`` carries the structure (None with a runner that writes none).
        """
        args = parse_arguments(arguments)
        payload = encode_payload(func_name, args, module)
        _, runner = pod_relative(runner_script, [str(self._work_dir)])
        seconds = float(timeout if timeout is not None else self._timeout)
        if seconds < 1:
            raise InvalidInputError("timeout must be >= 1 second")
        self._ensure_pod()
        nonce = new_nonce()
        budget = self._max_output_bytes
        request = encode_call(
            nonce=nonce,
            timeout=seconds,
            kill_after=2.0,
            budget=budget,
            work_dir=str(self._work_dir),
            runner=runner,
            env=dict(self._extra_env),
            payload=payload,
        )
        callback = on_output or self._on_output
        argv = ["exec", "-i", self._pod_name, "-c", CONTAINER, "--", "sh", "-c", CALL_SCRIPT, "kx"]
        client_deadline = seconds + 2.0 + 30.0 + len(payload) / 1e6

        def attempt() -> ToolCommandLineCodeResult:
            out = OutputBudget(budget)
            err = OutputBudget(budget)

            def on_stdout(chunk: bytes) -> None:
                out(chunk)
                if callback and chunk:
                    callback("stdout", chunk)

            def on_stderr(chunk: bytes) -> None:
                err(chunk)
                if callback and chunk:
                    callback("stderr", chunk)

            frames = FrameSplitter(nonce, on_stdout, limit=16 * budget + (1 << 20))
            marker = MarkerFilter(nonce, frames.feed)
            done = self._kubectl.stream(
                argv, stdin=request, timeout=client_deadline, on_stdout=marker.feed, on_stderr=on_stderr
            )
            outcome = marker.close()
            frame = frames.close()
            if outcome is not None:
                logs = f"{outcome.log_dir}/{nonce}"
                note = f"full output in the pod at {logs}.*"
                stdout, stderr = out.value(note), err.value(note)
                return _result(
                    outcome.exit_code,
                    stdout,
                    stderr,
                    timed_out=outcome.timed_out,
                    truncated=out.truncated or err.truncated,
                    logs=[f"{logs}.out", f"{logs}.err"] if outcome.log_kept else [],
                    code_file=f"{self._work_dir}/{runner}",
                    timeout=seconds,
                    tool=build_tool_result(frame, stdout, stderr),
                )
            if done.timed_out and marker.started:
                self._kill_in_pod(nonce)
                return _result(
                    124,
                    out.value(),
                    err.value(),
                    timed_out=True,
                    truncated=out.truncated,
                    logs=[],
                    code_file=f"{self._work_dir}/{runner}",
                    timeout=seconds,
                    tool=None,
                )
            stderr_text = err.value().decode(errors="replace")
            if not marker.started and done.returncode != 0:
                raise classify_failure(done.argv, done.returncode, stderr_text, exec_call=True)
            if done.timed_out:
                self._kill_in_pod(nonce)
            raise OutcomeUnknownError(
                f"the tool call in pod {self._pod_name} ended without its completion marker "
                f"(kubectl exit code {done.returncode}); it may or may not have run and was not re-run",
                stdout=out.value(),
                stderr=err.value(),
            )

        return call_with_retry(
            self._kubectl.retry, attempt, retry_on=(ExecNotStartedError,), what="kubectl exec (tool call)"
        )


def _result(
    exit_code: int,
    stdout: bytes,
    stderr: bytes,
    *,
    timed_out: bool,
    truncated: bool,
    logs: list[str],
    code_file: str,
    timeout: float,
    tool: ToolCallResult | None,
) -> ToolCommandLineCodeResult:
    out = stdout.decode(errors="replace")
    err = stderr.decode(errors="replace")
    output = out + err
    if timed_out:
        output += "\n" + TIMEOUT_NOTE.format(timeout=timeout)
    return ToolCommandLineCodeResult(
        exit_code=exit_code,
        output=output,
        code_file=code_file,
        stdout=out,
        stderr=err,
        timed_out=timed_out,
        truncated=truncated,
        log_files=logs,
        tool_result=tool,
    )


__all__ = [
    "FrameSplitter",
    "ToolCallResult",
    "ToolCommandLineCodeResult",
    "ToolError",
    "ToolsMixin",
    "build_tool_result",
    "encode_call",
    "encode_payload",
    "parse_arguments",
    "runner_source",
]
