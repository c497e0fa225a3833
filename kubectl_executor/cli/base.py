"""What every command shares: exit codes, the shared options, :class:`Common`, the command
wrapper that maps exceptions to exit codes, building executors, the start-up spinner."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click  # a core dependency: the command works on the base install
import pydantic

from .._cluster.kubectl import Kubectl
from .._cluster.manifest import validate_dns_label
from .._cluster.runner import Runner
from ..defaults import IMAGE, RUN_TIMEOUT
from ..errors import (
    ForbiddenError,
    InvalidInputError,
    KubectlExecutorError,
    KubectlNotFoundError,
    OutcomeUnknownError,
)
from ..executor import KubernetesCommandLineCodeExecutor
from ..settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

# -- exit codes ------------------------------------------------------------------------------------

EXIT_OK = 0
EXIT_CHECK_FAILED = 1  # doctor: a check failed
EXIT_USAGE = 2  # bad flags or input (click's own usage errors use 2 as well)
EXIT_TOOL_ERROR = 125  # kubectl-executor or the cluster failed (pod would not start, RBAC, kubectl error)
EXIT_OUTCOME_UNKNOWN = 126  # the code may have run, its result was lost; do not blindly re-run
EXIT_KUBECTL_NOT_FOUND = 127  # no kubectl binary
EXIT_INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = f"""\b
Exit codes:
  0-255  the code's own exit code (124: timed out)
  {EXIT_USAGE}      usage error (bad flag, file, language, name, JSON)
  {EXIT_TOOL_ERROR}    kubectl-executor or cluster error (pod cannot start, RBAC, kubectl failed)
  {EXIT_OUTCOME_UNKNOWN}    outcome unknown: the code may have run, its result was lost
  {EXIT_KUBECTL_NOT_FOUND}    kubectl not found
  {EXIT_INTERRUPTED}    interrupted
With -o json, errors are printed as {{"error": {{"type", "message", "exit_code"}}}} on stdout,
so a code's own 125-127 can be told from ours."""


def missing_extra(extra: str, exc: ImportError) -> str:
    """One line for a command whose optional extra is not installed (a bug of ours re-raises)."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ImportError) else exc
    missing = (cause.name or str(cause)).split(".")[0]
    if missing == "kubectl_executor":
        raise exc
    return (
        f"this command needs the optional extra [{extra}] ({missing} is not installed): "
        f"pip install 'kubectl-executor[{extra}]'"
    )


class Failure(Exception):
    """A CLI-level error with its exit code (usage problems found after parsing)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- seams for the unit tests -------------------------------------------------------------------


def kubectl_runner() -> Runner | None:
    """The process runner for kubectl (None = the real one). Unit tests patch this."""
    return None


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


# -- shared options -------------------------------------------------------------------------------


def _option(*decls: str, field: str, help: str, **kw: Any) -> Callable[[F], F]:
    return click.option(*decls, envvar=Settings.env_name(field), help=help, **kw)


def access_options(f: F) -> F:
    """How to reach the cluster: --kubectl --kubeconfig --context -n/--namespace."""
    for opt in reversed(
        [
            _option(
                "--kubectl",
                field="kubectl",
                help="kubectl binary (else $KUBECTL, else PATH)",
                show_envvar=True,
            ),
            _option("--kubeconfig", field="kubeconfig", help="kubeconfig file", show_envvar=True),
            _option("--context", field="context", help="kubeconfig context", show_envvar=True),
            _option(
                "-n",
                "--namespace",
                field="namespace",
                help="namespace (else the context's)",
                show_envvar=True,
            ),
        ]
    ):
        f = opt(f)
    return f


def pod_options(f: F) -> F:
    """The pod and the run: --image --timeout --env --print-manifest."""
    return pod_options_with(timeout_default=RUN_TIMEOUT)(f)


def pod_options_with(*, timeout_default: int) -> Callable[[F], F]:
    """:func:`pod_options` for a command whose ``--timeout`` default is its own (``mcp``)."""

    def decorate(f: F) -> F:
        return _pod_options(f, timeout_default)

    return decorate


def _pod_options(f: F, timeout_default: int) -> F:
    for opt in reversed(
        [
            _option("--image", field="image", help=f"container image [default: {IMAGE}]", show_envvar=True),
            _option(
                "--timeout",
                field="timeout",
                type=click.IntRange(min=1),
                help=f"seconds per code block [default: {timeout_default}]",
                show_envvar=True,
            ),
            click.option(
                "--env",
                "env",
                multiple=True,
                metavar="KEY=VALUE",
                help="environment variable for the code (repeatable)",
            ),
            click.option(
                "--print-manifest", is_flag=True, help="print the pod that would be created (JSON) and exit"
            ),
        ]
    ):
        f = opt(f)
    return f


def output_options(f: F) -> F:
    """-o/--output, -v/--verbose, -q/--quiet: the same on every command."""
    for opt in reversed(
        [
            click.option(
                "-o",
                "--output",
                type=click.Choice(["text", "json"]),
                default="text",
                show_default=True,
                help="json: the result model on stdout (binary rich outputs base64)",
            ),
            click.option("-v", "--verbose", count=True, help="log more (-vv: kubectl calls)"),
            click.option("-q", "--quiet", is_flag=True, help="only errors; no progress"),
        ]
    ):
        f = opt(f)
    return f


