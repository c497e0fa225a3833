"""A smolagents remote Python executor whose code runs in a Kubernetes pod (through kubectl).

``CodeAgent(tools=[...], model=..., executor=KubectlExecutor())``: every step's code runs in one
stateful Python interpreter in the pod, so variables, imports and tools persist between steps, as
with smolagents' E2B, Docker and Modal executors. ``final_answer(...)`` is detected in the pod and
its value comes back as the step's output. A step's last expression is its output as smolagents'
E2B executor returns it: a PNG or JPEG (a matplotlib figure, an object with ``_repr_png_``) as a
PIL image, else its HTML, JSON, LaTeX, Markdown, SVG or text (from the pod's rich outputs).
"""

from __future__ import annotations

import ast
import json
import secrets
import shlex
from collections.abc import Sequence
from io import BytesIO
from typing import Any

from . import require

require("smolagents", "smolagents")

import PIL.Image  # noqa: E402  (a smolagents dependency)
from smolagents.local_python_executor import CodeOutput  # noqa: E402
from smolagents.monitoring import AgentLogger, LogLevel  # noqa: E402
from smolagents.remote_executors import RemotePythonExecutor  # noqa: E402
from smolagents.tools import Tool, get_tools_definition_code  # noqa: E402
from smolagents.utils import AgentError  # noqa: E402

from ..boundary import RichOutput  # noqa: E402
from ..executor import KubernetesCommandLineCodeExecutor  # noqa: E402

__all__ = ["KubectlExecutor", "main_result", "optional_imports", "step_program"]

# Runs one step in the pod's persistent __main__ namespace: the step's last expression is its
# output (as a notebook cell's), and smolagents' FinalAnswerException carries the final answer.
# One JSON line after the marker on stderr says which; the marker is random per executor.
_STEP = """\
def _kx_step(source, marker):
    import ast, json, linecache, sys, traceback
    namespace = globals()
    linecache.cache["<step>"] = (len(source), None, source.splitlines(True), "<step>")
    report = {{}}
    try:
        tree = ast.parse(source, "<step>")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, "<step>", "exec"), namespace)
        value = eval(compile(last, "<step>", "eval"), namespace) if last is not None else None
        if value is not None:
            report = {{"value": repr(value)}}
            # The step's value as the pod's display() shows it (its PNG, HTML, ..., text/plain),
            # between two marks: the main result that smolagents takes from E2B's executions.
            show = getattr(__import__("builtins"), "display", None)
            if show is not None:
                class _KxMark(object):
                    def __init__(self, text):
                        self.text = text
                    def _repr_mimebundle_(self, include=None, exclude=None):
                        return {{"text/plain": self.text}}
                try:
                    show(_KxMark(marker + "value"))
                    try:
                        show(value)
                    finally:
                        show(_KxMark(marker + "end"))
                except Exception:
                    pass
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        if type(exc).__name__ == "FinalAnswerException":
            report = {{"final": exc.value}}
        else:
            # The step's own frames only, not this wrapper's.
            tb = exc.__traceback__
            while tb is not None and tb.tb_frame.f_code.co_filename != "<step>":
                tb = tb.tb_next
            sys.stdout.flush()
            sys.stderr.write("".join(traceback.format_exception(type(exc), exc, tb)))
            report = {{"error": type(exc).__name__}}
    sys.stdout.flush()
    sys.stderr.write("\\n" + marker + json.dumps(report) + "\\n")
    sys.stderr.flush()
_kx_source = {source!r}
try:
    _kx_step(_kx_source, {marker!r})
finally:
    del _kx_step, _kx_source
"""


def step_program(source: str, marker: str) -> str:
    """The Python block that runs ``source`` as one agent step (see ``_STEP``)."""
    return _STEP.format(source=source, marker=marker)


def optional_imports(code: str) -> str:
    """``code`` with each top-level import made optional (skipped when the module is missing)."""
    tree = ast.parse(code)
    body: list[ast.stmt] = []
    for node in tree.body:
        future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not future:
            handler = ast.ExceptHandler(
                type=ast.Name("ImportError", ast.Load()), name=None, body=[ast.Pass()]
            )
            body.append(ast.Try(body=[node], handlers=[handler], orelse=[], finalbody=[]))
        else:
            body.append(node)
    tree.body = body
    return ast.unparse(ast.fix_missing_locations(tree))


# E2B's result attributes in the order smolagents' E2BExecutor takes them, as MIME types
# (after its jpeg and png, which become PIL images; E2B's own "chart" and "data" have none).
E2B_ORDER = (
    "text/html",
    "application/javascript",
    "application/json",
    "text/latex",
    "text/markdown",
    "application/pdf",
    "image/svg+xml",
    "text/plain",
)


def main_result(outputs: Sequence[RichOutput], marker: str, fallback: Any) -> Any:
    """The step's value as smolagents' E2B executor returns its main result: a JPEG or PNG as a
    PIL image, else the first of E2B_ORDER (JSON parsed). The value's outputs are those the step
    displayed between its two marks (see ``_STEP``); ``fallback`` (the value's repr) when there
    are none (no rich results in the pod) or they were kept in the pod."""
    texts = [o.data if o.mime_type == "text/plain" else None for o in outputs]
    try:
        start = texts.index(marker + "value")
        end = texts.index(marker + "end", start)
    except ValueError:
        return fallback
    found = {o.mime_type: o for o in reversed(outputs[start + 1 : end]) if o.kept_path is None}
    for mime in ("image/jpeg", "image/png"):
        image = found.get(mime)
        if image is not None and isinstance(image.data, bytes):
            return PIL.Image.open(BytesIO(image.data))
    for mime in E2B_ORDER:
        item = found.get(mime)
        if item is not None:
            data = item.data if isinstance(item.data, str) else item.data.decode(errors="replace")
            return json.loads(data) if mime == "application/json" else data
    return fallback


