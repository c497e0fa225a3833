"""The seed's Jupyter executor (``PodJupyterCodeExecutor``), on a stateful pod session.

kubernetes-robin-executor's ``PodJupyterServer`` starts a Jupyter kernel gateway pod plus a
Service (and a token Secret), and its ``PodJupyterCodeExecutor`` talks HTTP and WebSocket to
that Service: it works only from inside the cluster. Here the same two classes need no server,
no Service and no Secret: the "server" is a pod of ours, and each executor's "kernel" is a
stateful session to it (one persistent Python interpreter reached by ``kubectl exec``), so it
works wherever kubectl does. A migrating user changes the import line::

    from kubectl_executor.autogen import PodJupyterCodeExecutor, PodJupyterServer

    async with PodJupyterServer() as server:
        async with PodJupyterCodeExecutor(server) as executor:
            result = await executor.execute_code_blocks([CodeBlock(code="x = 1", language="python")],
                                                        CancellationToken())

Variables persist between blocks and calls; ``restart()`` gives a fresh interpreter (the pod and
its files stay); ``stop()`` ends the executor's session (the server owns the pod). Differences
from the seed, each refused with :class:`~kubectl_executor.errors.InvalidInputError` rather than
silently ignored: ``service_spec`` and ``secret_spec`` (no Service or Secret is made), a
``command``/``args`` other than the seed's kernel-gateway start (no server runs), a kernel other
than ``python3``, and a ``PodJupyterConnectionInfo`` with a server URL (ours names a pod).
Install with ``pip install 'kubectl-executor[autogen]'``.

A little over ~600 lines: the seed's two classes and their connection info stay together, as the
seed's one module has them, so that its users find every name in one place.
"""

from __future__ import annotations

try:
    from autogen_core import CancellationToken, Component, ComponentBase
    from autogen_core.code_executor import CodeBlock, CodeExecutor, CodeResult
except ImportError as exc:
    raise ImportError(
        "kubectl_executor.autogen needs AutoGen 0.4 or newer: pip install 'kubectl-executor[autogen]'"
    ) from exc

import ast
import asyncio
import base64
import json
import logging
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

from pydantic import BaseModel
from typing_extensions import Self

from .._cluster.manifest import CONTAINER
from .._cluster.retry import RetryPolicy
from .._cluster.runner import Runner
from .._exec.languages import resolve_language, silence_pip
from ..boundary import PodShape, RunOptions
from ..defaults import IMAGE
from ..errors import InvalidInputError, KubectlExecutorError
from ..executor import BlockResult, KubernetesCommandLineCodeExecutor
from .config import (
    DEFAULT_PORT,
    KERNEL,
    PodJupyterCodeExecutorConfig,
    PodJupyterConnectionInfo,
    PodJupyterServerConfig,
)
from .specs import SEED_CONTAINER, add_workspace_volume, spec_from

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COMMAND",
    "PodJupyterCodeExecutor",
    "PodJupyterCodeExecutorConfig",
    "PodJupyterCodeResult",
    "PodJupyterConnectionInfo",
    "PodJupyterServer",
    "PodJupyterServerConfig",
]

# The seed's kernel-gateway start command (its default). Nothing of it is needed here: accepted
# so that the seed's code and dumped configurations load, never run.
DEFAULT_COMMAND = [
    "/bin/bash",
    "-o",
    "pipefail",
    "-c",
    """
    mamba install --yes jupyter_kernel_gateway ipykernel && \\
        mamba clean --all -f -y && \\
        fix-permissions "${CONDA_DIR}" && \\
        fix-permissions "/home/${NB_USER}"; \\
    python -m jupyter kernelgateway --KernelGatewayApp.ip=0.0.0.0 \\
        --JupyterApp.answer_yes=true \\
        --JupyterWebsocketPersonality.list_kernels=true;
    """,
]
TIMEOUT_ERROR = "Timeout waiting for output from code block."  # the seed's words
# How long a cancelled call waits for its block to end after the interrupt reached the pod.
CANCEL_GRACE_SECONDS = 30.0
_POD_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,54})[a-z0-9]?$")  # the seed's check