@dataclass
class Common:
    """What every command gets from the shared options."""

    settings: Settings
    output: str
    quiet: bool
    verbose: int

    @property
    def json(self) -> bool:
        return self.output == "json"


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    root = logging.getLogger()
    if not any(getattr(h, "_kx_cli", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("kubectl-executor: %(levelname)s: %(message)s"))
        handler._kx_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # `sh` logs every command line at INFO; ours are logged (redacted) by kubectl.py at DEBUG.
    logging.getLogger("sh").setLevel(logging.DEBUG if verbose >= 3 else logging.WARNING)


def command(f: Callable[..., int | None]) -> Callable[..., None]:
    """Turn the shared options into :class:`Common`, map exceptions to exit codes, exit."""

    @functools.wraps(f)
    def wrapper(**params: Any) -> None:
        ctx = click.get_current_context()
        output = params.pop("output", "text")
        verbose = params.pop("verbose", 0)
        quiet = params.pop("quiet", False)
        access = {k: params.pop(k, None) for k in ("kubectl", "kubeconfig", "context", "namespace")}
        pod = {k: params.pop(k, None) for k in ("image", "timeout")}
        _setup_logging(verbose, quiet)
        code = EXIT_OK
        try:
            settings = load_settings(**access, **pod)
            common = Common(settings=settings, output=output, quiet=quiet, verbose=verbose)
            code = f(common, **params) or EXIT_OK
        except KeyboardInterrupt:
            report_error(output, "Interrupted", "interrupted", EXIT_INTERRUPTED)
            code = EXIT_INTERRUPTED
        except Failure as exc:
            report_error(output, "UsageError", str(exc), exc.exit_code)
            code = exc.exit_code
        except pydantic.ValidationError as exc:
            report_error(output, "InvalidSetting", _validation_message(exc), EXIT_USAGE)
            code = EXIT_USAGE
        except KubectlNotFoundError as exc:
            report_error(output, type(exc).__name__, str(exc), EXIT_KUBECTL_NOT_FOUND)
            code = EXIT_KUBECTL_NOT_FOUND
        except InvalidInputError as exc:
            report_error(output, type(exc).__name__, str(exc), EXIT_USAGE)
            code = EXIT_USAGE
        except OutcomeUnknownError as exc:
            report_error(output, type(exc).__name__, str(exc), EXIT_OUTCOME_UNKNOWN)
            code = EXIT_OUTCOME_UNKNOWN
        except KubectlExecutorError as exc:
            message = str(exc)
            if isinstance(exc, ForbiddenError):
                message += "\n  hint: `kubectl-executor doctor` prints the Role this tool needs"
            report_error(output, type(exc).__name__, message, EXIT_TOOL_ERROR)
            code = EXIT_TOOL_ERROR
        ctx.exit(code)

    return wrapper


def _validation_message(exc: pydantic.ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"])
        parts.append(
            f"{field} ({Settings.env_name(field) if field in Settings.model_fields else field}): {err['msg']}"
        )
    return "invalid setting: " + "; ".join(parts)


def report_error(output: str, kind: str, message: str, exit_code: int) -> None:
    if output == "json":
        click.echo(json.dumps({"error": {"type": kind, "message": message, "exit_code": exit_code}}))
    else:
        click.echo(f"kubectl-executor: error: {message}", err=True)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


# -- progress -------------------------------------------------------------------------------------


class Progress:
    """A spinner on stderr while the pod starts, only when stderr is a terminal."""

    FRAMES = "|/-\\"

    def __init__(self, message: str, enabled: bool) -> None:
        self.message = message
        self.enabled = enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        start = time.monotonic()
        i = 0
        while True:  # the first frame at once, then one per tick until stopped
            frame = self.FRAMES[i % len(self.FRAMES)]
            sys.stderr.write(f"\r{frame} {self.message} ({time.monotonic() - start:.0f}s)")
            sys.stderr.flush()
            i += 1
            if self._stop.wait(0.1):
                return

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def progress(common: Common, message: str) -> Progress:
    return Progress(message, enabled=not common.quiet and not common.json and stderr_is_tty())


# -- building executors --------------------------------------------------------------------------


def env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """``--env KEY=VALUE`` flags as :attr:`PodShape.env`."""
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failure(f"--env needs KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def make_executor(
    common: Common,
    *,
    attach_to: str | None = None,
    env: Sequence[str] = (),
    pod: Mapping[str, Any] | None = None,
    **extra: Any,
) -> KubernetesCommandLineCodeExecutor:
    """An executor (not started), its options built once from the settings: ``pod`` holds
    :class:`PodShape` fields over them, ``extra`` the executor's other keywords. ``attach_to``
    names an existing ready pod to use, never to delete."""
    settings = common.settings
    if attach_to is not None:
        extra.update(pod_name=validate_dns_label(attach_to, "pod name"), attach=True)
    return KubernetesCommandLineCodeExecutor(
        access=settings.cluster_access(),
        pod=settings.pod_shape(**{**(pod or {}), **({"env": env_pairs(env)} if env else {})}),
        run_options=settings.run_options(),
        start=False,
        runner=kubectl_runner(),
        **extra,
    )


def make_kubectl(common: Common) -> Kubectl:
    return Kubectl(common.settings.cluster_access(), runner=kubectl_runner())


@contextlib.contextmanager
def started(
    common: Common, executor: KubernetesCommandLineCodeExecutor
) -> Iterator[KubernetesCommandLineCodeExecutor]:
    """Start (with progress), yield, and always stop: an ephemeral pod is deleted, even on Ctrl-C."""
    try:
        with progress(common, f"starting pod {executor.pod_name}"):
            executor.start()
        yield executor
    finally:
        executor.stop()


def show_manifest(executor: KubernetesCommandLineCodeExecutor) -> int:
    try:
        echo_json(executor.manifest())
    finally:
        executor.stop()  # nothing was created; this only releases the kubectl state
    return EXIT_OK


class ExitCodesGroup(click.Group):
    """A group whose help ends with the exit codes."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write_text(EXIT_CODES_HELP)


def with_exit_codes(extra: str = "") -> str:
    return (extra + "\n\n" if extra else "") + EXIT_CODES_HELP
