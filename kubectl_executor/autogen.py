"""AutoGen 0.4+ adapter: an async ``CodeExecutor`` and ``Component`` running blocks in a pod.

A drop-in for autogen-ext's Docker executor (same option names where the meaning is the same)::

    from kubectl_executor.autogen import KubectlCodeExecutor

    async with KubectlCodeExecutor(image="python:3-slim", timeout=30, work_dir="coding") as executor:
        agent = CodeExecutorAgent("runner", code_executor=executor)

``work_dir`` is a directory on THIS machine, as for Docker: what is in it at start is uploaded to
the pod's workspace (``pod_work_dir``), and after each execution what changed in the pod is
downloaded into it (binary-safe, checksummed, never written outside it). ``work_dir=None`` is a
temporary directory made by :meth:`start` and removed by :meth:`stop`. ``mirror=False`` turns the
copying off (then ``work_dir`` and ``code_file`` name the pod's directory).

The blocking executor (:class:`~kubectl_executor.KubernetesCommandLineCodeExecutor`) runs in a
worker thread, one block at a time. Cancelling the ``CancellationToken`` kills the running block's
processes inside the pod and returns exit code 1 with "Code execution was cancelled." (as the
Docker executor does); cancelling the task kills it too and raises ``asyncio.CancelledError``.
Install with ``pip install 'kubectl-executor[autogen]'``.
"""

from __future__ import annotations

try:
    from autogen_core import CancellationToken, Component
    from autogen_core.code_executor import (
        Alias,
        CodeExecutor,
        CodeResult,
        FunctionWithRequirements,
        FunctionWithRequirementsStr,
        Import,
    )
    from autogen_core.code_executor import CodeBlock as AutogenCodeBlock
except ImportError as exc:
    raise ImportError(
        "kubectl_executor.autogen needs AutoGen 0.4 or newer: pip install 'kubectl-executor[autogen]'"
    ) from exc

import asyncio
import concurrent.futures
import inspect
import logging
import os
import re
import stat
import tempfile
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from string import Template
from textwrap import dedent, indent
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self

from ._cluster.manifest import CONTAINER
from ._cluster.retry import RetryPolicy
from ._cluster.runner import Runner
from ._exec.languages import canonical_language, filename_hint, validate_relative_path
from ._exec.results import CodeBlock
from ._exec.transfer import DEFAULT_EXCLUDES
from .boundary import Resources
from .errors import InvalidInputError, KubectlExecutorError, TransferError, UnsafePathError
from .executor import KubernetesCommandLineCodeExecutor
from .settings import load_settings

logger = logging.getLogger(__name__)

__all__ = [
    "KubectlCodeExecutor",
    "KubectlCodeExecutorConfig",
    "KubectlCodeResult",
    "PodCommandLineCodeExecutor",
    "PodCommandLineCodeExecutorConfig",
    "build_python_functions_file",
    "to_stub",
]

# How long a cancelled call waits for the worker thread after killing the block in the pod.
CANCEL_GRACE_SECONDS = 30.0
# Seconds `pip install` of the functions' requirements may take (downloads can be large).
PIP_TIMEOUT_SECONDS = 900.0
CANCELLED = "Code execution was cancelled."
NOT_IN_WORKSPACE = "Filename is not in the workspace"

AnyFunction = FunctionWithRequirements[Any, Any] | Callable[..., Any] | FunctionWithRequirementsStr

# In-pod helpers: fixed text; the directory and names arrive on stdin, one per line.
LIST_SCRIPT = """
import os, stat, sys
root = sys.stdin.readline().rstrip("\\n")
out = sys.stdout.buffer
for top, dirs, files in os.walk(root):
    for name in files:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            rel = os.fsencode(os.path.relpath(path, root))
            out.write(b"%d %d " % (st.st_size, st.st_mtime_ns) + rel + b"\\0")
"""
# Images without python: find + stat (mtime in whole seconds, so a same-size rewrite within the
# second of the last look is missed there).
LIST_SHELL = """py=$(command -v python3 || command -v python || true)
if [ -n "$py" ]; then exec "$py" -c "$1"; fi
IFS= read -r root || exit 97
cd -- "$root" || exit 1
find . -type f | while IFS= read -r f; do
  s=$(stat -c '%s %Y' -- "$f" 2>/dev/null) || continue
  printf '%s %s000000000 %s\\0' "${s% *}" "${s#* }" "${f#./}"
done
"""
REMOVE_SCRIPT = (
    'IFS= read -r work || exit 97; cd -- "$work" || exit 1; while IFS= read -r f; do rm -f -- "$f"; done'
)
PIP_SCRIPT = """IFS= read -r work || exit 97
set --
while IFS= read -r pkg; do [ -n "$pkg" ] && set -- "$@" "$pkg"; done
cd -- "$work" 2>/dev/null || cd
py=$(command -v python3 || command -v python) || { echo "kubectl-executor: no python in the image" >&2; exit 127; }
exec "$py" -m pip install --quiet --disable-pip-version-check --no-input -- "$@"
"""
LOAD_SCRIPT = """IFS= read -r work || exit 97
IFS= read -r file || exit 97
cd -- "$work" || exit 1
py=$(command -v python3 || command -v python) || { echo "kubectl-executor: no python in the image" >&2; exit 127; }
exec "$py" "$file"
"""
INIT_SCRIPT = 'IFS= read -r work || exit 97; cd -- "$work" || exit 1; exec sh -s'