@dataclass
class PodJupyterCodeResult(CodeResult):
    """The seed's result: ``output`` is the text, ``output_files`` the images and HTML saved."""

    output_files: list[Path]


class PodJupyterServer(Component[PodJupyterServerConfig], ComponentBase[BaseModel]):
    """The seed's ``PodJupyterServer``: here only the pod, no kernel gateway, Service or Secret.

    Same constructor. ``timeout`` bounds the pod's start; ``workspace_path`` is the work dir;
    ``volume`` (a dict, YAML text or file, or a V1Volume-like object) is mounted there;
    ``pod_spec`` (same forms, naming a container ``autogen-executor``) gives the image, env,
    resources, mounts and the pod's other fields (its ``command``/``args``, the server's start,
    are not used: our container idles); ``kube_config_file`` is kubectl's kubeconfig.
    ``port`` and ``token`` are accepted and unused (nothing listens). The pod is hardened
    (non-root) unless ``hardened=False``. ``auto_remove=False``: the ``async with`` exit keeps
    the pod; :meth:`stop` always deletes it.
    """

    class GenerateToken:
        """The seed's marker for "make a token": accepted, unused (no server checks one)."""

    component_type = "jupyter_server"
    component_version = 1
    component_description = "a pod whose stateful Python sessions are reached through kubectl"
    component_config_schema = PodJupyterServerConfig
    component_provider_override = "kubectl_executor.autogen.PodJupyterServer"

    def __init__(
        self,
        *,
        image: str | None = None,
        pod_name: str | None = None,
        command: list[str] | None = DEFAULT_COMMAND,
        args: list[str] | None = None,
        timeout: int = 60,
        workspace_path: Path | str = "/workspace",
        namespace: str = "default",
        volume: Any = None,
        pod_spec: Any = None,
        auto_remove: bool = True,
        port: int = DEFAULT_PORT,
        service_spec: Any = None,
        token: str | GenerateToken | None = None,
        secret_spec: Any = None,
        kube_config_file: Path | str | None = None,
        hardened: bool = True,
        kubectl: str | None = None,
        context: str | None = None,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if service_spec is not None:
            raise InvalidInputError(
                "service_spec: no Service is made (the executor reaches the pod through kubectl); drop it"
            )
        if secret_spec is not None:
            raise InvalidInputError(
                "secret_spec: no token Secret is made (no Jupyter server runs, nothing checks a token); drop it"
            )
        if command not in (None, DEFAULT_COMMAND) or args:
            raise InvalidInputError(
                "command/args start a Jupyter server in the seed; none runs here (the pod idles and "
                "code runs in a session over kubectl exec): leave them unset"
            )
        if not isinstance(timeout, int) or timeout < 1:
            raise InvalidInputError("Timeout must be greater than or equal to 1.")
        workspace = PurePosixPath(str(workspace_path))
        if not workspace.is_absolute():
            raise InvalidInputError("Not supports workspace path as relative path")  # the seed's words
        volume_dict = spec_from(volume, "volume")
        given = spec_from(pod_spec, "pod_spec")
        meta = dict((given or {}).get("metadata") or {})
        name = str(meta.get("name") or pod_name or f"autogen-jupyter-{uuid.uuid4()}")
        namespace = str(meta.get("namespace") or namespace)
        if not _POD_NAME.fullmatch(name):
            raise InvalidInputError(
                "Pod name validation failed: pod name must start and end with lower alphanumeric characters "
                "with length 56, and contain only lowercase alphanumeric or dash('-') characters."
            )
        image_name = image or IMAGE
        labels: dict[str, str] = {}
        overrides: dict[str, Any] = {}
        if given is not None:
            image_name, labels, overrides = pod_overrides_from(given, image_name)
        add_workspace_volume(overrides, volume_dict)
        self._config = PodJupyterServerConfig(
            image=image_name,
            pod_name=name,
            command=command,
            args=args,
            timeout=timeout,
            workspace_path=str(workspace),
            namespace=namespace,
            volume=volume_dict,
            pod_spec=given,
            auto_remove=auto_remove,
            port=port,
            kube_config_file=str(kube_config_file) if kube_config_file is not None else None,
            hardened=hardened,
            kubectl=kubectl,
            context=context,
        )
        self._shape = PodShape(
            image=image_name,
            work_dir=str(workspace),
            hardened=hardened,
            labels=labels,
            pod_overrides=overrides,
        )
        self._runner = runner
        self._retry = retry
        self._executor: KubernetesCommandLineCodeExecutor | None = None
        # The seed's attribute names, which its users' code (and its tests) read.
        self._pod_name = name
        self._namespace = namespace
        self._auto_remove = auto_remove
        self._pod: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace}}

    @property
    def pod_name(self) -> str:
        return self._pod_name

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def connection_info(self) -> PodJupyterConnectionInfo:
        """How executors reach this server's pod (kubectl, the pod, its work dir)."""
        c = self._config
        return PodJupyterConnectionInfo(
            pod_name=self._pod_name,
            namespace=self._namespace,
            work_dir=c.workspace_path,
            kubectl=c.kubectl,
            kubeconfig=c.kube_config_file,
            context=c.context,
        )

    @property
    def running(self) -> bool:
        return self._executor is not None

    async def start(self) -> None:
        """Create the pod and wait until it is ready (bounded by ``timeout``). Idempotent."""
        if self._executor is not None:
            return
        c = self._config
        executor = KubernetesCommandLineCodeExecutor(
            pod_name=self._pod_name,
            namespace=self._namespace,
            kubectl=c.kubectl,
            kubeconfig=c.kube_config_file,
            context=c.context,
            pod=self._shape,
            run_options=RunOptions(timeout=c.timeout, startup_timeout=float(c.timeout)),
            runner=self._runner,
            retry=self._retry,
            start=False,
        )
        try:
            await asyncio.to_thread(executor.start)
            self._pod = await asyncio.to_thread(
                executor.kubectl.json, ["get", "pod", self._pod_name], idempotent=True
            )
        except BaseException:
            await asyncio.to_thread(executor.stop)
            raise
        self._executor = executor

    async def stop(self) -> None:
        """Delete the pod and wait (bounded) until it is gone, so that the same server (its
        name is fixed) can :meth:`start` again. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.to_thread(executor.stop)
        wait = ["wait", "--for=delete", f"pod/{self._pod_name}", "--timeout=60s"]
        await asyncio.to_thread(executor.kubectl.run, wait, timeout=90.0, check=False)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if self._auto_remove:
            await self.stop()

    def _to_config(self) -> PodJupyterServerConfig:
        return self._config.model_copy(deep=True)

    @classmethod
    def _from_config(cls, config: PodJupyterServerConfig) -> Self:
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
            auto_remove=config.auto_remove,
            port=config.port,
            kube_config_file=config.kube_config_file,
            hardened=config.hardened,
            kubectl=config.kubectl,
            context=config.context,
        )


class PodJupyterCodeExecutor(CodeExecutor, Component[PodJupyterCodeExecutorConfig]):
    """The seed's ``PodJupyterCodeExecutor``: blocks run statefully in a pod's Python session.

    ``jupyter_server`` is a :class:`PodJupyterServer` or the :class:`PodJupyterConnectionInfo`
    of a ready pod. Python blocks share one interpreter (variables persist); shell blocks run
    as processes in the same work dir. As in the seed: blocks run in order, the first error
    stops them with exit code 1 and ``ERROR: ...`` in the output, a timeout is exit code 1
    (the block is interrupted in the pod and the interpreter's state kept), images (PNG) and
    HTML shown by a block are saved into ``output_dir`` and listed in ``output_files``.
    Cancelling the token interrupts the block in the pod and raises ``CancelledError``.
    """

    component_config_schema = PodJupyterCodeExecutorConfig
    component_provider_override = "kubectl_executor.autogen.PodJupyterCodeExecutor"

    def __init__(
        self,
        jupyter_server: PodJupyterServer | PodJupyterConnectionInfo,
        kernel_name: str = KERNEL,
        timeout: int = 60,
        output_dir: Path | str | None = None,
        *,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(timeout, int) or timeout < 1:
            raise InvalidInputError("Timeout must be greater than or equal to 1.")
        if kernel_name != KERNEL:
            raise InvalidInputError(
                f"Kernel {kernel_name} is not installed. (the pod's session runs Python: use {KERNEL!r})"
            )
        if isinstance(jupyter_server, PodJupyterServer):
            self._connection_info = jupyter_server.connection_info
            runner = runner or jupyter_server._runner
            retry = retry or jupyter_server._retry
        elif isinstance(jupyter_server, PodJupyterConnectionInfo):
            self._connection_info = jupyter_server
        else:
            raise InvalidInputError("jupyter_server must be a PodJupyterServer or PodJupyterConnectionInfo.")
        self._kernel_name = kernel_name
        self._timeout = timeout
        self._output_dir: Path | None = Path(output_dir) if output_dir is not None else None
        self._runner = runner
        self._retry = retry
        self._executor: KubernetesCommandLineCodeExecutor | None = None
        self._lock: asyncio.Lock | None = None

    @property
    def timeout(self) -> int:
        return self._timeout

    @property
    def output_dir(self) -> Path:
        """Where images and HTML are saved: the given directory, else a temporary one made on
        first use and kept (the files outlive the result that names them)."""
        if self._output_dir is None:
            self._output_dir = Path(tempfile.mkdtemp(prefix="kx-jupyter-"))
        self._output_dir.mkdir(parents=True, exist_ok=True)
        return self._output_dir

    @property
    def executor(self) -> KubernetesCommandLineCodeExecutor | None:
        """The stateful executor behind this one, while started (for files)."""
        return self._executor

    async def start(self) -> None:
        """Attach a stateful session to the server's pod (which must be ready). Idempotent."""
        if self._executor is not None:
            return
        info = self._connection_info
        executor = KubernetesCommandLineCodeExecutor(
            pod_name=info.pod_name,
            namespace=info.namespace,
            timeout=self._timeout,
            work_dir=info.work_dir,
            kubectl=info.kubectl,
            kubeconfig=info.kubeconfig,
            context=info.context,
            attach=True,
            stateful=True,
            runner=self._runner,
            retry=self._retry,
            start=False,
        )
        await asyncio.to_thread(executor.start)
        self._executor = executor

    async def stop(self) -> None:
        """End the session (its interpreter with it); the pod is the server's. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.stop)

    async def restart(self) -> None:
        """A fresh interpreter: variables are gone, the pod and its files stay."""
        executor = self._executor
        if executor is None:
            await self.start()
            return
        await asyncio.to_thread(executor.restart)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def execute_code_blocks(
        self, code_blocks: list[CodeBlock], cancellation_token: CancellationToken
    ) -> PodJupyterCodeResult:
        """Run the blocks in order as cells of the pod's session; stop at the first error."""
        if self._executor is None:
            await self.start()
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one session: one block at a time
            executor = self._executor
            assert executor is not None
            outputs: list[str] = []
            output_files: list[Path] = []
            for block in code_blocks:
                language = resolve_language(block.language)
                if language is None:
                    return _failed(outputs, f"Unsupported language {block.language}", output_files)
                code = silence_pip(block.code, block.language)
                if language.runner == "python":
                    code = shell_escapes(code)
                result = await self._run(executor, code, block.language, cancellation_token)
                if result.exit_code != 0 or result.timed_out:
                    # As the seed: the failing block's rich outputs are not kept (its stdout is).
                    outputs.extend(t for t in (result.stdout,) if t)
                    return _failed(outputs, _error_text(result, self._timeout), output_files)
                texts, files = self._outputs_of(result)
                outputs.extend(texts)
                output_files.extend(files)
            return PodJupyterCodeResult(exit_code=0, output="\n".join(outputs), output_files=output_files)

    async def _run(
        self,
        executor: KubernetesCommandLineCodeExecutor,
        code: str,
        language: str,
        token: CancellationToken,
    ) -> BlockResult:
        """One block in a worker thread; a cancelled token interrupts it in the pod (the
        interpreter keeps its state) before ``CancelledError`` goes on, as the seed's does. A
        token cancelled before the block starts runs nothing."""
        if token.is_cancelled():
            raise asyncio.CancelledError
        job = asyncio.ensure_future(asyncio.to_thread(executor.run, code, language, timeout=self._timeout))
        waiter = asyncio.ensure_future(asyncio.shield(job))
        token.link_future(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            await self._interrupt(executor, job)
            raise

    @staticmethod
    async def _interrupt(executor: KubernetesCommandLineCodeExecutor, job: asyncio.Future[Any]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CANCEL_GRACE_SECONDS
        while not job.done() and loop.time() < deadline:
            try:
                await asyncio.to_thread(executor.cancel)
            except KubectlExecutorError as exc:
                logger.warning(
                    "could not interrupt the cancelled block in pod %s: %s", executor.pod_name, exc
                )
            # The run returns soon after the interrupt; one that came before the block started
            # is caught by the next round.
            await asyncio.wait([job], timeout=0.5)
        if job.done() and not job.cancelled():
            job.exception()  # retrieved: a cancelled call has no result to report
        else:
            logger.warning(
                "cancelled block in pod %s did not end in %gs", executor.pod_name, CANCEL_GRACE_SECONDS
            )

    def _outputs_of(self, result: BlockResult) -> tuple[list[str], list[Path]]:
        """The block's entries of ``output`` and the files saved, in the seed's order: one
        entry for its text (streams, text/plain, other text types as JSON), then one per image
        or HTML output (a saved file's path; an image other than PNG as JSON)."""
        texts = [t for t in (result.stdout, result.stderr) if t]
        entries: list[str] = []
        files: list[Path] = []
        for mime, data, kept in rich_outputs(result):
            if kept is not None:
                texts.append(f"({mime} over the output budget, kept in the pod: {kept})")
            elif mime == "text/plain":
                texts.append(data if isinstance(data, str) else data.decode(errors="replace"))
            elif mime in ("image/png", "text/html"):
                path = self._save(mime, data)
                entries.append(str(path))
                files.append(path)
            else:  # as the seed: other types' data as JSON (binary ones as base64 text)
                text = json.dumps(data if isinstance(data, str) else base64.b64encode(data).decode())
                (entries if mime.startswith("image/") else texts).append(text)
        return ["\n".join(texts), *entries], files

    def _save(self, mime: str, data: str | bytes) -> Path:
        suffix = ".png" if mime == "image/png" else ".html"
        path = (self.output_dir / f"{uuid.uuid4().hex}{suffix}").absolute()
        if isinstance(data, str):
            data = base64.b64decode(data) if suffix == ".png" else data.encode()
        path.write_bytes(data)
        return path

    def _to_config(self) -> PodJupyterCodeExecutorConfig:
        return PodJupyterCodeExecutorConfig(
            jupyter_server=self._connection_info,
            kernel_name=self._kernel_name,
            timeout=self._timeout,
            output_dir=str(self._output_dir) if self._output_dir is not None else None,
        )

    @classmethod
    def _from_config(cls, config: PodJupyterCodeExecutorConfig) -> Self:
        return cls(
            jupyter_server=config.jupyter_server,
            kernel_name=config.kernel_name,
            timeout=config.timeout,
            output_dir=config.output_dir,
        )


# -- pure helpers ---------------------------------------------------------------------------------


def rich_outputs(result: BlockResult) -> list[tuple[str, str | bytes, str | None]]:
    """(MIME type, data, kept path in the pod if over budget) of each rich output, in order."""
    return [(o.mime_type, o.data, o.kept_path) for o in result.outputs]


_ESCAPE = re.compile(r"^(?P<indent>[ \t]*)(?:!(?P<shell>.*)|%pip\s(?P<pip>.*))$")


def shell_escapes(code: str) -> str:
    """IPython's ``!command`` and ``%pip ...`` lines (what models write for Jupyter) as
    subprocess calls in the pod's Python (no ``$name`` expansion of Python variables). Only
    code that is not Python as it stands is changed, and only if the result is Python: a
    ``!`` inside a string is left alone."""
    try:
        ast.parse(code)
        return code
    except SyntaxError:
        pass
    lines = code.split("\n")
    for index, line in enumerate(lines):
        found = _ESCAPE.match(line)
        if found is None:
            continue
        indent = found["indent"]
        if found["shell"] is not None:
            call = f"__import__('subprocess').run({found['shell']!r}, shell=True)"
        else:  # %pip: the interpreter's own pip, as IPython runs it
            call = (
                "__import__('subprocess').run([__import__('sys').executable, '-m', 'pip', "
                f"*__import__('shlex').split({found['pip']!r})])"
            )
        lines[index] = indent + call
    changed = "\n".join(lines)
    try:
        ast.parse(changed)
    except SyntaxError:
        return code  # not ours to fix: the interpreter reports the original error
    return changed


def _failed(outputs: list[str], error: str, files: list[Path]) -> PodJupyterCodeResult:
    existing = "\n".join(outputs)
    return PodJupyterCodeResult(exit_code=1, output=f"{existing}\nERROR: {error}", output_files=files)


def _error_text(result: BlockResult, timeout: int) -> str:
    """The seed's error line (``ERROR: <type>: <message>`` then the traceback) from our result."""
    stderr = result.stderr.rstrip("\n")
    lost = " The interpreter was restarted: earlier variables are gone." if result.state_lost else ""
    if result.timed_out:
        return f"{TIMEOUT_ERROR} (interrupted in the pod after {timeout} s){lost}\n{stderr}".rstrip("\n")
    last = stderr.rsplit("\n", 1)[-1] if stderr else ""
    if re.match(r"^[A-Za-z_][\w.]*(: |$)", last):
        return f"{last}{lost}\n{stderr}"
    return f"exit code {result.exit_code}{lost}\n{stderr}".rstrip("\n")


def pod_overrides_from(given: dict[str, Any], image: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(image, labels, pod_overrides) from the seed's pod spec. Its ``autogen-executor``
    container gives our code container its image, env, resources and mounts; its command and
    args (the server's start) and its ports are dropped: our container idles, nothing listens."""
    spec = dict(given.get("spec") or {})
    containers = list(spec.pop("containers", None) or [])
    ours = next((c for c in containers if isinstance(c, dict) and c.get("name") == SEED_CONTAINER), None)
    if ours is None and containers:
        raise InvalidInputError("No container which name is autogen-executor")
    merged: dict[str, Any] = {"name": CONTAINER}
    if ours is not None:
        image = str(ours.get("image") or image)
        merged.update(
            {k: v for k, v in ours.items() if k not in ("name", "image", "command", "args", "ports")}
        )
        if ours.get("command") or ours.get("args"):
            logger.info("pod_spec: the %s container's command is not used (no server runs)", SEED_CONTAINER)
    others = [c for c in containers if c is not ours]
    meta = dict(given.get("metadata") or {})
    overrides: dict[str, Any] = {"spec": {**spec, "containers": [merged, *others]}}
    if meta.get("annotations"):
        overrides["metadata"] = {"annotations": dict(meta["annotations"])}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    return image, labels, overrides
