"""The ``kubectl-executor`` command line (also the kubectl plugin ``kubectl executor``).

The only module that prints, configures logging, or shows progress. Every cluster operation
still goes through the library (and so through kubectl); this module only parses, picks an exit
code and formats. Options fall back to ``KUBECTL_EXECUTOR_*`` environment variables through the
same :class:`~kubectl_executor.settings.Settings` model the library uses.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click  # a core dependency: the command works on the base install
import pydantic

from ._cluster.gc import GcCandidate, pod_created_at, selector
from ._cluster.kubectl import Kubectl
from ._cluster.labels import (
    LIFETIME_LABEL,
    LONG_LIVED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_HOST_LABEL,
    OWNER_PID_LABEL,
    SESSION_LABEL,
)
from ._cluster.manifest import CONTAINER, validate_dns_label
from ._cluster.models import Pod
from ._cluster.pod import apply_pod, delete_pod, get_pod, list_pods, wait_ready
from ._cluster.runner import Runner
from ._exec.dispatcher import TOOL_RUNNER_FILE
from ._exec.protocol import TIMEOUT_NOTE
from ._exec.results import CodeBlock, infer_language
from ._version import __version__
from .boundary import ClusterAccess, CommandLineCodeResult
from .errors import (
    ForbiddenError,
    InvalidInputError,
    KubectlExecutorError,
    KubectlNotFoundError,
    OutcomeUnknownError,
    TransferError,
)
from .executor import KubernetesCommandLineCodeExecutor
from .gc import collect_garbage
from .settings import ENV_PREFIX, Settings, load_settings
from .workspace import (
    PersistentVolumeClaim,
    WorkspaceVolume,
    delete_claims,
    get_claim,
    list_claims,
    list_workspaces,
    workspace_selector,
)

if TYPE_CHECKING:
    from .mcp import KubectlExecutorMcp

logger = logging.getLogger(__name__)

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

EXTENSIONS = {
    ".py": "python",
    ".sh": "sh",
    ".bash": "bash",
    ".ps1": "pwsh",
    ".js": "javascript",
    ".html": "html",
    ".css": "css",
}

DEFAULT_UP_DEADLINE = 24 * 3600


def _missing_extra(extra: str, exc: ImportError) -> str:
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


def _runner() -> Runner | None:
    """The process runner for kubectl (None = the real one). Unit tests patch this."""
    return None


def _stderr_is_tty() -> bool:
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
    for opt in reversed(
        [
            _option(
                "--image", field="image", help="container image [default: python:3-slim]", show_envvar=True
            ),
            _option(
                "--timeout",
                field="timeout",
                type=click.IntRange(min=1),
                help="seconds per code block [default: 60]",
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
                help="json: the result model on stdout",
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
            _report(output, "Interrupted", "interrupted", EXIT_INTERRUPTED)
            code = EXIT_INTERRUPTED
        except Failure as exc:
            _report(output, "UsageError", str(exc), exc.exit_code)
            code = exc.exit_code
        except pydantic.ValidationError as exc:
            _report(output, "InvalidSetting", _validation_message(exc), EXIT_USAGE)
            code = EXIT_USAGE
        except KubectlNotFoundError as exc:
            _report(output, type(exc).__name__, str(exc), EXIT_KUBECTL_NOT_FOUND)
            code = EXIT_KUBECTL_NOT_FOUND
        except InvalidInputError as exc:
            _report(output, type(exc).__name__, str(exc), EXIT_USAGE)
            code = EXIT_USAGE
        except OutcomeUnknownError as exc:
            _report(output, type(exc).__name__, str(exc), EXIT_OUTCOME_UNKNOWN)
            code = EXIT_OUTCOME_UNKNOWN
        except KubectlExecutorError as exc:
            message = str(exc)
            if isinstance(exc, ForbiddenError):
                message += "\n  hint: `kubectl-executor doctor` prints the Role this tool needs"
            _report(output, type(exc).__name__, message, EXIT_TOOL_ERROR)
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


def _report(output: str, kind: str, message: str, exit_code: int) -> None:
    if output == "json":
        click.echo(json.dumps({"error": {"type": kind, "message": message, "exit_code": exit_code}}))
    else:
        click.echo(f"kubectl-executor: error: {message}", err=True)


def _echo_json(data: Any) -> None:
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


def _progress(common: Common, message: str) -> Progress:
    return Progress(message, enabled=not common.quiet and not common.json and _stderr_is_tty())


# -- building executors --------------------------------------------------------------------------


def _env_pairs(pairs: Sequence[str]) -> list[dict[str, str]]:
    env = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failure(f"--env needs KEY=VALUE, got {pair!r}")
        env.append({"key": key, "value": value})
    return env


def _executor(
    common: Common,
    *,
    pod: str | None = None,
    env: Sequence[str] = (),
    **extra: Any,
) -> KubernetesCommandLineCodeExecutor:
    """An executor (not started). ``pod`` attaches to an existing ready pod and never deletes it."""
    kwargs = common.settings.executor_kwargs(**extra)
    if pod is not None:
        kwargs.update(pod_name=validate_dns_label(pod, "pod name"), attach=True)
    return KubernetesCommandLineCodeExecutor(
        env_vars=_env_pairs(env) or None, start=False, runner=_runner(), **kwargs
    )


def _kubectl(common: Common) -> Kubectl:
    s = common.settings
    access = ClusterAccess(
        kubectl=s.kubectl,
        kubeconfig=s.kubeconfig,
        context=s.context,
        namespace=s.namespace,
        remote_control_plane=s.remote_control_plane,
        certificate_authority=s.certificate_authority,
        insecure_skip_tls_verify=bool(s.insecure_skip_tls_verify),
    )
    return Kubectl(access, runner=_runner())


@contextlib.contextmanager
def _started(
    common: Common, executor: KubernetesCommandLineCodeExecutor
) -> Iterator[KubernetesCommandLineCodeExecutor]:
    """Start (with progress), yield, and always stop: an ephemeral pod is deleted, even on Ctrl-C."""
    try:
        with _progress(common, f"starting pod {executor.pod_name}"):
            executor.start()
        yield executor
    finally:
        executor.stop()


def _print_manifest(executor: KubernetesCommandLineCodeExecutor) -> int:
    try:
        _echo_json(executor.manifest())
    finally:
        executor.stop()  # nothing was created; this only releases the kubectl state
    return EXIT_OK


def _stream_output() -> Callable[[str, bytes], None]:
    out = sys.stdout.buffer
    err = sys.stderr.buffer

    def write(stream: str, chunk: bytes) -> None:
        target = out if stream == "stdout" else err
        target.write(chunk)
        target.flush()

    return write


def _run_blocks(
    common: Common, executor: KubernetesCommandLineCodeExecutor, blocks: list[CodeBlock], *, attached: bool
) -> int:
    """Run, stream (text) or dump (json) the result; the exit code is the code's."""
    streamed = False

    def on_output(stream: str, chunk: bytes) -> None:
        nonlocal streamed
        streamed = True
        writer(stream, chunk)

    writer = _stream_output()
    with _started(common, executor):
        result = executor.execute_code_blocks(blocks, on_output=None if common.json else on_output)
    if common.json:
        _echo_json(result.model_dump(mode="json"))
    else:
        _text_epilogue(result, streamed, kept=attached, timeout=executor.timeout)
    return result.exit_code