FUNCTION_PROMPT_TEMPLATE = """You have access to the following user defined functions. They can be accessed from the module called `$module_name` by their function names.

For example, if there was a function called `foo` you could import it by writing `from $module_name import foo`

$functions"""


@dataclass
class KubectlCodeResult(CodeResult):
    """AutoGen's result plus the file of the first block (like autogen-ext's CommandLineCodeResult)."""

    code_file: str | None = None


# -- user-defined functions (the module autogen-ext's executors write) ---------------------------


def _import_to_str(im: Import) -> str:
    if isinstance(im, str):
        return f"import {im}"
    if isinstance(im, Alias):
        return f"import {im.name} as {im.alias}"
    names = ", ".join(i if isinstance(i, str) else f"{i.name} as {i.alias}" for i in im.imports)
    return f"from {im.module} import {names}"


def _to_code(func: AnyFunction) -> str:
    if isinstance(func, FunctionWithRequirementsStr):
        return func.func
    target = func.func if isinstance(func, FunctionWithRequirements) else func
    code = inspect.getsource(target)
    # Strip the decorator line (@with_requirements(...)) as autogen-ext does.
    if code.startswith("@"):
        code = code[code.index("\n") + 1 :]
    return code


def build_python_functions_file(funcs: Sequence[AnyFunction]) -> str:
    """The module text: every global import once, then each function's source."""
    imports: list[Import] = []
    for func in funcs:
        if isinstance(func, (FunctionWithRequirements, FunctionWithRequirementsStr)):
            for im in func.global_imports:
                if im not in imports:
                    imports.append(im)
    content = "\n".join(map(_import_to_str, imports)) + "\n\n"
    for func in funcs:
        content += _to_code(func) + "\n\n"
    return content


def to_stub(func: AnyFunction) -> str:
    """``def name(signature):`` with its docstring and ``...`` (what a prompt shows)."""
    if isinstance(func, FunctionWithRequirementsStr):
        return to_stub(func.compiled_func)
    target = func.func if isinstance(func, FunctionWithRequirements) else func
    content = f"def {target.__name__}{inspect.signature(target)}:\n"
    if target.__doc__:
        content += indent('"""' + dedent(target.__doc__) + '"""', "    ") + "\n"
    return content + "    ..."


def _required_packages(funcs: Sequence[AnyFunction]) -> list[str]:
    packages: list[str] = []
    for func in funcs:
        if isinstance(func, (FunctionWithRequirements, FunctionWithRequirementsStr)):
            for pkg in func.python_packages:
                if pkg not in packages:
                    packages.append(pkg)
    for pkg in packages:
        if not pkg.strip() or pkg.strip().startswith("-") or "\n" in pkg:
            raise InvalidInputError(f"{pkg!r} is not a package requirement")
    return packages


# -- configuration --------------------------------------------------------------------------------


class KubectlCodeExecutorConfig(BaseModel):
    """The serialisable configuration (``dump_component``). No secrets: the bearer token of
    ``remote_control_plane`` mode is read from ``KUBE_TOKEN`` when the executor starts. Functions
    are not serialised (as for autogen-ext's executors)."""

    model_config = ConfigDict(extra="forbid")

    image: str = "python:3-slim"
    pod_name: str | None = None
    namespace: str | None = None
    timeout: int = Field(60, ge=1)
    work_dir: str | None = None
    pod_work_dir: str = "/workspace"
    mirror: bool = True
    functions_module: str = "functions"
    delete_tmp_files: bool = False
    init_command: str | None = None
    auto_remove: bool = True
    execution_policies: dict[str, bool] | None = None
    env_vars: dict[str, str] = Field(default_factory=dict)
    kubectl: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    remote_control_plane: str | None = None
    certificate_authority: str | None = None
    insecure_skip_tls_verify: bool = False
    startup_timeout: float = Field(300.0, gt=0)
    max_output_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    attach: bool = False
    hardened: bool = True
    run_as_user: int = 1000
    read_only_root_filesystem: bool = False
    runtime_class_name: str | None = None
    active_deadline_seconds: int | None = 6 * 3600
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources | None = None
    pod_overrides: dict[str, Any] = Field(default_factory=dict)


def normalise_language(language: str) -> str:
    """Agents keep the case the model wrote (``Python``, ``SH``): our names are lower-case."""
    return canonical_language(language)


FileState = tuple[int, int]  # (size, mtime_ns)


