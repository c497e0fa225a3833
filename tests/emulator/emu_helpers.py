"""Helpers for the emulator's own tests: run the real kubectl, poll conditions, make pods."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kube_emulator import Emulator


@dataclass
class Kubectl:
    """Runs one kubectl binary with an isolated env (KUBECONFIG/KUBECACHEDIR/HOME)."""

    path: str
    version: str
    env: dict[str, str]
    namespace: str

    def run(
        self, *args: str, input: bytes | None = None, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [self.path, "-n", self.namespace, *args],
            input=input,
            capture_output=True,
            env=self.env,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
            )
        return proc

    def ok(self, *args: str, input: bytes | None = None, timeout: float = 30) -> str:
        return self.run(*args, input=input, timeout=timeout, check=True).stdout.decode()

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([self.path, "-n", self.namespace, *args], env=self.env, **kw)


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `cond` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def pod_manifest(name: str, image: str = "python:3-slim", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": [{"name": "main", "image": image}]}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body}


def phase(emu: Emulator, ns: str, name: str) -> str | None:
    pod = emu.get("pods", name, ns)
    return None if pod is None else pod.get("status", {}).get("phase")


def start_pod(emu: Emulator, ns: str, name: str, image: str = "python:3-slim", **spec: Any) -> dict[str, Any]:
    """Create a pod directly and wait until it is Running."""
    emu.create(pod_manifest(name, image, **spec), namespace=ns)
    wait_for(lambda: phase(emu, ns, name) == "Running", what=f"pod {name} Running")
    pod = emu.get("pods", name, ns)
    assert pod is not None
    return pod
