"""Types shared by the integration tests and their fixtures (importable as ``kx_cluster``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubectl_executor import ClusterAccess, Kubectl, KubernetesCommandLineCodeExecutor
from kubectl_executor._cluster.labels import MANAGED_BY, MANAGED_BY_LABEL


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

    def get_object(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object (a namespaced kind in the test namespace, or a PV), None if absent or going."""
        ns = [] if kind == "pv" else ["-n", self.namespace]
        done = self.run("get", kind, name, *ns, "-o", "json", check=False)
        if done.returncode != 0:
            assert b"NotFound" in done.stderr, done.stderr
            return None
        found: dict[str, Any] = json.loads(done.stdout)
        return None if found["metadata"].get("deletionTimestamp") else found

    def wait_gone(self, kind: str, name: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.get_object(kind, name) is not None:
            assert time.monotonic() < deadline, f"{kind} {name} still there after {timeout}s"
            time.sleep(0.1)

    def node_name(self) -> str:
        """The name of the cluster's (first) node: ``emulator-node`` on the emulator."""
        done = self.run("get", "nodes", "-o", "jsonpath={.items[0].metadata.name}")
        return done.stdout.decode()

    def node_is_this_machine(self) -> bool:
        """True when pods run on this machine's file system (the emulator, fixtures/cluster/up)."""
        return self.emulator is not None or self.node_name() in ("127.0.0.1", "localhost")

    def library_kubectl(self) -> Kubectl:
        """The library's own kubectl layer pointed at this cluster and namespace."""
        return Kubectl(
            ClusterAccess(
                kubectl=self.kubectl,
                kubeconfig=self.kubeconfig,
                context=self.context,
                namespace=self.namespace,
            )
        )

    def executor_kwargs(self) -> dict[str, Any]:
        return {
            "kubectl": self.kubectl,
            "kubeconfig": self.kubeconfig,
            "context": self.context,
            "namespace": self.namespace,
            "image": self.image,
        }


ExecutorFactory = Callable[..., KubernetesCommandLineCodeExecutor]
