"""Types shared by the integration tests and their fixtures (importable as ``kx_cluster``)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_executor import KubernetesCommandLineCodeExecutor
from kubectl_executor.manifest import MANAGED_BY, MANAGED_BY_LABEL


@dataclass
class Cluster:
    """Where integration tests run: everything a test needs to reach it with kubectl."""

    kubectl: str
    kubeconfig: str | None
    context: str | None
    namespace: str
    image: str
    emulator: Any = None  # kube_emulator.Emulator when local
    env: dict[str, str] = field(default_factory=dict)

    def kubectl_argv(self, *args: str) -> list[str]:
        argv = [self.kubectl]
        if self.kubeconfig:
            argv.append(f"--kubeconfig={self.kubeconfig}")
        if self.context:
            argv.append(f"--context={self.context}")
        return [*argv, *args]

    def run(
        self, *args: str, input: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run kubectl directly (for assertions about the cluster, never in place of the library)."""
        return subprocess.run(
            self.kubectl_argv(*args),
            input=input,
            capture_output=True,
            check=check,
            env={**os.environ, **self.env},
            timeout=120,
        )

    def pods(self) -> list[dict[str, Any]]:
        """This library's pods in the test namespace."""
        out = self.run(
            "get", "pods", "-n", self.namespace, "-l", f"{MANAGED_BY_LABEL}={MANAGED_BY}", "-o", "json"
        )
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return [p for p in items if not p["metadata"].get("deletionTimestamp")]

    def executor_kwargs(self) -> dict[str, Any]:
        return {
            "kubectl": self.kubectl,
            "kubeconfig": self.kubeconfig,
            "context": self.context,
            "namespace": self.namespace,
            "image": self.image,
        }


ExecutorFactory = Callable[..., KubernetesCommandLineCodeExecutor]