def _text_epilogue(result: CommandLineCodeResult, streamed: bool, *, kept: bool, timeout: float) -> None:
    """What the stream did not show: save-only notes, refusals, the timeout note."""
    if result.timed_out:
        click.echo(TIMEOUT_NOTE.format(timeout=timeout), err=True)
    elif not streamed and result.output:
        click.echo(result.output.rstrip("\n"), err=result.exit_code != 0)
    if result.truncated and kept and result.log_files:
        click.echo(f"output was truncated; full log in the pod: {' '.join(result.log_files)}", err=True)


# -- the commands ----------------------------------------------------------------------------------


class _Group(click.Group):
    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        formatter.write_paragraph()
        formatter.write_text(EXIT_CODES_HELP)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="kubectl-executor")
def cli() -> None:
    """Run code in a Kubernetes pod, talking to the cluster only through kubectl.

    Every option also reads KUBECTL_EXECUTOR_<OPTION> from the environment (e.g.
    KUBECTL_EXECUTOR_NAMESPACE); flags win. Bearer-token mode: KUBECTL_EXECUTOR_REMOTE_CONTROL_PLANE
    with the token in KUBE_TOKEN (never a flag: argv is readable by every local user).
    """


def _epilog(extra: str = "") -> str:
    return (extra + "\n\n" if extra else "") + EXIT_CODES_HELP


def _language_for(path: str | None, lang: str | None, code: str) -> str:
    if lang:
        return lang
    if path is not None:
        language = EXTENSIONS.get(Path(path).suffix.lower())
        if language is None:
            raise Failure(f"cannot tell the language of {path!r} from its extension: pass --lang")
        return language
    guessed = infer_language(code)
    if guessed == "unknown":
        raise Failure("cannot tell the language of the code on stdin: pass --lang")
    return guessed


