"""Commands that run code or move files in a pod: run, exec, call, cp."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click  # a core dependency: the command works on the base install

from .._exec.dispatcher import TOOL_RUNNER_FILE
from .._exec.outputs import output_filename
from .._exec.protocol import TIMEOUT_NOTE
from .._exec.results import CodeBlock, infer_language
from ..boundary import CommandLineCodeResult
from ..errors import (
    TransferError,
)
from ..executor import KubernetesCommandLineCodeExecutor
from .base import (
    EXIT_OK,
    Common,
    Failure,
    access_options,
    command,
    echo_json,
    make_executor,
    output_options,
    pod_options,
    show_manifest,
    started,
    with_exit_codes,
)

EXTENSIONS = {
    ".py": "python",
    ".sh": "sh",
    ".bash": "bash",
    ".ps1": "pwsh",
    ".js": "javascript",
    ".html": "html",
    ".css": "css",
}


def _stream_output() -> Callable[[str, bytes], None]:
    out = sys.stdout.buffer
    err = sys.stderr.buffer

    def write(stream: str, chunk: bytes) -> None:
        target = out if stream == "stdout" else err
        target.write(chunk)
        target.flush()

    return write


F = TypeVar("F", bound=Callable[..., Any])


def save_outputs_option(f: F) -> F:
    """--save-outputs DIR, for the commands that run code."""
    return click.option(
        "--save-outputs",
        "save_outputs",
        type=click.Path(file_okay=False, path_type=Path),
        help="write the rich outputs (charts, HTML...) into DIR as output-<n>.<ext>",
        metavar="DIR",
    )(f)


def save_outputs(result: CommandLineCodeResult, directory: Path) -> list[str]:
    """Each output with data as DIR/output-<n>.<ext>: names of our making (never a path from the
    pod), and never through a symlink, so nothing is written outside DIR."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Failure(f"cannot create {directory}: {exc}") from exc
    written = []
    for n, out in enumerate(result.outputs):
        if out.kept_path:
            continue
        path = directory / output_filename(n, out)
        data = out.data if isinstance(out.data, bytes) else out.data.encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise Failure(f"cannot write {path}: {exc}") from exc
        written.append(str(path))
    return written


def _run_blocks(
    common: Common,
    executor: KubernetesCommandLineCodeExecutor,
    blocks: list[CodeBlock],
    *,
    attached: bool,
    save_dir: Path | None = None,
) -> int:
    """Run, stream (text) or dump (json) the result; the exit code is the code's. Rich outputs:
    in the JSON (base64 for binary data), and written to ``save_dir`` when given."""
    streamed = False

    def on_output(stream: str, chunk: bytes) -> None:
        nonlocal streamed
        streamed = True
        writer(stream, chunk)

    writer = _stream_output()
    with started(common, executor):
        result = executor.execute_code_blocks(blocks, on_output=None if common.json else on_output)
    saved = save_outputs(result, save_dir) if save_dir is not None else []
    if common.json:
        data = result.model_dump(mode="json")
        if save_dir is not None:
            data["saved_outputs"] = saved
        echo_json(data)
    else:
        _text_epilogue(result, streamed, kept=attached, timeout=executor.timeout)
        if result.outputs and not common.quiet:
            kinds = ", ".join(o.mime_type for o in result.outputs)
            where = f"saved to {save_dir}" if save_dir is not None else "--save-outputs DIR writes them"
            click.echo(f"rich outputs ({kinds}): {where}", err=True)
    return result.exit_code


def _text_epilogue(result: CommandLineCodeResult, streamed: bool, *, kept: bool, timeout: float) -> None:
    """What the stream did not show: save-only notes, refusals, the timeout note."""
    if result.timed_out:
        click.echo(TIMEOUT_NOTE.format(timeout=timeout), err=True)
    elif not streamed and result.output:
        click.echo(result.output.rstrip("\n"), err=result.exit_code != 0)
    if result.truncated and kept and result.log_files:
        click.echo(f"output was truncated; full log in the pod: {' '.join(result.log_files)}", err=True)


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


@click.command(
    epilog=with_exit_codes(
        "Examples:\n\n\b\n  kubectl-executor run script.py\n  echo 'ls /' | kubectl-executor run --lang sh -"
    )
)
@click.argument("file", type=click.Path(allow_dash=True, dir_okay=False, path_type=str))
@click.option("--lang", help="language (python, sh, bash, pwsh...); default: from the file extension")
@click.option("--pod", help="run in this existing pod (from `up`) instead of a fresh one")
@save_outputs_option
@access_options
@pod_options
@output_options
@command
def run(
    common: Common,
    file: str,
    lang: str | None,
    pod: str | None,
    save_outputs: Path | None,
    env: tuple[str, ...],
    print_manifest: bool,
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
    executor = make_executor(common, attach_to=pod, env=env)
    if print_manifest:
        return show_manifest(executor)
    return _run_blocks(
        common,
        executor,
        [CodeBlock(code=code, language=language)],
        attached=pod is not None,
        save_dir=save_outputs,
    )


@click.command("exec", epilog=with_exit_codes("Example:\n\n\b\n  kubectl-executor exec -c 'print(6*7)'"))
@click.option(
    "-c", "--code", "codes", multiple=True, required=True, help="code to run (repeat: blocks in order)"
)
@click.option("--lang", default="python", show_default=True, help="language of the code")
@click.option("--pod", help="run in this existing pod (from `up`) instead of a fresh one")
@save_outputs_option
@access_options
@pod_options
@output_options
@command
def exec_(
    common: Common,
    codes: tuple[str, ...],
    lang: str,
    pod: str | None,
    save_outputs: Path | None,
    env: tuple[str, ...],
    print_manifest: bool,
) -> int:
    """Run code given with -c; blocks stop at the first non-zero exit."""
    executor = make_executor(common, attach_to=pod, env=env)
    if print_manifest:
        return show_manifest(executor)
    blocks = [CodeBlock(code=c, language=lang) for c in codes]
    return _run_blocks(common, executor, blocks, attached=pod is not None, save_dir=save_outputs)


@click.command(
    epilog=with_exit_codes(
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
    executor = make_executor(common, attach_to=pod, env=env)
    if print_manifest:
        return show_manifest(executor)
    streamed = False

    def on_output(stream: str, chunk: bytes) -> None:
        nonlocal streamed
        streamed = True
        writer(stream, chunk)

    writer = _stream_output()
    with started(common, executor):
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
        echo_json(result.model_dump(mode="json"))
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


@click.command(
    epilog=with_exit_codes(
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
    executor = make_executor(common, attach_to=pod)
    with started(common, executor):
        if dst_pod is not None:
            written = _upload(executor, Path(src_path), dst_path)
            direction = "upload"
        else:
            written = [str(p) for p in _download(executor, src_path, Path(dst_path))]
            direction = "download"
    if common.json:
        echo_json({"direction": direction, "pod": pod, "files": written})
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
