"""KubectlCodeExecutor: AutoGen's async ``CodeExecutor`` over the blocking executor, one block at a time
in a worker thread; cancelling kills the block in the pod."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import re
import tempfile
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from string import Template
from typing import Any, ClassVar

from autogen_core import CancellationToken, Component
from autogen_core.code_executor import CodeBlock as AutogenCodeBlock
from autogen_core.code_executor import (
    CodeExecutor,
    CodeResult,
)
from typing_extensions import Self

from .._cluster.manifest import CONTAINER
from .._cluster.retry import RetryPolicy
from .._cluster.runner import Runner
from .._exec.languages import block_file, canonical_language, filename_hint, validate_relative_path
from .._exec.results import CodeBlock
from ..boundary import ClusterAccess, PodShape, Resources, RichOutput, RunOptions
from ..defaults import (
    ACTIVE_DEADLINE_SECONDS,
    IMAGE,
    MAX_OUTPUT_BYTES,
    RUN_AS_USER,
    RUN_TIMEOUT,
    STARTUP_TIMEOUT,
    WORK_DIR,
)
from ..errors import InvalidInputError, KubectlExecutorError, UnsafePathError
from ..executor import KubernetesCommandLineCodeExecutor
from ..settings import load_settings
from .config import KubectlCodeExecutorConfig, split_flat
from .functions import (
    FUNCTION_PROMPT_TEMPLATE,
    AnyFunction,
    build_python_functions_file,
    required_packages,
    to_stub,
)
from .mirror import WorkDirMirror

logger = logging.getLogger(__name__)

# How long a cancelled call waits for the worker thread after killing the block in the pod.
CANCEL_GRACE_SECONDS = 30.0
# Seconds `pip install` of the functions' requirements may take (downloads can be large).
PIP_TIMEOUT_SECONDS = 900.0
CANCELLED = "Code execution was cancelled."
NOT_IN_WORKSPACE = "Filename is not in the workspace"


# In-pod helpers: fixed text; the directory and names arrive on stdin, one per line.
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


@dataclass
class KubectlCodeResult(CodeResult):
    """AutoGen's result plus the file of the first block (like autogen-ext's CommandLineCodeResult)
    and the images and HTML the blocks displayed, saved as files (like autogen-ext's
    DockerJupyterCodeResult.output_files)."""

    code_file: str | None = None
    output_files: list[Path] = field(default_factory=list)


def normalise_language(language: str) -> str:
    """Agents keep the case the model wrote (``Python``, ``SH``): our names are lower-case."""
    return canonical_language(language)


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
        image: str = IMAGE,
        pod_name: str | None = None,
        namespace: str | None = None,
        timeout: int = RUN_TIMEOUT,
        work_dir: Path | str | None = None,
        execution_policies: dict[str, bool] | None = None,
        env: dict[str, str] | None = None,
        *,
        functions: Sequence[AnyFunction] = (),
        functions_module: str = "functions",
        delete_tmp_files: bool = False,
        init_command: str | None = None,
        auto_remove: bool = True,
        pod_work_dir: str = WORK_DIR,
        mirror: bool = True,
        kubectl: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        remote_control_plane: str | None = None,
        certificate_authority: str | None = None,
        insecure_skip_tls_verify: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        attach: bool = False,
        hardened: bool = True,
        run_as_user: int = RUN_AS_USER,
        read_only_root_filesystem: bool = False,
        runtime_class_name: str | None = None,
        active_deadline_seconds: int | None = ACTIVE_DEADLINE_SECONDS,
        labels: dict[str, str] | None = None,
        resources: Resources | None = None,
        pod_overrides: dict[str, Any] | None = None,
        pod: PodShape | None = None,
        run_options: RunOptions | None = None,
        env_vars: dict[str, str] | None = None,
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
        if env_vars is not None:
            warnings.warn("env_vars= is now env= (PodShape.env)", DeprecationWarning, stacklevel=2)
            if env is not None:
                raise InvalidInputError("pass env=, not env_vars= as well")
            env = env_vars
        host_dir: Path | None = None
        if work_dir is not None:
            host_dir = Path(work_dir)
            if host_dir.resolve() == Path.cwd().resolve():
                warnings.warn(
                    "Using the current directory as work_dir is deprecated.", DeprecationWarning, stacklevel=2
                )
            host_dir.mkdir(parents=True, exist_ok=True)
        self._config = KubectlCodeExecutorConfig(
            pod_name=pod_name,
            namespace=namespace,
            work_dir=str(host_dir) if host_dir is not None else None,
            mirror=mirror,
            functions_module=functions_module,
            delete_tmp_files=delete_tmp_files,
            init_command=init_command,
            auto_remove=auto_remove,
            execution_policies=execution_policies,
            kubectl=kubectl,
            kubeconfig=kubeconfig,
            context=context,
            remote_control_plane=remote_control_plane,
            certificate_authority=certificate_authority,
            insecure_skip_tls_verify=insecure_skip_tls_verify,
            attach=attach,
            pod=PodShape.of(
                pod,
                image=image,
                work_dir=str(pod_work_dir),
                env=env,
                hardened=hardened,
                run_as_user=run_as_user,
                read_only_root_filesystem=read_only_root_filesystem,
                runtime_class_name=runtime_class_name,
                active_deadline_seconds=active_deadline_seconds,
                labels=labels,
                resources=resources,
                pod_overrides=pod_overrides,
            ),
            run_options=RunOptions.of(
                run_options,
                timeout=timeout,
                startup_timeout=startup_timeout,
                max_output_bytes=max_output_bytes,
            ),
        )
        self._functions: list[AnyFunction] = list(functions)
        self._packages = required_packages(self._functions)
        self._host_dir = host_dir
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._runner = runner
        self._retry = retry
        self._executor: KubernetesCommandLineCodeExecutor | None = None
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._functions_ready = not self._functions
        self._mirror = WorkDirMirror(self._config.pod.work_dir)

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Options from ``KUBECTL_EXECUTOR_*`` (see :mod:`kubectl_executor.settings`; its
        ``work_dir`` is the pod's), then ``overrides`` (keywords, or a whole ``pod=`` / ``run_options=``)."""
        settings = load_settings()
        rest, pod_fields, run_fields = split_flat(overrides)
        pod, run = rest.pop("pod", None), rest.pop("run_options", None)
        access = {
            k: v
            for k, v in settings.model_dump().items()
            if k in ClusterAccess.model_fields
            and k in KubectlCodeExecutorConfig.model_fields
            and v is not None
        }
        return cls(
            **{**access, **rest},
            pod=PodShape.of(pod, **pod_fields) if pod is not None else settings.pod_shape(**pod_fields),
            run_options=RunOptions.of(run, **run_fields)
            if run is not None
            else settings.run_options(**run_fields),
        )

    # -- properties -------------------------------------------------------------------------------

    @property
    def timeout(self) -> int:
        return int(self._config.run_options.timeout)

    @property
    def work_dir(self) -> Path:
        """The host directory mirrored with the pod's workspace (Docker's meaning). Without a
        ``work_dir`` it exists from :meth:`start` to :meth:`stop`; with ``mirror=False`` this is
        the pod's directory."""
        if not self._config.mirror:
            return Path(self._config.pod.work_dir)
        if self._host_dir is not None:
            return self._host_dir
        if self._temp_dir is not None:
            return Path(self._temp_dir.name)
        raise RuntimeError("Working directory not properly initialized")

    @property
    def pod_work_dir(self) -> str:
        return self._config.pod.work_dir

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
            pod_name=c.pod_name,
            execution_policies=c.execution_policies,
            access=ClusterAccess.pick(c.model_dump()),
            pod=c.pod,
            run_options=c.run_options,
            attach=c.attach,
            keep_pod=not c.auto_remove,
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
        self._mirror.reset()
        if self._config.mirror:
            self._mirror.upload(executor, self.work_dir)
        if self._config.init_command:
            done = self._helper(
                executor, INIT_SCRIPT, self._config.init_command.encode(), self.timeout + 30.0
            )
            if done[0] != 0:
                raise KubectlExecutorError(f"init_command failed with exit code {done[0]}: {done[2][-2000:]}")
            if self._config.mirror:
                self._mirror.sync(executor, self.work_dir)

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
        output_files: list[Path] = []
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
                    if not code_files:  # as Docker's: the first block's file, written before it ran
                        planned = block_file(one.code, one.language, self._config.pod.work_dir)
                        code_files.extend([planned] if planned else [])
                    break
                if result.code_file:
                    code_files.append(result.code_file)
                outputs.append(result.output)
                if result.outputs:
                    saved = await asyncio.to_thread(self._save_outputs, executor, result.outputs)
                    output_files.extend(saved)
                    outputs.extend(f"{path}\n" for path in saved)  # as Docker's Jupyter executor
                exit_code = result.exit_code
                if exit_code != 0:
                    break
        finally:
            if self._config.delete_tmp_files and code_files:
                await asyncio.to_thread(self._remove_files, executor, code_files)
        if self._config.mirror:
            try:
                await asyncio.to_thread(self._mirror.sync, executor, self.work_dir)
            except KubectlExecutorError as exc:
                if not cancelled:
                    raise
                logger.warning("could not mirror the pod's workspace after the cancel: %s", exc)
        first = self._host_path(code_files[0]) if code_files else None
        return KubectlCodeResult(
            exit_code=exit_code, output="".join(outputs), code_file=first, output_files=output_files
        )

    def _save_outputs(
        self, executor: KubernetesCommandLineCodeExecutor, rich: Sequence[RichOutput]
    ) -> list[Path]:
        """Images (PNG, JPEG) and HTML as ``<uuid>.<ext>`` files in work_dir, as autogen-ext's
        DockerJupyterCodeExecutor saves them: on the host when mirrored, else in the pod."""
        saved = []
        for out in rich:
            ext = {"image/png": "png", "image/jpeg": "jpg", "text/html": "html"}.get(out.mime_type)
            if ext is None or out.kept_path or not out.data:
                continue
            name = f"{uuid.uuid4().hex}.{ext}"
            data = out.data if isinstance(out.data, bytes) else out.data.encode()
            if self._config.mirror:
                path = self.work_dir / name
                path.write_bytes(data)
                saved.append(path.absolute())
            else:
                saved.append(Path(executor.upload_file_content(name, data)))
        return saved

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
            base = PurePosixPath(self._config.pod.work_dir)
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
        rel = PurePosixPath(pod_path).relative_to(self._config.pod.work_dir)
        return str(self.work_dir / rel)

    # -- in-pod helpers (the library's own fixed scripts, data on stdin) ---------------------------

    def _helper(
        self, executor: KubernetesCommandLineCodeExecutor, script: str, data: bytes, timeout: float
    ) -> tuple[int, str, str]:
        """Run one of our fixed scripts in the pod: (exit code, stdout, stderr)."""
        stdin = self._config.pod.work_dir.encode() + b"\n" + data
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
        names = [PurePosixPath(p).relative_to(self._config.pod.work_dir).as_posix() for p in pod_paths]
        code, _, err = self._helper(executor, REMOVE_SCRIPT, "".join(n + "\n" for n in names).encode(), 60.0)
        if code != 0:
            logger.warning("could not delete the code files in pod %s: %s", executor.pod_name, err.strip())

    # -- Component --------------------------------------------------------------------------------

    def _to_config(self) -> KubectlCodeExecutorConfig:
        if self._functions:
            logger.info("Functions will not be included in serialized configuration")
        return self._config.model_copy(deep=True)

    @classmethod
    def _from_config(cls, config: KubectlCodeExecutorConfig) -> Self:
        values = {name: getattr(config, name) for name in KubectlCodeExecutorConfig.model_fields}
        return cls(**values)