@cli.command(
    epilog=_epilog(
        "Examples:\n\n\b\n  kubectl-executor run script.py\n  echo 'ls /' | kubectl-executor run --lang sh -"
    )
)
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False, path_type=str))
@click.option("--lang", help="language (python, sh, bash, pwsh...); default: from the file extension")
@click.option("--pod", help="run in this existing pod (from `up`) instead of a fresh one")
@access_options
@pod_options
@output_options
@command
def run(
    common: Common, file: str, lang: str | None, pod: str | None, env: tuple[str, ...], print_manifest: bool
) -> int:
    """Run FILE (or - for stdin) in a fresh pod that is deleted afterwards."""
    if file == "-":
        code = sys.stdin.read()
        language = _language_for(None, lang, code)
    else:
        try:
            code = Path(file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise Failure(f"cannot read {file}: {exc}") from exc
        language = _language_for(file, lang, code)
    executor = _executor(common, pod=pod, env=env)
    if print_manifest:
        return _print_manifest(executor)
    return _run_blocks(common, executor, [CodeBlock(code=code, language=language)], attached=pod is not None)


@cli.command("exec", epilog=_epilog("Example:\n\n\b\n  kubectl-executor exec -c 'print(6*7)'"))
@click.option(
    "-c", "--code", "codes", multiple=True, required=True, help="code to run (repeat: blocks in order)"
)
@click.option("--lang", default="python", show_default=True, help="language of the code")
@click.option("--pod", help="run in this existing pod (from `up`) instead of a fresh one")
@access_options
@pod_options
@output_options
@command
def exec_(
    common: Common,
    codes: tuple[str, ...],
    lang: str,
    pod: str | None,
    env: tuple[str, ...],
    print_manifest: bool,
) -> int:
    """Run code given with -c; blocks stop at the first non-zero exit."""
    executor = _executor(common, pod=pod, env=env)
    if print_manifest:
        return _print_manifest(executor)
    blocks = [CodeBlock(code=c, language=lang) for c in codes]
    return _run_blocks(common, executor, blocks, attached=pod is not None)


@cli.command(
    epilog=_epilog(
        'Example:\n\n\b\n  kubectl-executor call tools:add --args \'{"a": 1, "b": 2}\' --upload ./tools.py'
    )
)
@click.argument("target", metavar="MODULE:FUNCTION")
@click.option(
    "--args", "arguments", default="{}", show_default=True, help="keyword arguments as a JSON object"
)
@click.option(
    "--upload",
    "uploads",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="file or directory to upload into the workspace first (repeatable)",
)
@click.option("--pod", help="call in this existing pod (from `up`) instead of a fresh one")
@access_options
@pod_options
@output_options
@command
def call(
    common: Common,
    target: str,
    arguments: str,
    uploads: tuple[Path, ...],
    pod: str | None,
    env: tuple[str, ...],
    print_manifest: bool,
) -> int:
    """Call FUNCTION of MODULE (a module in the pod's workspace) with --args; print its result."""
    module, sep, function = target.partition(":")
    if not sep or not _DOTTED.match(module) or not _IDENTIFIER.match(function):
        raise Failure(f"expected MODULE:FUNCTION (a dotted module and a function name), got {target!r}")
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError as exc:
        raise Failure(f"--args is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise Failure("--args must be a JSON object of keyword arguments")
    executor = _executor(common, pod=pod, env=env)
    if print_manifest:
        return _print_manifest(executor)
    streamed = False

    def on_output(stream: str, chunk: bytes) -> None:
        nonlocal streamed
        streamed = True
        writer(stream, chunk)

    writer = _stream_output()
    with _started(common, executor):
        for path in uploads:
            # A directory keeps its name (a package), a file lands at the workspace top.
            executor.upload_from_disk(path, remote_prefix=path.name if path.is_dir() else "")
        executor.install_pod_dispatcher(default_module=module, runner_filename=TOOL_RUNNER_FILE)
        result = executor.execute_tool_function(
            parsed,
            function,
            module=module,
            runner_script=TOOL_RUNNER_FILE,
            on_output=None if common.json else on_output,
        )
    if common.json:
        _echo_json(result.model_dump(mode="json"))
    else:
        _text_epilogue(result, streamed, kept=pod is not None, timeout=executor.timeout)
    return result.exit_code


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")

_REMOTE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?):(.*)$")


def parse_cp_path(spec: str) -> tuple[str | None, str]:
    """``pod:path`` -> (pod, path); anything else (also ``./a:b``, ``/x:y``) is local: (None, spec)."""
    m = _REMOTE.match(spec)
    if m and not spec.startswith(("./", "/")):
        return m.group(1), m.group(3)
    return None, spec


@cli.command(
    epilog=_epilog(
        "Paths in the pod are relative to its workspace.\n\n"
        "Examples:\n\n\b\n  kubectl-executor cp ./data.csv mypod:in/data.csv\n  kubectl-executor cp mypod:out ./out"
    )
)
@click.argument("source")
@click.argument("destination")
@access_options
@output_options
@command
def cp(common: Common, source: str, destination: str) -> int:
    """Copy a file or directory into (local -> POD:PATH) or out of (POD:PATH -> local) a pod."""
    src_pod, src_path = parse_cp_path(source)
    dst_pod, dst_path = parse_cp_path(destination)
    if (src_pod is None) == (dst_pod is None):
        raise Failure("exactly one of SOURCE and DESTINATION must be POD:PATH")
    pod = src_pod or dst_pod
    assert pod is not None
    if dst_pod is not None and not Path(src_path).exists():
        raise Failure(f"{src_path}: no such file or directory")
    executor = _executor(common, pod=pod)
    with _started(common, executor):
        if dst_pod is not None:
            written = _upload(executor, Path(src_path), dst_path)
            direction = "upload"
        else:
            written = [str(p) for p in _download(executor, src_path, Path(dst_path))]
            direction = "download"
    if common.json:
        _echo_json({"direction": direction, "pod": pod, "files": written})
    elif not common.quiet:
        for path in written:
            click.echo(path)
    return EXIT_OK


def _upload(executor: KubernetesCommandLineCodeExecutor, local: Path, remote: str) -> list[str]:
    """``cp`` semantics: a directory's content goes to ``remote``; a file goes to ``remote``, or
    into it when it is empty or ends with ``/``."""
    if local.is_dir() or not remote or remote.endswith("/"):
        return executor.upload_from_disk(local, remote_prefix=remote.rstrip("/"))
    parent, _, name = remote.rstrip("/").rpartition("/")
    if name == local.name:
        return executor.upload_from_disk(local, remote_prefix=parent)
    # Renamed on the way: the file travels as content (read into memory).
    return [executor.upload_file_content(remote, local.read_bytes())]


def _download(executor: KubernetesCommandLineCodeExecutor, remote: str, local: Path) -> list[Path]:
    """A file, or else a directory (``""``, ``.`` or a trailing ``/`` name one directly). An
    existing local directory receives the file or directory under its own name."""
    name = remote.rstrip("/").rpartition("/")[2]
    if remote.strip() in ("", ".", "./") or remote.endswith("/"):
        return _download_dir(executor, remote, local, name)
    target = local / name if local.is_dir() else local
    try:
        return [executor.download_file(remote, target)]
    except TransferError as exc:
        if "not a regular file" not in str(exc):
            raise
    return _download_dir(executor, remote, local, name)


def _download_dir(
    executor: KubernetesCommandLineCodeExecutor, remote: str, local: Path, name: str
) -> list[Path]:
    if local.is_dir() and any(local.iterdir()):
        if not name or name == ".":
            raise Failure(f"{local} is not empty; give a new directory to download the workspace into")
        local = local / name
    return executor.download_dir(remote, local)


@cli.command(
    epilog=_epilog(
        "The pod carries the label kubectl-executor.io/lifetime=long-lived: gc leaves it alone unless\n"
        "--include-long-lived; `down NAME` deletes it. Use it with run/exec/call/cp --pod NAME."
    )
)
@click.argument("name")
@click.option(
    "--deadline",
    type=click.IntRange(min=0),
    default=DEFAULT_UP_DEADLINE,
    show_default=True,
    help="activeDeadlineSeconds of the pod (0: none)",
)
@access_options
@pod_options
@output_options
@command
def up(common: Common, name: str, deadline: int, env: tuple[str, ...], print_manifest: bool) -> int:
    """Create a named long-lived pod and wait until it is ready."""
    validate_dns_label(name, "pod name")
    executor = _executor(
        common,
        env=env,
        pod_name=name,
        labels={LIFETIME_LABEL: LONG_LIVED},
        active_deadline_seconds=deadline or None,
    )
    if print_manifest:
        return _print_manifest(executor)
    try:
        kubectl = executor.kubectl
        existing = get_pod(kubectl, name)
        if existing is not None:
            if existing.metadata.labels.get(LIFETIME_LABEL) != LONG_LIVED:
                raise Failure(f"pod {name} exists and was not made by `up`", EXIT_TOOL_ERROR)
            pod = existing
        else:
            apply_pod(kubectl, executor.manifest())
            try:
                with _progress(common, f"starting pod {name}"):
                    pod = wait_ready(kubectl, name, common.settings.startup_timeout or 300.0)
            except BaseException:
                delete_pod(kubectl, name)
                raise
    finally:
        executor.stop()
    info = _pod_info(pod)
    if common.json:
        _echo_json(info)
    elif not common.quiet:
        click.echo(
            f"pod {name} is {'ready' if pod.ready else pod.status.phase} in namespace {info['namespace']}"
        )
    return EXIT_OK


@cli.command(epilog=_epilog())
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="delete every long-lived pod in the namespace")
@click.option("--wait", is_flag=True, help="wait until the pods are gone")
@access_options
@output_options
@command
def down(common: Common, names: tuple[str, ...], all_: bool, wait: bool) -> int:
    """Delete long-lived pods made by `up` (never pods this tool did not make)."""
    if not names and not all_:
        raise Failure("name the pods to delete, or pass --all")
    kubectl = _kubectl(common)
    try:
        targets: list[str] = []
        missing: list[str] = []
        if all_:
            found = list_pods(kubectl, f"{selector()},{LIFETIME_LABEL}={LONG_LIVED}")
            targets = [p.metadata.name for p in found]
        for name in names:
            pod = get_pod(kubectl, validate_dns_label(name, "pod name"))
            if pod is None:
                missing.append(name)
            elif pod.metadata.labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                raise Failure(
                    f"pod {name} was not made by kubectl-executor; not deleting it", EXIT_TOOL_ERROR
                )
            elif name not in targets:
                targets.append(name)
        for name in targets:
            delete_pod(kubectl, name, wait=wait)
    finally:
        kubectl.close()
    if common.json:
        _echo_json({"deleted": targets, "not_found": missing})
    elif not common.quiet:
        for name in targets:
            click.echo(f"deleted pod {name}")
        for name in missing:
            click.echo(f"pod {name} not found", err=True)
    return EXIT_OK


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _pod_info(pod: Pod) -> dict[str, Any]:
    labels = pod.metadata.labels
    created = pod_created_at(pod)
    return {
        "name": pod.metadata.name,
        "namespace": pod.metadata.namespace,
        "kind": "long-lived" if labels.get(LIFETIME_LABEL) == LONG_LIVED else "session",
        "phase": pod.status.phase,
        "ready": pod.ready,
        "age_seconds": None if created is None else round(time.time() - created),
        "session": labels.get(SESSION_LABEL),
        "owner": f"{labels.get(OWNER_HOST_LABEL, '?')}:{labels.get(OWNER_PID_LABEL, '?')}",
        "image": pod.spec.containers[0].image if pod.spec.containers else None,
    }


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@cli.command("ls", epilog=_epilog())
@click.option("-A", "--all-namespaces", is_flag=True, help="list in every namespace")
@click.option("--long-lived", is_flag=True, help="only pods made by `up`")
@access_options
@output_options
@command
def ls(common: Common, all_namespaces: bool, long_lived: bool) -> int:
    """List this tool's pods: long-lived ones (from `up`) and those of running sessions."""
    sel = selector() + (f",{LIFETIME_LABEL}={LONG_LIVED}" if long_lived else "")
    kubectl = _kubectl(common)
    try:
        pods = list_pods(kubectl, sel, all_namespaces=all_namespaces)
    finally:
        kubectl.close()
    infos = [_pod_info(p) for p in pods]
    if common.json:
        _echo_json(infos)
        return EXIT_OK
    if not infos:
        if not common.quiet:
            click.echo("no kubectl-executor pods", err=True)
        return EXIT_OK
    header = (["NAMESPACE"] if all_namespaces else []) + [
        "NAME",
        "KIND",
        "PHASE",
        "READY",
        "AGE",
        "OWNER",
        "IMAGE",
    ]
    rows = [header]
    for i in infos:
        rows.append(
            ([i["namespace"]] if all_namespaces else [])
            + [
                i["name"],
                i["kind"],
                i["phase"],
                "yes" if i["ready"] else "no",
                _age(i["age_seconds"]),
                i["owner"],
                i["image"] or "",
            ]
        )
    _table(rows)
    return EXIT_OK


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h``, ``1d`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 10m, 2h or 1d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@cli.command(
    epilog=_epilog(
        "A pod is deleted when it finished (Failed/Succeeded, e.g. DeadlineExceeded), when its owner\n"
        "process on this host is gone, or when it is older than --older-than. Pods of live owners and\n"
        "long-lived pods (from `up`) are kept unless --include-live-owners / --include-long-lived."
    )
)
@click.option(
    "--older-than",
    "older_than",
    metavar="DURATION",
    help="also delete pods older than this (90s, 10m, 2h, 1d)",
)
@click.option("--session", help="only pods of this session id")
@click.option("--owner-host", help="only pods created from this host")
@click.option(
    "--include-live-owners", is_flag=True, help="also pods whose owner process is still running here"
)
@click.option("--include-long-lived", is_flag=True, help="also long-lived pods made by `up`")
@click.option(
    "--volumes",
    is_flag=True,
    help="also workspace claims (PersistentVolumeClaims) by the same rules: deletes data",
)
@click.option("--dry-run", is_flag=True, help="show what would be deleted, delete nothing")
@click.option("-A", "--all-namespaces", is_flag=True, help="look in every namespace")
@access_options
@output_options
@command
def gc(
    common: Common,
    older_than: str | None,
    session: str | None,
    owner_host: str | None,
    include_live_owners: bool,
    include_long_lived: bool,
    volumes: bool,
    dry_run: bool,
    all_namespaces: bool,
) -> int:
    """Delete this tool's orphaned pods (and, with --volumes, workspace claims)."""
    ttl = parse_duration(older_than) if older_than is not None else None
    kubectl = _kubectl(common)
    try:
        found = collect_garbage(
            kubectl,
            older_than=ttl,
            session=session,
            owner_host=owner_host,
            include_live_owners=include_live_owners,
            include_long_lived=include_long_lived,
            dry_run=dry_run,
            all_namespaces=all_namespaces,
            include_volumes=volumes,
        )
    finally:
        kubectl.close()
    if common.json:
        _echo_json([asdict(c) for c in found])
    elif not common.quiet:
        _print_gc(found, dry_run)
    return EXIT_OK


def _print_gc(found: list[GcCandidate], dry_run: bool) -> None:
    if not found:
        click.echo("nothing to collect", err=True)
    for c in found:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {c.kind} {c.namespace}/{c.name}: {c.reason} ({c.detail})")


# -- doctor ---------------------------------------------------------------------------------------

# (verb, resource, subresource, why): every call the library makes.
REQUIRED_ACCESS: list[tuple[str, str, str, str]] = [
    ("create", "pods", "", "create the pod (kubectl apply)"),
    ("get", "pods", "", "read the pod (apply, attach)"),
    ("list", "pods", "", "reuse, ls, gc"),
    ("watch", "pods", "", "wait until the pod is ready"),
    ("delete", "pods", "", "stop(), down, gc"),
    ("create", "pods", "exec", "run code and copy files (exec over SPDY, and WebSocket on 1.31+)"),
    ("get", "pods", "exec", "run code (exec over WebSocket, kubectl 1.30+ on older servers)"),
]

# Grants the README's Role has that not every cluster needs: a missing one is a warning, not a failure.
OPTIONAL_ACCESS = {
    "get pods/exec": (
        "API servers from 1.35 on authorize an exec over WebSocket as create pods/exec (measured: "
        "every feature works without it there); older ones need it for exec over WebSocket"
    ),
}

SUPPORTED_KUBECTL = ((1, 30), (1, 37))


def role_yaml(namespace: str) -> str:
    """The minimal Role (and a RoleBinding to fill in) for everything the library does."""
    return f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: kubectl-executor
  namespace: {namespace}
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["create", "get", "list", "watch", "delete"]
  - apiGroups: [""]
    resources: ["pods/exec"]
    verbs: ["create", "get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kubectl-executor
  namespace: {namespace}
subjects:
  - kind: User  # or ServiceAccount / Group: whoever runs kubectl-executor
    name: REPLACE-ME
    apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: kubectl-executor
  apiGroup: rbac.authorization.k8s.io
"""


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail | skip
    detail: str


def _version_tuple(git_version: str) -> tuple[int, int] | None:
    m = re.match(r"^v?(\d+)\.(\d+)", git_version)
    return (int(m.group(1)), int(m.group(2))) if m else None


IMAGE_TOOLS_SCRIPT = (
    'for t in sh timeout tar python3 python; do if command -v "$t" >/dev/null 2>&1; '
    'then echo "$t yes"; else echo "$t no"; fi; done'
)


class Doctor:
    """The checks, each a method that appends to ``checks``; I/O only through the library."""

    def __init__(self, common: Common, *, skip_pod: bool) -> None:
        self.common = common
        self.skip_pod = skip_pod
        self.checks: list[Check] = []
        self.namespace = common.settings.namespace or "default"
        self.missing_access: list[str] = []

    def add(self, name: str, status: str, detail: str) -> None:
        self.checks.append(Check(name, status, detail))
        if not self.common.json and not self.common.quiet:
            mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}[status]
            click.echo(f"[{mark}] {name}: {detail}")

    def run(self) -> int:
        try:
            kubectl = _kubectl(self.common)
        except KubectlNotFoundError as exc:
            self.add("kubectl", "fail", str(exc))
            return self.finish()
        try:
            self.check_kubectl(kubectl)
            self.check_context(kubectl)
            reachable = self.check_server(kubectl)
            if reachable:
                self.check_access(kubectl)
                executor = _executor(self.common)
                try:
                    manifest = executor.manifest()
                finally:
                    executor.stop()
                self.check_dry_run(kubectl, manifest)
                self.check_image()
        finally:
            kubectl.close()
        return self.finish()

    def finish(self) -> int:
        failed = any(c.status == "fail" for c in self.checks)
        if self.common.json:
            _echo_json(
                {
                    "ok": not failed,
                    "checks": [asdict(c) for c in self.checks],
                    "missing_access": self.missing_access,
                    "role": role_yaml(self.namespace) if self.missing_access else None,
                }
            )
        elif self.missing_access:
            click.echo(
                f"\nMissing access: {', '.join(self.missing_access)}. The minimal Role to grant "
                f"(kubectl apply -f -):\n"
            )
            click.echo(role_yaml(self.namespace), nl=False)
        return EXIT_CHECK_FAILED if failed else EXIT_OK

    def check_kubectl(self, kubectl: Kubectl) -> None:
        done = kubectl.run(["version", "--client", "-o", "json"], check=False)
        try:
            version = json.loads(done.stdout)["clientVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            self.add("kubectl", "fail", f"{kubectl.path} did not report its version")
            return
        parsed = _version_tuple(version)
        low, high = SUPPORTED_KUBECTL
        if parsed is None or not low <= parsed <= high:
            self.add(
                "kubectl",
                "warn",
                f"{kubectl.path} {version}: outside the tested range {low[0]}.{low[1]}-{high[0]}.{high[1]}",
            )
        else:
            self.add("kubectl", "ok", f"{kubectl.path} {version}")

    def check_context(self, kubectl: Kubectl) -> None:
        s = self.common.settings
        if s.remote_control_plane:
            context = f"bearer-token mode ({s.remote_control_plane})"
        elif s.context:
            context = s.context
        else:
            done = kubectl.run(["config", "current-context"], check=False)
            context = done.stdout.decode(errors="replace").strip()
            if done.returncode != 0 or not context:
                self.add("context", "fail", "no current context: set one, or pass --context / --kubeconfig")
                return
        if not s.namespace:
            done = kubectl.run(
                ["config", "view", "--minify", "-o", "jsonpath={.contexts[0].context.namespace}"], check=False
            )
            self.namespace = done.stdout.decode(errors="replace").strip() or "default"
        self.add("context", "ok", f"context {context}, namespace {self.namespace}")

    def check_server(self, kubectl: Kubectl) -> bool:
        done = kubectl.run(["version", "-o", "json"], check=False, idempotent=False, timeout=30)
        try:
            version = json.loads(done.stdout)["serverVersion"]["gitVersion"]
        except (ValueError, KeyError, TypeError):
            detail = done.stderr.decode(errors="replace").strip().splitlines()
            self.add(
                "server", "fail", f"cannot reach the API server: {detail[-1] if detail else 'no answer'}"
            )
            return False
        self.add("server", "ok", f"API server {version}")
        return True

    def check_access(self, kubectl: Kubectl) -> None:
        for verb, resource, sub, why in REQUIRED_ACCESS:
            args = ["auth", "can-i", verb, resource]
            if sub:
                args.append(f"--subresource={sub}")
            what = f"{verb} {resource}{'/' + sub if sub else ''}"
            done = kubectl.run(args, check=False, timeout=30)
            answer = done.stdout.decode(errors="replace").strip().lower()
            if answer.startswith("yes"):
                self.add(f"can-i {what}", "ok", why)
            elif answer.startswith("no") and what in OPTIONAL_ACCESS:
                self.add(f"can-i {what}", "warn", f"not allowed; {OPTIONAL_ACCESS[what]}")
            elif answer.startswith("no"):
                self.add(f"can-i {what}", "fail", f"not allowed; needed to {why}")
                self.missing_access.append(what)
            else:
                err = done.stderr.decode(errors="replace").strip().splitlines()
                self.add(f"can-i {what}", "warn", f"could not check ({err[-1] if err else 'no answer'})")

    def check_dry_run(self, kubectl: Kubectl, manifest: dict[str, Any]) -> None:
        done = kubectl.run(
            ["apply", "--dry-run=server", "-f", "-", "-o", "name"],
            stdin=json.dumps(manifest).encode(),
            check=False,
        )
        if done.returncode == 0:
            self.add(
                "pod manifest", "ok", "admitted by a server-side dry run (Pod Security, quotas, webhooks)"
            )
        else:
            err = done.stderr.decode(errors="replace").strip()
            self.add("pod manifest", "fail", f"rejected by a server-side dry run: {err}")

    def check_image(self) -> None:
        image = self.common.settings.image or "python:3-slim"
        if self.skip_pod:
            self.add("image", "skip", "--skip-pod: not starting a test pod")
            return
        if self.missing_access:
            self.add("image", "skip", "missing access: not starting a test pod")
            return
        executor = _executor(self.common)
        try:
            with _progress(self.common, f"starting test pod {executor.pod_name}"):
                executor.start()
            done = executor.kubectl.run(
                ["exec", executor.pod_name, "-c", CONTAINER, "--", "sh", "-c", IMAGE_TOOLS_SCRIPT],
                check=False,
                timeout=60,
            )
            found = dict(
                line.split(" ", 1)
                for line in done.stdout.decode(errors="replace").splitlines()
                if " " in line
            )
            if done.returncode != 0 or not found:
                err = done.stderr.decode(errors="replace").strip().splitlines()
                self.add("image", "fail", f"{image}: cannot run sh in it ({err[0] if err else 'no output'})")
                return
            missing = [t for t in ("sh", "timeout", "tar") if found.get(t) != "yes"]
            has_python = "yes" in (found.get("python3"), found.get("python"))
            if missing:
                self.add(
                    "image", "fail", f"{image}: missing {', '.join(missing)} (needed by the in-pod runner)"
                )
            elif not has_python:
                self.add(
                    "image", "warn", f"{image}: has sh, timeout, tar; no python (python blocks will fail)"
                )
            else:
                self.add("image", "ok", f"{image}: has sh, timeout, tar, python")
            result = executor.execute_code_blocks([CodeBlock("echo kx-roundtrip", "sh")])
            if result.exit_code == 0 and result.stdout.strip() == "kx-roundtrip":
                self.add("run", "ok", f"a code block ran in pod {executor.pod_name}")
            else:
                self.add(
                    "run", "fail", f"a code block failed: exit {result.exit_code}: {result.output.strip()}"
                )
        except KubectlExecutorError as exc:
            self.add("image", "fail", str(exc).splitlines()[0])
        finally:
            executor.stop()


@cli.command(epilog="Exit codes: 0 all checks passed (warnings allowed), 1 a check failed, 2 usage.")
@click.option("--skip-pod", is_flag=True, help="do not start a test pod (no image check)")
@access_options
@click.option("--image", envvar=Settings.env_name("image"), show_envvar=True, help="image to check")
@output_options
@command
def doctor(common: Common, skip_pod: bool) -> int:
    """Check kubectl, cluster access, RBAC, the pod manifest and the image."""
    return Doctor(common, skip_pod=skip_pod).run()


# -- mcp ------------------------------------------------------------------------------------------


def _mcp_option(*decls: str, env: str, **kw: Any) -> Callable[[F], F]:
    return click.option(*decls, envvar=f"KUBECTL_EXECUTOR_MCP_{env}", show_envvar=True, **kw)


@cli.command(
    epilog=_epilog(
        "Host configuration (Claude Desktop and other `mcpServers` JSON):\n\n\b\n"
        '  {"mcpServers": {"kubectl-executor": {"command": "kubectl-executor", "args": ["mcp"],\n'
        '     "env": {"KUBECTL_EXECUTOR_NAMESPACE": "sandbox"}}}}\n\n'
        "One pod per MCP session, made on the first tool call and deleted when the session ends or\n"
        "idles out. Pods of a killed server are removed by `kubectl-executor gc`."
    )
)
@_mcp_option(
    "--transport",
    env="TRANSPORT",
    type=click.Choice(["stdio", "http"]),
    default="stdio",
    show_default=True,
    help="stdio (one client) or streamable HTTP (many sessions)",
)
@_mcp_option("--host", env="HOST", default="127.0.0.1", show_default=True, help="HTTP: address to listen on")
@_mcp_option(
    "--port",
    env="PORT",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="HTTP: port (0: any free port; the URL is printed on stderr)",
)
@_mcp_option("--path", "http_path", env="PATH", default="/mcp", show_default=True, help="HTTP: endpoint path")
@_mcp_option(
    "--idle-timeout",
    env="IDLE_TIMEOUT",
    default="600",
    show_default=True,
    metavar="DURATION",
    help="delete a session's pod after this long without a call (90s, 10m; 0: never)",
)
@_mcp_option(
    "--pool-size", env="POOL_SIZE", type=click.IntRange(min=0), default=0, help="keep N warm pods ready"
)
@_mcp_option(
    "--max-sessions",
    env="MAX_SESSIONS",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="sessions with a pod at once",
)
@_mcp_option(
    "--max-file-bytes",
    env="MAX_FILE_BYTES",
    type=click.IntRange(min=1),
    default=64 * 1024 * 1024,
    show_default=True,
    help="cap for upload_file and for the file download_file reads in ranges",
)
@_mcp_option(
    "--json-response",
    env="JSON_RESPONSE",
    is_flag=True,
    help="HTTP: answer with JSON instead of server-sent events (larger download ranges; no progress)",
)
@_mcp_option(
    "--progress-interval",
    env="PROGRESS_INTERVAL",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="seconds between progress notifications of a call in flight",
)
@_mcp_option(
    "--max-timeout",
    env="MAX_TIMEOUT",
    type=click.IntRange(min=1),
    default=600,
    show_default=True,
    help="largest timeout a tool call may ask for (seconds)",
)
@_mcp_option("--cpu-request", env="CPU_REQUEST", help="pod CPU request [default: 100m]")
@_mcp_option("--cpu-limit", env="CPU_LIMIT", help="pod CPU limit [default: 2]")
@_mcp_option("--memory-request", env="MEMORY_REQUEST", help="pod memory request [default: 256Mi]")
@_mcp_option("--memory-limit", env="MEMORY_LIMIT", help="pod memory limit [default: 2Gi]")
@_mcp_option(
    "--hardened/--no-hardened",
    env="HARDENED",
    default=True,
    show_default=True,
    help="restricted Pod Security profile (non-root, no capabilities, seccomp)",
)
@_mcp_option(
    "--read-only-root-filesystem", env="READ_ONLY_ROOT_FILESYSTEM", is_flag=True, help="read-only root"
)
@_mcp_option("--runtime-class", env="RUNTIME_CLASS", help="runtimeClassName (gVisor, Kata...)")
@_mcp_option(
    "--network-policy", env="NETWORK_POLICY", is_flag=True, help="default-deny egress NetworkPolicy per pod"
)
@_mcp_option(
    "--active-deadline",
    env="ACTIVE_DEADLINE",
    type=click.IntRange(min=0),
    default=6 * 3600,
    show_default=True,
    help="activeDeadlineSeconds backstop of each pod (0: none)",
)
@access_options
@pod_options
@output_options
@command
def mcp(
    common: Common,
    transport: str,
    host: str,
    port: int,
    http_path: str,
    idle_timeout: str,
    pool_size: int,
    max_sessions: int,
    max_file_bytes: int,
    json_response: bool,
    progress_interval: float,
    max_timeout: int,
    cpu_request: str | None,
    cpu_limit: str | None,
    memory_request: str | None,
    memory_limit: str | None,
    hardened: bool,
    read_only_root_filesystem: bool,
    runtime_class: str | None,
    network_policy: bool,
    active_deadline: int,
    env: tuple[str, ...],
    print_manifest: bool,
) -> int:
    """Serve the executor as MCP tools (run code, files, function calls) over stdio or HTTP."""
    from .boundary import Resources

    limits = {
        "cpu_request": cpu_request,
        "cpu_limit": cpu_limit,
        "memory_request": memory_request,
        "memory_limit": memory_limit,
    }
    resources = (
        Resources(**{k: v for k, v in limits.items() if v is not None}) if any(limits.values()) else None
    )
    pod: dict[str, Any] = {
        "resources": resources,
        "hardened": hardened,
        "read_only_root_filesystem": read_only_root_filesystem or None,
        "runtime_class_name": runtime_class,
        "network_policy": network_policy or None,
        "active_deadline_seconds": active_deadline or None,
    }
    if print_manifest:
        return _print_manifest(_executor(common, env=env, **pod))
    try:
        from .mcp import DEFAULT_MAX_OUTPUT_BYTES, DEFAULT_RUN_TIMEOUT, KubectlExecutorMcp, McpConfig
    except ImportError as exc:
        raise Failure(_missing_extra("mcp", exc)) from exc
    kwargs = common.settings.executor_kwargs(**pod)
    if not active_deadline:
        kwargs["active_deadline_seconds"] = None
    kwargs.setdefault("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)
    kwargs.setdefault("timeout", DEFAULT_RUN_TIMEOUT)
    if env:
        kwargs["env_vars"] = _env_pairs(env)
    if _runner() is not None:
        kwargs["runner"] = _runner()
    config = McpConfig(
        executor_kwargs=kwargs,
        idle_timeout=parse_duration(idle_timeout),
        pool_size=pool_size,
        max_sessions=max_sessions,
        max_file_bytes=max_file_bytes,
        max_timeout=max_timeout,
        json_response=json_response,
        progress_interval=progress_interval,
    )
    server = KubectlExecutorMcp(config)
    server.check_options()
    if not common.quiet:
        _mcp_banner(server, transport)
    if transport == "stdio":
        _close_on_sigterm(server.close)
        server.serve_stdio()
        return EXIT_OK
    if host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s without authentication: anyone who reaches it can run code", host)

    def listening(url: str) -> None:
        if not common.quiet:
            click.echo(f"kubectl-executor mcp: serving streamable HTTP on {url}", err=True)

    level = "error" if common.quiet else {0: "warning", 1: "info"}.get(common.verbose, "debug")
    server.serve_http(host=host, port=port, path=http_path, on_listening=listening, log_level=level)
    return EXIT_OK


def _mcp_banner(server: KubectlExecutorMcp, transport: str) -> None:
    """One start-up line on stderr (the host's log): what serves, where its pods go, the limits;
    and at once, rather than at the first call, the reason no cluster can be reached."""
    config = server.config
    kw = config.executor_kwargs
    where = f"namespace {kw.get('namespace') or '(the context default)'}"
    if kw.get("context"):
        where = f"context {kw['context']}, {where}"
    click.echo(
        f"kubectl-executor mcp {__version__} ({transport}): pods of {kw.get('image', 'python:3-slim')} in "
        f"{where}; at most {config.max_sessions} sessions; run timeout {config.run_timeout}s "
        f"(max {config.max_timeout}s); output cap {config.max_output_bytes} bytes per stream",
        err=True,
    )
    if server.cluster_problem:
        click.echo(f"kubectl-executor mcp: warning: {server.cluster_problem}", err=True)


def _close_on_sigterm(close: Callable[[], None]) -> None:
    """stdio hosts end a server with SIGTERM (after closing stdin): delete its pods, then exit."""
    import os
    import signal

    def handler(signum: int, frame: object) -> None:
        def finish() -> None:
            try:
                close()
            finally:
                os._exit(128 + signum)

        threading.Thread(target=finish, name="kx-mcp-sigterm", daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


# -- workspaces -----------------------------------------------------------------------------------

ACCESS_MODES = click.Choice(["ReadWriteMany", "ReadWriteOnce", "ReadOnlyMany", "ReadWriteOncePod"])


def _workspace_env(name: str) -> str:
    return f"{ENV_PREFIX}{name}"


@cli.group(
    "workspace",
    cls=_Group,
    epilog="Executors mount a workspace with the library's shared_pvc_name=NAME (or WorkspaceVolume).",
)
def workspace_group() -> None:
    """Shared workspaces: PersistentVolumeClaims that several pods mount."""


def _workspace(common: Common, name: str | None, **options: Any) -> WorkspaceVolume:
    """A WorkspaceVolume (not started) with the common cluster access; kept when the command ends."""
    s = common.settings
    return WorkspaceVolume(
        name,
        start=False,
        keep=True,
        long_lived=True,
        namespace=s.namespace,
        kubectl=s.kubectl,
        kubeconfig=s.kubeconfig,
        context=s.context,
        remote_control_plane=s.remote_control_plane,
        certificate_authority=s.certificate_authority,
        insecure_skip_tls_verify=bool(s.insecure_skip_tls_verify),
        runner=_runner(),
        **options,
    )


def _label_pairs(pairs: Sequence[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise Failure(f"--label needs KEY=VALUE, got {pair!r}")
        labels[key] = value
    return labels


@workspace_group.command(
    "create",
    epilog=_epilog(
        "The claim carries kubectl-executor.io/lifetime=long-lived: gc leaves it alone;\n"
        "`workspace delete NAME` deletes it (and the static volume of --host-path).\n\n"
        "Examples:\n\n\b\n  kubectl-executor workspace create team-data --size 5Gi\n"
        "  kubectl-executor workspace create scratch --host-path /srv/scratch --node my-node"
    ),
)
@click.argument("name", required=False)
@click.option(
    "--size",
    default="1Gi",
    show_default=True,
    envvar=_workspace_env("WORKSPACE_SIZE"),
    show_envvar=True,
    help="storage to request",
)
@click.option(
    "--storage-class",
    envvar=_workspace_env("STORAGE_CLASS"),
    show_envvar=True,
    help="storage class [default: the cluster's default class; '' for none]",
)
@click.option(
    "--access-mode",
    type=ACCESS_MODES,
    default="ReadWriteMany",
    show_default=True,
    envvar=_workspace_env("WORKSPACE_ACCESS_MODE"),
    show_envvar=True,
    help="access mode of the claim",
)
@click.option(
    "--fallback-access-mode", type=ACCESS_MODES, help="used when the provisioner refuses --access-mode"
)
@click.option(
    "--host-path", help="make a static hostPath PersistentVolume at this node path (single-node clusters)"
)
@click.option("--local", is_flag=True, help="with --host-path: a `local` volume instead (needs --node)")
@click.option("--node", help="pin the static volume to this node (kubernetes.io/hostname)")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="label of the claim (repeatable)")
@click.option(
    "--bind-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    envvar=_workspace_env("BIND_TIMEOUT"),
    show_envvar=True,
    help="seconds to wait until the claim is bound",
)
@click.option("--print-manifest", is_flag=True, help="print what would be created (a JSON List) and exit")
@access_options
@output_options
@command
def workspace_create(
    common: Common,
    name: str | None,
    size: str,
    storage_class: str | None,
    access_mode: str,
    fallback_access_mode: str | None,
    host_path: str | None,
    local: bool,
    node: str | None,
    labels: tuple[str, ...],
    bind_timeout: float,
    print_manifest: bool,
) -> int:
    """Create a shared workspace (a PersistentVolumeClaim) and wait until it is bound."""
    ws = _workspace(
        common,
        name,
        size=size,
        storage_class=storage_class,
        access_mode=access_mode,
        fallback_access_mode=fallback_access_mode,
        host_path=host_path,
        local=local,
        node=node,
        labels=_label_pairs(labels),
        bind_timeout=bind_timeout,
    )
    try:
        if print_manifest:
            items = ws.manifests(common.settings.namespace or "default")
            _echo_json({"apiVersion": "v1", "kind": "List", "items": items})
            return EXIT_OK
        with _progress(common, f"waiting for workspace {ws.name} to be bound"):
            result = ws.start()
    finally:
        ws.stop()  # keep=True: only releases the kubectl state (a failed start already cleaned up)
    if common.json:
        _echo_json(result.model_dump(mode="json"))
    elif not common.quiet:
        if result.bound:
            modes = ",".join(result.volume_access_modes)
            click.echo(
                f"workspace {result.claim_name} is Bound to volume {result.volume_name} "
                f"({result.volume_capacity}, {modes}) in namespace {result.namespace}"
            )
        else:
            click.echo(
                f"workspace {result.claim_name} is {result.claim_status} in namespace {result.namespace}: "
                "its storage class binds it when the first pod mounts it"
            )
    return EXIT_OK


@workspace_group.command("list", epilog=_epilog())
@click.option("-A", "--all-namespaces", is_flag=True, help="list in every namespace")
@click.option("--long-lived", is_flag=True, help="only workspaces made by `workspace create`")
@access_options
@output_options
@command
def workspace_list(common: Common, all_namespaces: bool, long_lived: bool) -> int:
    """List this tool's workspaces (its PersistentVolumeClaims)."""
    kubectl = _kubectl(common)
    try:
        found = list_workspaces(kubectl, all_namespaces=all_namespaces, long_lived=long_lived)
    finally:
        kubectl.close()
    if common.json:
        _echo_json([w.model_dump(mode="json") for w in found])
        return EXIT_OK
    if not found:
        if not common.quiet:
            click.echo("no kubectl-executor workspaces", err=True)
        return EXIT_OK
    header = ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "KIND", "AGE", "OWNER"]
    rows = [(["NAMESPACE"] if all_namespaces else []) + header]
    for w in found:
        rows.append(
            ([w.namespace] if all_namespaces else [])
            + [
                w.name,
                w.status,
                w.volume or "",
                w.capacity or "",
                w.short_access_modes,
                "<none>" if w.storage_class is None else (w.storage_class or '""'),
                "long-lived" if w.long_lived else "session",
                _age(w.age_seconds),
                w.owner,
            ]
        )
    _table(rows)
    return EXIT_OK


@workspace_group.command(
    "delete", epilog=_epilog("The data of a provisioned volume goes with it (reclaim policy).")
)
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="delete every workspace made by `workspace create` here")
@click.option("--wait", is_flag=True, help="wait until the claims are gone")
@access_options
@output_options
@command
def workspace_delete(common: Common, names: tuple[str, ...], all_: bool, wait: bool) -> int:
    """Delete workspaces made by this tool (never claims it did not make)."""
    if not names and not all_:
        raise Failure("name the workspaces to delete, or pass --all")
    kubectl = _kubectl(common)
    try:
        targets: dict[str, PersistentVolumeClaim] = {}
        missing: list[str] = []
        if all_:
            for made in list_claims(kubectl, workspace_selector(long_lived=True)):
                targets[made.metadata.name] = made
        for name in names:
            claim = get_claim(kubectl, validate_dns_label(name, "workspace name"))
            if claim is None:
                missing.append(name)
            elif claim.metadata.labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                raise Failure(
                    f"PersistentVolumeClaim {name} was not made by kubectl-executor; not deleting it",
                    EXIT_TOOL_ERROR,
                )
            else:
                targets.setdefault(name, claim)
        delete_claims(kubectl, list(targets.values()), wait=wait)
    finally:
        kubectl.close()
    if common.json:
        _echo_json({"deleted": list(targets), "not_found": missing})
    elif not common.quiet:
        for name in targets:
            click.echo(f"deleted workspace {name}")
        for name in missing:
            click.echo(f"workspace {name} not found", err=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``kubectl-executor`` and ``kubectl executor``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="kubectl-executor")


# Kept importable for the unit tests and plugin authors.
__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_KUBECTL_NOT_FOUND",
    "EXIT_OUTCOME_UNKNOWN",
    "EXIT_TOOL_ERROR",
    "EXIT_USAGE",
    "cli",
    "main",
    "parse_cp_path",
    "parse_duration",
    "role_yaml",
]
