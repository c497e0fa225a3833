"""PodCommandLineCodeExecutor: the seed package's executor, its constructor mapped onto ours."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from typing_extensions import Self

from .._cluster.manifest import CONTAINER
from .._cluster.retry import RetryPolicy
from .._cluster.runner import Runner
from ..boundary import PodShape
from ..defaults import IMAGE, WORK_DIR
from ..errors import InvalidInputError
from .config import PodCommandLineCodeExecutorConfig
from .executor import KubectlCodeExecutor
from .functions import AnyFunction
from .specs import SEED_CONTAINER, add_workspace_volume, spec_from

logger = logging.getLogger(__name__)


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
        workspace_path: Path | str = Path(WORK_DIR),
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
        volume_dict = spec_from(volume, "volume")
        given = spec_from(pod_spec, "pod_spec")
        name = pod_name or f"autogen-code-exec-{uuid.uuid4()}"
        meta = dict((given or {}).get("metadata") or {})
        name = str(meta.get("name") or name)
        namespace = str(meta.get("namespace") or namespace)
        if not re.fullmatch(r"^[a-z0-9](?:[a-z0-9-]{0,61})[a-z0-9]?$", name):
            raise InvalidInputError(
                "Pod name validation failed: pod name must start and end with lower alphanumeric characters, "
                "and contain only lowercase alphanumeric or dash('-') characters."
            )
        image_name = image or IMAGE
        overrides: dict[str, Any] = {}
        labels: dict[str, str] = {}
        if given is not None:
            image_name, labels, overrides = self._from_pod_spec(given, image_name)
        elif command:
            overrides = {
                "spec": {"containers": [{"name": CONTAINER, "command": command, "args": args or []}]}
            }
        add_workspace_volume(overrides, volume_dict)
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
            pod_name=name,
            namespace=namespace,
            timeout=timeout,
            functions=functions,
            functions_module=functions_module,
            mirror=False,
            kubeconfig=str(kube_config_file) if kube_config_file is not None else None,
            kubectl=kubectl,
            pod=PodShape(
                image=image_name,
                work_dir=str(workspace),
                hardened=hardened,
                labels=labels,
                pod_overrides=overrides,
            ),
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