class KubectlCodeExecutor(CodeExecutor, Component[KubectlCodeExecutorConfig]):
    """Runs AutoGen code blocks in a Kubernetes pod through kubectl.

    The pod is created by :meth:`start` (or the first run) and deleted by :meth:`stop`;
    :meth:`restart` gives a fresh pod (``work_dir`` is uploaded again, functions set up again).
    Blocks run in order and stop at the first non-zero exit; a timeout is exit code 124 with a
    note in the output. ``runner`` and ``retry`` are for tests and are not serialised.
    """

    component_config_schema = KubectlCodeExecutorConfig
    component_provider_override = "kubectl_executor.autogen.KubectlCodeExecutor"

    FUNCTION_PROMPT_TEMPLATE: ClassVar[str] = FUNCTION_PROMPT_TEMPLATE

    def __init__(
        self,
        image: str = "python:3-slim",
        pod_name: str | None = None,
        namespace: str | None = None,
        timeout: int = 60,
        work_dir: Path | str | None = None,
        execution_policies: dict[str, bool] | None = None,
        env_vars: dict[str, str] | None = None,
        *,
        functions: Sequence[AnyFunction] = (),
        functions_module: str = "functions",
        delete_tmp_files: bool = False,
        init_command: str | None = None,
        auto_remove: bool = True,
        pod_work_dir: str = "/workspace",
        mirror: bool = True,
        kubectl: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        remote_control_plane: str | None = None,
        certificate_authority: str | None = None,
        insecure_skip_tls_verify: bool = False,
        startup_timeout: float = 300.0,
        max_output_bytes: int = 4 * 1024 * 1024,
        attach: bool = False,
        hardened: bool = True,
        run_as_user: int = 1000,
        read_only_root_filesystem: bool = False,
        runtime_class_name: str | None = None,
        active_deadline_seconds: int | None = 6 * 3600,
        labels: dict[str, str] | None = None,
        resources: Resources | None = None,
        pod_overrides: dict[str, Any] | None = None,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        # AutoGen's own wording, which its users' tests match.
        if not isinstance(timeout, int) or timeout < 1:
            raise InvalidInputError("Timeout must be greater than or equal to 1.")
        if not functions_module.isidentifier():
            raise InvalidInputError("Module name must be a valid Python identifier")
        if work_dir is not None and not mirror:
            raise InvalidInputError(
                "work_dir is the host side of the mirror: leave it unset with mirror=False"
            )
        host_dir: Path | None = None
        if work_dir is not None:
            host_dir = Path(work_dir)
            if host_dir.resolve() == Path.cwd().resolve():
                warnings.warn(
                    "Using the current directory as work_dir is deprecated.", DeprecationWarning, stacklevel=2
                )
            host_dir.mkdir(parents=True, exist_ok=True)
        self._config = KubectlCodeExecutorConfig(
            image=image,
            pod_name=pod_name,
            namespace=namespace,
            timeout=timeout,
            work_dir=str(host_dir) if host_dir is not None else None,
            pod_work_dir=str(pod_work_dir),
            mirror=mirror,
            functions_module=functions_module,
            delete_tmp_files=delete_tmp_files,
            init_command=init_command,
            auto_remove=auto_remove,
            execution_policies=execution_policies,
            env_vars=dict(env_vars or {}),
            kubectl=kubectl,
            kubeconfig=kubeconfig,
            context=context,
            remote_control_plane=remote_control_plane,
            certificate_authority=certificate_authority,
            insecure_skip_tls_verify=insecure_skip_tls_verify,
            startup_timeout=startup_timeout,
            max_output_bytes=max_output_bytes,
            attach=attach,
            hardened=hardened,
            run_as_user=run_as_user,
            read_only_root_filesystem=read_only_root_filesystem,
            runtime_class_name=runtime_class_name,
            active_deadline_seconds=active_deadline_seconds,
            labels=dict(labels or {}),
            resources=resources,
            pod_overrides=dict(pod_overrides or {}),
        )
        self._functions: list[AnyFunction] = list(functions)
        self._packages = _required_packages(self._functions)
        self._host_dir = host_dir
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._runner = runner
        self._retry = retry
        self._executor: KubernetesCommandLineCodeExecutor | None = None
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._functions_ready = not self._functions
        # The mirror: what we last saw in the pod, and what we last wrote on the host, per file.
        self._pod_state: dict[str, FileState] = {}
        self._host_state: dict[str, FileState] = {}

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Options from ``KUBECTL_EXECUTOR_*`` (see :mod:`kubectl_executor.settings`), then ``overrides``."""
        settings = load_settings()
        fields = set(KubectlCodeExecutorConfig.model_fields) - {"work_dir"}
        kwargs = {k: v for k, v in settings.executor_kwargs().items() if k in fields}
        if "work_dir" in settings.executor_kwargs():  # the settings' work_dir is the pod's
            kwargs["pod_work_dir"] = str(settings.executor_kwargs()["work_dir"])
        return cls(**{**kwargs, **overrides})

    # -- properties -------------------------------------------------------------------------------

    @property
    def timeout(self) -> int:
        return self._config.timeout

    @property
    def work_dir(self) -> Path:
        """The host directory mirrored with the pod's workspace (Docker's meaning). Without a
        ``work_dir`` it exists from :meth:`start` to :meth:`stop`; with ``mirror=False`` this is
        the pod's directory."""
        if not self._config.mirror:
            return Path(self._config.pod_work_dir)
        if self._host_dir is not None:
            return self._host_dir
        if self._temp_dir is not None:
            return Path(self._temp_dir.name)
        raise RuntimeError("Working directory not properly initialized")

    @property
    def pod_work_dir(self) -> str:
        return self._config.pod_work_dir

    @property
    def functions_module(self) -> str:
        return self._config.functions_module

    @property
    def delete_tmp_files(self) -> bool:
        return self._config.delete_tmp_files

    @property
    def pod_name(self) -> str | None:
        """The pod while started (else the configured name, if any)."""
        return self._executor.pod_name if self._executor else self._config.pod_name

    @property
    def executor(self) -> KubernetesCommandLineCodeExecutor | None:
        """The blocking executor behind this one, while started (for files and tool calls)."""
        return self._executor

    def format_functions_for_prompt(self, prompt_template: str = FUNCTION_PROMPT_TEMPLATE) -> str:
        """The functions as stubs for a prompt (``$module_name``, ``$functions``), as autogen-ext."""
        return Template(prompt_template).substitute(
            module_name=self._config.functions_module,
            functions="\n\n".join(to_stub(func) for func in self._functions),
        )

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the pod, wait until it is ready, upload ``work_dir``. Idempotent."""
        self._loop = asyncio.get_running_loop()
        if self._executor is not None:
            return
        c = self._config
        if c.mirror and self._host_dir is None and self._temp_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="kx-autogen-")
        executor = KubernetesCommandLineCodeExecutor(
            image=c.image,
            pod_name=c.pod_name,
            namespace=c.namespace,
            timeout=c.timeout,
            work_dir=c.pod_work_dir,
            execution_policies=c.execution_policies,
            env_vars=[{"key": k, "value": v} for k, v in c.env_vars.items()] or None,
            kubectl=c.kubectl,
            kubeconfig=c.kubeconfig,
            context=c.context,
            remote_control_plane=c.remote_control_plane,
            certificate_authority=c.certificate_authority,
            insecure_skip_tls_verify=c.insecure_skip_tls_verify,
            startup_timeout=c.startup_timeout,
            max_output_bytes=c.max_output_bytes,
            attach=c.attach,
            keep_pod=not c.auto_remove,
            hardened=c.hardened,
            run_as_user=c.run_as_user,
            read_only_root_filesystem=c.read_only_root_filesystem,
            runtime_class_name=c.runtime_class_name,
            active_deadline_seconds=c.active_deadline_seconds,
            labels=c.labels or None,
            resources=c.resources,
            pod_overrides=c.pod_overrides or None,
            runner=self._runner,
            retry=self._retry,
            start=False,
        )
        try:
            await asyncio.to_thread(self._start_pod, executor)
        except BaseException:
            await asyncio.to_thread(executor.stop)
            raise
        self._executor = executor
        self._functions_ready = not self._functions
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kubectl-executor"
        )

    def _start_pod(self, executor: KubernetesCommandLineCodeExecutor) -> None:
        executor.start()
        self._pod_state, self._host_state = {}, {}
        if self._config.mirror:
            uploaded = executor.upload_from_disk(self.work_dir, exclude=DEFAULT_EXCLUDES)
            base = PurePosixPath(self._config.pod_work_dir)
            for pod_path in uploaded:
                rel = PurePosixPath(pod_path).relative_to(base).as_posix()
                st = (self.work_dir / rel).stat()
                self._host_state[rel] = (st.st_size, st.st_mtime_ns)
            # What the pod already had (an attached pod, a shared volume) comes down; ours is known.
            listing = self._list_pod(executor)
            self._pod_state = {rel: state for rel, state in listing.items() if rel in self._host_state}
            self._mirror_down(executor, listing)
        if self._config.init_command:
            done = self._helper(
                executor, INIT_SCRIPT, self._config.init_command.encode(), self.timeout + 30.0
            )
            if done[0] != 0:
                raise KubectlExecutorError(f"init_command failed with exit code {done[0]}: {done[2][-2000:]}")
            if self._config.mirror:
                self._mirror_down(executor, self._list_pod(executor))

    async def stop(self) -> None:
        """Delete the pod (unless ``auto_remove=False`` or attached) and the temporary
        ``work_dir`` if one was made. Idempotent."""
        executor, worker = self._executor, self._worker
        self._executor = self._worker = None
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)
        try:
            if executor is not None:
                await asyncio.to_thread(executor.stop)
        finally:
            if self._temp_dir is not None:
                self._temp_dir.cleanup()
                self._temp_dir = None

    async def restart(self) -> None:
        """A fresh pod with the same options (``work_dir`` kept and uploaded again)."""
        executor, worker = self._executor, self._worker
        self._executor = self._worker = None
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)
        if executor is not None:
            await asyncio.to_thread(executor.stop)
        await self.start()

    # -- running ----------------------------------------------------------------------------------

    async def execute_code_blocks(
        self, code_blocks: list[AutogenCodeBlock], cancellation_token: CancellationToken
    ) -> KubectlCodeResult:
        """Run the blocks in order in the pod; stop at the first non-zero exit.

        A cancelled token returns exit code 1 and "Code execution was cancelled." (the block is
        killed in the pod first). Functions are set up on the first call; a failing setup raises
        ``ValueError`` ("Pip install failed. ...", "Functions failed to load: ..."), as for Docker.
        """
        if not code_blocks:
            raise InvalidInputError("No code blocks to execute.")  # the Docker executor's words
        if cancellation_token.is_cancelled():
            return KubectlCodeResult(exit_code=1, output=CANCELLED, code_file=None)
        if self._executor is None:
            await self.start()
        executor, worker = self._executor, self._worker
        assert executor is not None and worker is not None
        if not self._functions_ready:
            # Not cancellable half-way (pip would be left running); bounded by its own timeout.
            await self._in_worker(worker, executor, None, self._setup_functions, executor)
            self._functions_ready = True
            if cancellation_token.is_cancelled():
                return KubectlCodeResult(exit_code=1, output=CANCELLED, code_file=None)

        outputs: list[str] = []
        code_files: list[str] = []
        exit_code = 0
        cancelled = False
        try:
            for block in code_blocks:
                if not self._in_workspace(filename_hint(block.code)):
                    outputs.append(NOT_IN_WORKSPACE)
                    exit_code = 1
                    break
                one = CodeBlock(code=block.code, language=normalise_language(block.language))
                try:
                    result = await self._in_worker(
                        worker, executor, cancellation_token, executor.execute_code_blocks, [one]
                    )
                except asyncio.CancelledError:
                    if not cancellation_token.is_cancelled():
                        raise  # the task itself was cancelled: the block is dead, tell the caller
                    outputs.append(CANCELLED)
                    exit_code, cancelled = 1, True
                    break
                if result.code_file:
                    code_files.append(result.code_file)
                outputs.append(result.output)
                exit_code = result.exit_code
                if exit_code != 0:
                    break
        finally:
            if self._config.delete_tmp_files and code_files:
                await asyncio.to_thread(self._remove_files, executor, code_files)
        if self._config.mirror:
            try:
                await asyncio.to_thread(self._sync, executor)
            except KubectlExecutorError as exc:
                if not cancelled:
                    raise
                logger.warning("could not mirror the pod's workspace after the cancel: %s", exc)
        first = self._host_path(code_files[0]) if code_files else None
        return KubectlCodeResult(exit_code=exit_code, output="".join(outputs), code_file=first)

    def _in_workspace(self, hint: str | None) -> bool:
        """A ``# filename:`` hint names a file in the workspace: relative (no ``..``), or absolute
        under the pod's workspace (the blocking executor then checks it again)."""
        if hint is None:
            return True
        try:
            validate_relative_path(hint)
            return True
        except UnsafePathError:
            pure = PurePosixPath(hint)
            base = PurePosixPath(self._config.pod_work_dir)
            return (
                pure.is_absolute() and ".." not in pure.parts and pure != base and pure.is_relative_to(base)
            )

    async def _in_worker(
        self,
        worker: concurrent.futures.ThreadPoolExecutor,
        executor: KubernetesCommandLineCodeExecutor,
        token: CancellationToken | None,
        fn: Callable[..., Any],
        *args: Any,
    ) -> Any:
        """``fn(*args)`` in the worker thread; on cancellation (the token's or the task's) the
        block in the pod is killed (bounded) before ``CancelledError`` goes on."""
        job = worker.submit(fn, *args)
        waiter = asyncio.wrap_future(job)
        if token is not None:
            token.link_future(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            await self._abort(executor, job)
            raise

    async def _abort(
        self, executor: KubernetesCommandLineCodeExecutor, job: concurrent.futures.Future[Any]
    ) -> None:
        """Kill what runs in the pod until the worker returns (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_GRACE_SECONDS
        while not job.done() and loop.time() < deadline:
            await asyncio.to_thread(self._kill_running, executor)
            # The run returns soon after its process group is killed; if the kill came before
            # the block had started, the next round catches it.
            await asyncio.wait([asyncio.wrap_future(job)], timeout=0.5)
        if not job.done():
            logger.warning(
                "cancelled run in pod %s did not end within %gs", executor.pod_name, CANCEL_GRACE_SECONDS
            )

    @staticmethod
    def _kill_running(executor: KubernetesCommandLineCodeExecutor) -> None:
        """The executor kills exactly its own block in flight (and skips the blocks after it)."""
        try:
            executor.cancel()
        except KubectlExecutorError as exc:
            logger.warning("could not stop the cancelled run in pod %s: %s", executor.pod_name, exc)

    def _host_path(self, pod_path: str) -> str:
        if not self._config.mirror:
            return pod_path
        rel = PurePosixPath(pod_path).relative_to(self._config.pod_work_dir)
        return str(self.work_dir / rel)

    # -- in-pod helpers (the library's own fixed scripts, data on stdin) ---------------------------

    def _helper(
        self, executor: KubernetesCommandLineCodeExecutor, script: str, data: bytes, timeout: float
    ) -> tuple[int, str, str]:
        """Run one of our fixed scripts in the pod: (exit code, stdout, stderr)."""
        stdin = self._config.pod_work_dir.encode() + b"\n" + data
        done = executor.kubectl.run(
            ["exec", "-i", executor.pod_name, "-c", CONTAINER, "--", "sh", "-c", script],
            stdin=stdin,
            timeout=timeout,
            check=False,
        )
        err = done.stderr.decode(errors="replace")
        # kubectl's own line about the exit code says nothing the exit code does not.
        err = re.sub(r"(?m)^command terminated with exit code \d+\n?\Z", "", err)
        return done.returncode, done.stdout.decode(errors="replace"), err

    def _setup_functions(self, executor: KubernetesCommandLineCodeExecutor) -> None:
        """Write the functions module, install its requirements once per pod, check it loads."""
        module_file = f"{self._config.functions_module}.py"
        content = build_python_functions_file(self._functions)
        executor.upload_file_content(module_file, content)
        if self._packages:
            logger.info("installing %s in pod %s", " ".join(self._packages), executor.pod_name)
            code, out, err = self._helper(
                executor, PIP_SCRIPT, "".join(p + "\n" for p in self._packages).encode(), PIP_TIMEOUT_SECONDS
            )
            if code != 0:
                raise InvalidInputError(f"Pip install failed. {out}, {err}")
        code, out, err = self._helper(
            executor, LOAD_SCRIPT, module_file.encode() + b"\n", self.timeout + 30.0
        )
        if code != 0:
            raise InvalidInputError(f"Functions failed to load: {out}{err}")

    def _remove_files(self, executor: KubernetesCommandLineCodeExecutor, pod_paths: list[str]) -> None:
        names = [PurePosixPath(p).relative_to(self._config.pod_work_dir).as_posix() for p in pod_paths]
        code, _, err = self._helper(executor, REMOVE_SCRIPT, "".join(n + "\n" for n in names).encode(), 60.0)
        if code != 0:
            logger.warning("could not delete the code files in pod %s: %s", executor.pod_name, err.strip())

    # -- the mirror -------------------------------------------------------------------------------

    def _list_pod(self, executor: KubernetesCommandLineCodeExecutor) -> dict[str, FileState]:
        """Regular files under the pod's workspace: relative path -> (size, mtime_ns)."""
        done = executor.kubectl.run(
            [
                "exec",
                "-i",
                executor.pod_name,
                "-c",
                CONTAINER,
                "--",
                "sh",
                "-c",
                LIST_SHELL,
                "kx",
                LIST_SCRIPT,
            ],
            stdin=self._config.pod_work_dir.encode() + b"\n",
            timeout=120.0,
            check=False,
        )
        if done.returncode != 0:
            detail = done.stderr.decode(errors="replace").strip()[-500:]
            raise TransferError(f"cannot list the workspace of pod {executor.pod_name}: {detail}")
        listing: dict[str, FileState] = {}
        for record in done.stdout.split(b"\0"):
            if not record:
                continue
            size, mtime, raw = record.split(b" ", 2)
            name = os.fsdecode(raw)
            try:
                rel = validate_relative_path(name)
            except UnsafePathError:
                logger.warning("not mirroring %r from pod %s: unsafe name", name, executor.pod_name)
                continue
            if rel != name:
                continue
            listing[rel] = (int(size), int(mtime))
        return listing

    def _sync(self, executor: KubernetesCommandLineCodeExecutor) -> None:
        self._mirror_down(executor, self._list_pod(executor))

    def _mirror_down(
        self, executor: KubernetesCommandLineCodeExecutor, listing: dict[str, FileState]
    ) -> None:
        """Download what changed in the pod since the last look; remove on the host what the pod
        removed, unless the host copy changed since we wrote it."""
        root = self.work_dir
        for rel, state in sorted(listing.items()):
            if self._pod_state.get(rel) == state:
                continue
            target = self._safe_target(root, rel)
            if target is None:
                continue
            executor.download_file(rel, target)
            st = target.stat()
            self._host_state[rel] = (st.st_size, st.st_mtime_ns)
        for rel in set(self._pod_state) - set(listing):
            path = root / rel
            known = self._host_state.pop(rel, None)
            if self._safe_target(root, rel) is None:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(st.st_mode) and known == (st.st_size, st.st_mtime_ns):
                path.unlink()
        self._pod_state = dict(listing)

    @staticmethod
    def _safe_target(root: Path, rel: str) -> Path | None:
        """``root/rel`` when no existing component below ``root`` is a symlink or a non-directory
        (so the write stays inside ``root``); None (logged) otherwise."""
        current = root
        parts = PurePosixPath(rel).parts
        for part in parts[:-1]:
            current = current / part
            if current.is_symlink() or (current.exists() and not current.is_dir()):
                logger.warning("not mirroring %s: %s is not a plain directory on this machine", rel, current)
                return None
        target = current / parts[-1]
        if target.is_symlink() or target.is_dir():
            logger.warning("not mirroring %s: it is a link or a directory on this machine", rel)
            return None
        real_root = os.path.realpath(root)
        if os.path.commonpath([real_root, os.path.realpath(target.parent)]) != real_root:
            return None
        return target

    # -- Component --------------------------------------------------------------------------------

    def _to_config(self) -> KubectlCodeExecutorConfig:
        if self._functions:
            logger.info("Functions will not be included in serialized configuration")
        return self._config.model_copy(deep=True)

    @classmethod
    def _from_config(cls, config: KubectlCodeExecutorConfig) -> Self:
        values = {name: getattr(config, name) for name in KubectlCodeExecutorConfig.model_fields}
        return cls(**values)


# -- the seed package's other executor -------------------------------------------------------------

SEED_CONTAINER = "autogen-executor"


def _plain(obj: Any) -> Any:
    """A kubernetes-client model (V1Pod, V1Volume, ...) as the JSON the API takes, by duck typing
    on its ``openapi_types``/``attribute_map`` (what the client's sanitize_for_serialization does),
    so the library never imports the client."""
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [_plain(item) for item in obj]
    if isinstance(obj, dict):
        return {key: _plain(value) for key, value in obj.items()}
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    types, names = getattr(obj, "openapi_types", None), getattr(obj, "attribute_map", None)
    if isinstance(types, dict) and isinstance(names, dict):
        return {names[attr]: _plain(getattr(obj, attr)) for attr in types if getattr(obj, attr) is not None}
    raise InvalidInputError(f"cannot use a {type(obj).__name__} as a Kubernetes object")


def _spec_from(value: Any, what: str) -> dict[str, Any] | None:
    """The seed's forms: a dict, a YAML file path (str or Path), YAML text, or a client model."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            if Path(value).exists():
                value = Path(value)
        except OSError:
            pass
    if isinstance(value, (str, Path)):
        try:
            import yaml
        except ImportError as exc:
            raise ImportError(f"a YAML {what} needs PyYAML: pip install 'kubectl-executor[autogen]'") from exc
        text = value.read_text(encoding="utf-8") if isinstance(value, Path) else value
        loaded = yaml.safe_load(text)
    else:
        loaded = _plain(value)
    if not isinstance(loaded, dict):
        raise InvalidInputError(
            f"{what} must describe a mapping (a Kubernetes object), got {type(loaded).__name__}"
        )
    return loaded


class PodCommandLineCodeExecutorConfig(BaseModel):
    """The seed's configuration fields (``autogen_kubernetes.code_executors``)."""

    image: str = "python:3-slim"
    pod_name: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    timeout: int = 60
    workspace_path: str = "/workspace"
    namespace: str = "default"
    volume: dict[str, Any] | None = None
    pod_spec: dict[str, Any] | None = None
    kube_config_file: str | None = None
    auto_remove: bool = True
    functions_module: str = "functions"


class PodCommandLineCodeExecutor(KubectlCodeExecutor):
    """The seed's ``PodCommandLineCodeExecutor`` (kubernetes-robin-executor), through kubectl.

    Same constructor: ``pod_spec`` as a dict, YAML text, a YAML file path or a V1Pod-like object
    (it must name a container ``autogen-executor``: that container's image, command, env, mounts
    and the pod's other fields are applied to our pod, whose code container is ``executor``);
    ``volume`` (same forms) mounted at ``workspace_path``; ``kube_config_file``; ``auto_remove``;
    ``functions``. Differences: the pod is hardened (non-root) unless ``hardened=False``; the
    kubernetes client is never used; the serialised ``pod_spec`` is the one given, not the cluster's.
    """

    component_config_schema = PodCommandLineCodeExecutorConfig  # type: ignore[assignment]
    component_provider_override = "kubectl_executor.autogen.PodCommandLineCodeExecutor"

    def __init__(
        self,
        *,
        image: str | None = None,
        pod_name: str | None = None,
        command: list[str] | None = None,
        args: list[str] | None = None,
        timeout: int = 60,
        workspace_path: Path | str = Path("/workspace"),
        namespace: str = "default",
        volume: Any = None,
        pod_spec: Any = None,
        kube_config_file: Path | str | None = None,
        auto_remove: bool = True,
        functions: Sequence[AnyFunction] = (),
        functions_module: str = "functions",
        hardened: bool = True,
        kubectl: str | None = None,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(timeout, int) or timeout < 1:
            raise InvalidInputError("Timeout must be greater than or equal to 1.")
        workspace = PurePosixPath(str(workspace_path))
        if not workspace.is_absolute():
            raise InvalidInputError("Not supports workspace path as relative path")
        volume_dict = _spec_from(volume, "volume")
        given = _spec_from(pod_spec, "pod_spec")
        name = pod_name or f"autogen-code-exec-{uuid.uuid4()}"
        meta = dict((given or {}).get("metadata") or {})
        name = str(meta.get("name") or name)
        namespace = str(meta.get("namespace") or namespace)
        if not re.fullmatch(r"^[a-z0-9](?:[a-z0-9-]{0,61})[a-z0-9]?$", name):
            raise InvalidInputError(
                "Pod name validation failed: pod name must start and end with lower alphanumeric characters, "
                "and contain only lowercase alphanumeric or dash('-') characters."
            )
        image_name = image or "python:3-slim"
        overrides: dict[str, Any] = {}
        labels: dict[str, str] = {}
        if given is not None:
            image_name, labels, overrides = self._from_pod_spec(given, image_name)
        elif command:
            overrides = {
                "spec": {"containers": [{"name": CONTAINER, "command": command, "args": args or []}]}
            }
        if volume_dict is not None:
            source = {k: v for k, v in volume_dict.items() if k != "name"}
            # It replaces our workspace volume (mounted at workspace_path): our emptyDir and its
            # sizeLimit become null (absent to the API server) unless the user's source sets them.
            if isinstance(source.get("emptyDir"), dict):
                source["emptyDir"] = {"sizeLimit": None, **source["emptyDir"]}
            replaced = {"name": "workspace", "emptyDir": None, **source}
            spec = overrides.setdefault("spec", {})
            spec["volumes"] = [*spec.get("volumes", []), replaced]
        self._seed = PodCommandLineCodeExecutorConfig(
            image=image_name,
            pod_name=name,
            command=command,
            args=args,
            timeout=timeout,
            workspace_path=str(workspace),
            namespace=namespace,
            volume=volume_dict,
            pod_spec=given,
            kube_config_file=str(kube_config_file) if kube_config_file is not None else None,
            auto_remove=auto_remove,
            functions_module=functions_module,
        )
        super().__init__(
            image=image_name,
            pod_name=name,
            namespace=namespace,
            timeout=timeout,
            functions=functions,
            functions_module=functions_module,
            pod_work_dir=str(workspace),
            mirror=False,
            kubeconfig=str(kube_config_file) if kube_config_file is not None else None,
            kubectl=kubectl,
            hardened=hardened,
            labels=labels or None,
            pod_overrides=overrides or None,
            runner=runner,
            retry=retry,
        )
        # The seed's attribute names, which its users' code (and its tests) read.
        self._pod_name = name
        self._namespace = namespace
        self._functions_module = functions_module
        self._pod: dict[str, Any] = given or {"metadata": {"name": name, "namespace": namespace}}

    @staticmethod
    def _from_pod_spec(given: dict[str, Any], image: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """(image, labels, pod_overrides) from the seed-style pod spec."""
        spec = dict(given.get("spec") or {})
        containers = list(spec.pop("containers", None) or [])
        ours = next((c for c in containers if isinstance(c, dict) and c.get("name") == SEED_CONTAINER), None)
        if ours is None and containers:
            raise InvalidInputError("No container which name is autogen-executor")
        others = [c for c in containers if c is not ours]
        merged: dict[str, Any] = {"name": CONTAINER}
        if ours is not None:
            image = str(ours.get("image") or image)
            merged.update({k: v for k, v in ours.items() if k not in ("name", "image", "command", "args")})
            if ours.get("command"):  # with only args, our idle command stays (the seed's image CMD idled)
                merged["command"] = ours["command"]
                merged["args"] = ours.get("args") or []
        meta = dict(given.get("metadata") or {})
        overrides: dict[str, Any] = {"spec": {**spec, "containers": [merged, *others]}}
        if meta.get("annotations"):
            overrides["metadata"] = {"annotations": dict(meta["annotations"])}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        return image, labels, overrides

    @property
    def workspace_path(self) -> Path:
        return Path(self._seed.workspace_path)

    async def start(self) -> None:
        await super().start()
        executor = self.executor
        if executor is not None:
            self._pod = await asyncio.to_thread(
                executor.kubectl.json, ["get", "pod", executor.pod_name], idempotent=True
            )

    async def stop(self) -> None:
        """Delete the pod and wait (bounded) until it is gone: the pod name is fixed per instance,
        so a later ``start()`` (the seed's users re-enter ``async with``) can create it again."""
        executor = self.executor
        await super().stop()
        if executor is not None:
            args = ["wait", "--for=delete", f"pod/{executor.pod_name}", "--timeout=60s"]
            await asyncio.to_thread(executor.kubectl.run, args, timeout=90.0, check=False)

    async def restart(self) -> None:
        """As the seed: not supported, nothing happens (the pod and its files stay)."""
        warnings.warn(
            "Restarting Pod command line code executor is not supported. No action is taken.", stacklevel=2
        )

    async def __aexit__(self, exc_type: Any, exc_val: Any, exc_tb: Any) -> None:
        # As the seed: with auto_remove=False the pod (and this executor) stay up, and the next
        # `async with` finds them started; stop() deletes the pod.
        if self._seed.auto_remove:
            await self.stop()

    def _to_config(self) -> PodCommandLineCodeExecutorConfig:  # type: ignore[override]
        if self._functions:
            logger.info("Functions will not be included in serialized configuration")
        return self._seed.model_copy(deep=True)

    @classmethod
    def _from_config(cls, config: PodCommandLineCodeExecutorConfig) -> Self:  # type: ignore[override]
        return cls(
            image=config.image,
            pod_name=config.pod_name,
            command=config.command,
            args=config.args,
            timeout=config.timeout,
            workspace_path=config.workspace_path,
            namespace=config.namespace,
            volume=config.volume,
            pod_spec=config.pod_spec,
            kube_config_file=config.kube_config_file,
            auto_remove=config.auto_remove,
            functions_module=config.functions_module,
        )
