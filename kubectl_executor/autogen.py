"""AutoGen 0.4+ adapter: an async ``CodeExecutor`` and ``Component`` running blocks in a pod.

A drop-in for autogen-ext's Docker executor::

    from kubectl_executor.autogen import KubectlCodeExecutor

    async with KubectlCodeExecutor(image="python:3-slim", timeout=30) as executor:
        agent = CodeExecutorAgent("runner", code_executor=executor)

The blocking executor (:class:`~kubectl_executor.KubernetesCommandLineCodeExecutor`) runs in a
worker thread, one block list at a time. Cancelling (the ``CancellationToken`` or the task) kills
the running block's processes inside the pod, waits for the worker to return, and raises
``asyncio.CancelledError``. Install with ``pip install 'kubectl-executor[autogen]'``.
"""

from __future__ import annotations

try:
    from autogen_core import CancellationToken, Component
    from autogen_core.code_executor import CodeBlock as AutogenCodeBlock
    from autogen_core.code_executor import CodeExecutor, CodeResult
except ImportError as exc:
    raise ImportError(
        "kubectl_executor.autogen needs AutoGen 0.4 or newer: pip install 'kubectl-executor[autogen]'"
    ) from exc

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Self

from .errors import KubectlExecutorError
from .executor import KubernetesCommandLineCodeExecutor
from .languages import canonical_language
from .manifest import Resources
from .results import CodeBlock
from .retry import RetryPolicy
from .runner import Runner
from .settings import load_settings

logger = logging.getLogger(__name__)

__all__ = ["KubectlCodeExecutor", "KubectlCodeExecutorConfig", "KubectlCodeResult"]

# How long a cancelled call waits for the worker thread after killing the block in the pod.
CANCEL_GRACE_SECONDS = 30.0


@dataclass
class KubectlCodeResult(CodeResult):
    """AutoGen's result plus the file of the first block (like autogen-ext's CommandLineCodeResult)."""

    code_file: str | None = None


class KubectlCodeExecutorConfig(BaseModel):
    """The serialisable configuration (``dump_component``). No secrets: the bearer token of
    ``remote_control_plane`` mode is read from ``KUBE_TOKEN`` when the executor starts."""

    model_config = ConfigDict(extra="forbid")

    image: str = "python:3-slim"
    pod_name: str | None = None
    namespace: str | None = None
    timeout: int = Field(60, ge=1)
    work_dir: str = "/workspace"
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
    keep_pod: bool = False
    hardened: bool = True
    run_as_user: int = 1000
    read_only_root_filesystem: bool = False
    runtime_class_name: str | None = None
    active_deadline_seconds: int | None = 6 * 3600
    labels: dict[str, str] = Field(default_factory=dict)
    resources: Resources | None = None


def normalise_language(language: str) -> str:
    """Agents keep the case the model wrote (``Python``, ``SH``): our names are lower-case."""
    return canonical_language(language)