class KubectlExecutor(RemotePythonExecutor):  # type: ignore[misc]
    """smolagents' ``RemotePythonExecutor`` over a stateful :class:`KubernetesCommandLineCodeExecutor`.

    Pass ``executor=`` to use a pod you made (it must be ``stateful=True``; you stop it), or the
    executor's keyword arguments (``image=``, ``namespace=``, ``context=``, ...) to make one that
    :meth:`cleanup` deletes.
    """

    def __init__(
        self,
        additional_imports: list[str] | None = None,
        logger: AgentLogger | None = None,
        allow_pickle: bool = False,
        *,
        executor: KubernetesCommandLineCodeExecutor | None = None,
        timeout: float | None = None,
        **executor_kwargs: Any,
    ) -> None:
        super().__init__(list(additional_imports or []), logger or AgentLogger(LogLevel.INFO), allow_pickle)
        if executor is not None and executor_kwargs:
            raise TypeError("pass either executor= or the executor's keyword arguments, not both")
        self._owned = executor is None
        self.executor = executor or KubernetesCommandLineCodeExecutor(**{**executor_kwargs, "stateful": True})
        self._timeout = timeout
        self._marker = f"@@kx-smolagents-{secrets.token_hex(8)}@@"
        self.installed_packages = self.install_packages(self.additional_imports)
        self.logger.log(f"Kubernetes pod {self.executor.pod_name} is ready", level=LogLevel.INFO)

    def run_code_raise_errors(self, code: str) -> CodeOutput:
        """Run one step in the pod; raise ``AgentError`` if it failed (as the remote executors do)."""
        result = self.executor.run(step_program(code, self._marker), "python", timeout=self._timeout)
        stderr, report = self._split_report(result.stderr)
        logs = result.stdout
        if result.state_lost:
            logs = "(the pod's interpreter was restarted: earlier variables and tools are gone)\n" + logs
        if result.timed_out:
            raise AgentError(f"{logs}\nExecuting code timed out (the pod's limit was reached)", self.logger)
        if report is None or "error" in report or result.exit_code != 0:
            raise AgentError(
                f"{logs}\nExecuting code yielded an error:\n{stderr or f'exit code {result.exit_code}'}",
                self.logger,
            )
        if stderr.strip():
            logs = f"{logs}{stderr}" if logs.endswith("\n") or not logs else f"{logs}\n{stderr}"
        if "final" in report:
            final = self._deserialize_final_answer(report["final"], self.allow_pickle)
            return CodeOutput(output=final, logs=logs, is_final_answer=True)
        if "value" not in report:
            return CodeOutput(output=None, logs=logs, is_final_answer=False)
        return CodeOutput(
            output=main_result(result.outputs, self._marker, report["value"]),
            logs=logs,
            is_final_answer=False,
        )

    def _split_report(self, stderr: str) -> tuple[str, dict[str, Any] | None]:
        """The step's stderr without our report line, and the report (None if the step died)."""
        head, sep, tail = stderr.rpartition(self._marker)
        if not sep:
            return stderr, None
        line, _, rest = tail.partition("\n")
        try:
            report = json.loads(line)
        except ValueError:
            return stderr, None
        if head.endswith("\n"):
            head = head[:-1]
        return head + rest, report if isinstance(report, dict) else None

    def send_tools(self, tools: dict[str, Tool]) -> None:
        """Define the agent's tools in the pod (as the base class does), with imports optional.

        smolagents' tool code begins with every module its tools might use (final_answer's
        brings PIL and numpy); a pod image without one of them still gets the tools, and a tool
        that needs the missing module fails when called, with its ImportError."""
        if "final_answer" in tools:
            self._patch_final_answer_with_exception(tools["final_answer"])
        wanted = {pkg for t in tools.values() for pkg in t.to_dict()["requirements"]}
        wanted -= {*self.installed_packages, "smolagents"}
        if "PIL" in wanted:
            wanted = (wanted - {"PIL"}) | {"pillow"}
        if wanted:
            self.installed_packages += self.install_packages(sorted(wanted))
        code = get_tools_definition_code(tools)
        if code:
            self.logger.log(self.run_code_raise_errors(optional_imports(code)).logs)

    def install_packages(self, additional_imports: list[str]) -> list[str]:
        """pip-install packages into the pod (the interpreter sees them at its next import)."""
        if additional_imports:
            command = "python -m pip install --quiet " + " ".join(shlex.quote(p) for p in additional_imports)
            result = self.executor.run(command, "bash", timeout=self._timeout)
            if result.exit_code != 0:
                raise AgentError(
                    f"pip install in the pod failed (exit {result.exit_code}):\n{result.stderr}", self.logger
                )
            self.logger.log(result.stdout)
        return additional_imports

    def cleanup(self) -> None:
        """Delete the pod if this executor made it."""
        if self._owned:
            self.executor.stop()

    def delete(self) -> None:
        """smolagents' name for cleanup on its container executors."""
        self.cleanup()