class KubectlCodeExecutor(CodeExecutor, Component[KubectlCodeExecutorConfig]):
    """Runs AutoGen code blocks in a Kubernetes pod through kubectl.

    The pod is created by :meth:`start` (or the first run) and deleted by :meth:`stop`;
    :meth:`restart` gives a fresh pod. Blocks run in order and stop at the first non-zero exit;
    a timeout is exit code 124 with a note in the output. ``runner`` and ``retry`` are for tests
    and are not part of the serialised config.
    """

    component_config_schema = KubectlCodeExecutorConfig
    component_provider_override = "kubectl_executor.autogen.KubectlCodeExecutor"

    def __init__(
        self,
        image: str = "python:3-slim",
        pod_name: str | None = None,
        namespace: str | None = None,
        timeout: int = 60,
        work_dir: str = "/workspace",
        execution_policies: dict[str, bool] | None = None,
        env_vars: dict[str, str] | None = None,
        *,
        kubectl: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        remote_control_plane: str | None = None,
        certificate_authority: str | None = None,
        insecure_skip_tls_verify: bool = False,
        startup_timeout: float = 300.0,
        max_output_bytes: int = 4 * 1024 * 1024,
        attach: bool = False,
        keep_pod: bool = False,
        hardened: bool = True,
        run_as_user: int = 1000,
        read_only_root_filesystem: bool = False,
        runtime_class_name: str | None = None,
        active_deadline_seconds: int | None = 6 * 3600,
        labels: dict[str, str] | None = None,
        resources: Resources | None = None,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._config = KubectlCodeExecutorConfig(
            image=image,
            pod_name=pod_name,
            namespace=namespace,
            timeout=timeout,
            work_dir=str(work_dir),
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
            keep_pod=keep_pod,
            hardened=hardened,
            run_as_user=run_as_user,
            read_only_root_filesystem=read_only_root_filesystem,
            runtime_class_name=runtime_class_name,
            active_deadline_seconds=active_deadline_seconds,
            labels=dict(labels or {}),
            resources=resources,
        )
        self._runner = runner
        self._retry = retry
        self._executor: KubernetesCommandLineCodeExecutor | None = None
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_env(cls, **overrides: Any) -> Self:
        """Options from ``KUBECTL_EXECUTOR_*`` (see :mod:`kubectl_executor.settings`), then ``overrides``."""
        settings = load_settings()
        fields = set(KubectlCodeExecutorConfig.model_fields)
        kwargs = {k: v for k, v in settings.executor_kwargs().items() if k in fields}
        return cls(**{**kwargs, **overrides})

    # -- properties -------------------------------------------------------------------------------

    @property
    def timeout(self) -> int:
        return self._config.timeout

    @property
    def work_dir(self) -> str:
        return self._config.work_dir

    @property
    def pod_name(self) -> str | None:
        """The pod while started (else the configured name, if any)."""
        return self._executor.pod_name if self._executor else self._config.pod_name

    @property
    def executor(self) -> KubernetesCommandLineCodeExecutor | None:
        """The blocking executor behind this one, while started (for files and tool calls)."""
        return self._executor

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the pod and wait until it is ready. Idempotent."""
        self._loop = asyncio.get_running_loop()
        if self._executor is not None:
            return
        c = self._config
        executor = KubernetesCommandLineCodeExecutor(
            image=c.image,
            pod_name=c.pod_name,
            namespace=c.namespace,
            timeout=c.timeout,
            work_dir=c.work_dir,
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
            keep_pod=c.keep_pod,
            hardened=c.hardened,
            run_as_user=c.run_as_user,
            read_only_root_filesystem=c.read_only_root_filesystem,
            runtime_class_name=c.runtime_class_name,
            active_deadline_seconds=c.active_deadline_seconds,
            labels=c.labels or None,
            resources=c.resources,
            runner=self._runner,
            retry=self._retry,
            start=False,
        )
        try:
            await asyncio.to_thread(executor.start)
        except BaseException:
            await asyncio.to_thread(executor.stop)
            raise
        self._executor = executor
        self._worker = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="kubectl-executor"
        )

    async def stop(self) -> None:
        """Delete the pod (not an attached one). Idempotent."""
        executor, worker = self._executor, self._worker
        self._executor = self._worker = None
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)
        if executor is not None:
            await asyncio.to_thread(executor.stop)

    async def restart(self) -> None:
        """A fresh pod with the same options."""
        await self.stop()
        await self.start()

    # -- running ----------------------------------------------------------------------------------

    async def execute_code_blocks(
        self, code_blocks: list[AutogenCodeBlock], cancellation_token: CancellationToken
    ) -> KubectlCodeResult:
        """Run the blocks in order in the pod; stop at the first non-zero exit."""
        if cancellation_token.is_cancelled():
            raise asyncio.CancelledError()
        if self._executor is None:
            await self.start()
        executor, worker = self._executor, self._worker
        assert executor is not None and worker is not None
        blocks = [CodeBlock(code=b.code, language=normalise_language(b.language)) for b in code_blocks]
        job = worker.submit(executor.execute_code_blocks, blocks)
        waiter = asyncio.wrap_future(job)
        cancellation_token.link_future(waiter)
        try:
            result = await waiter
        except asyncio.CancelledError:
            await self._abort(executor, job)
            raise
        return KubectlCodeResult(exit_code=result.exit_code, output=result.output, code_file=result.code_file)

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

    # -- Component --------------------------------------------------------------------------------

    def _to_config(self) -> KubectlCodeExecutorConfig:
        return self._config.model_copy(deep=True)

    @classmethod
    def _from_config(cls, config: KubectlCodeExecutorConfig) -> Self:
        values = {name: getattr(config, name) for name in KubectlCodeExecutorConfig.model_fields}
        return cls(**values)
