"""Integration fixtures: the real kubectl against the local emulator, or against a real cluster.

* Default: the bundled emulator (fixtures/kube_emulator), started once per session.
* ``KX_TEST_CONTEXT=<context>``: the same tests run unchanged against that kubeconfig context
  (``KUBECONFIG`` as kubectl resolves it, or ``KX_TEST_KUBECONFIG``); they create a fresh namespace
  and delete it at the end. ``KX_TEST_IMAGE`` overrides the image (default python:3-slim).
* ``KX_TEST_KUBECTL=/path/to/kubectl`` picks the kubectl binary (default: the one on PATH).

Every test gets executors through ``executor_factory``; at the end of the session no pod of
this library may be left in the test namespace.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import KubernetesCommandLineCodeExecutor


def _kubectl_path() -> str:
    chosen = os.environ.get("KX_TEST_KUBECTL") or shutil.which("kubectl")
    if not chosen:
        pytest.fail("no kubectl: install it or set KX_TEST_KUBECTL (integration tests never fake kubectl)")
    return chosen


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    kubectl = _kubectl_path()
    namespace = f"kx-test-{secrets.token_hex(3)}"
    context = os.environ.get("KX_TEST_CONTEXT")
    saved = {k: os.environ.get(k) for k in ("KUBECACHEDIR",)}
    emulator = None
    if context:
        kubeconfig = os.environ.get("KX_TEST_KUBECONFIG")
        env: dict[str, str] = {}
    else:
        from kube_emulator import Emulator

        emulator = Emulator()
        emulator.start()
        state = tmp_path_factory.mktemp("kubectl")
        kubeconfig = str(emulator.write_kubeconfig(state / "kubeconfig"))
        # Discovery caches are per session so that no other run's answers leak in.
        env = {"KUBECACHEDIR": str(state / "cache")}
        os.environ.update(env)
    found = Cluster(
        kubectl=kubectl,
        kubeconfig=kubeconfig,
        context=context,
        namespace=namespace,
        image=os.environ.get("KX_TEST_IMAGE", "python:3-slim"),
        emulator=emulator,
        env=env,
    )
    found.run("create", "namespace", namespace)
    try:
        yield found
        # With their labels and creation time: which test (owner pid, pool, workspace) made them.
        leaked = [
            (p["metadata"]["name"], p["metadata"].get("creationTimestamp"), p["metadata"].get("labels"))
            for p in found.pods()
        ]
        assert not leaked, f"pods leaked by the integration suite: {leaked}"
    finally:
        found.run("delete", "namespace", namespace, "--wait=false", check=False)
        if emulator is not None:
            emulator.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def executor_factory(cluster: Cluster) -> Iterator[ExecutorFactory]:
    """Build started executors on the test cluster; every one is stopped at teardown."""
    made: list[KubernetesCommandLineCodeExecutor] = []

    def make(**kwargs: Any) -> KubernetesCommandLineCodeExecutor:
        executor = KubernetesCommandLineCodeExecutor(**{**cluster.executor_kwargs(), **kwargs})
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.stop()


@pytest.fixture
def executor(executor_factory: ExecutorFactory) -> KubernetesCommandLineCodeExecutor:
    return executor_factory()


@pytest.fixture
def emulator(cluster: Cluster) -> Iterator[Any]:
    """The local emulator, its fault table cleared before and after; skips on a real cluster."""
    if cluster.emulator is None:
        pytest.skip("needs the local emulator (fault injection, its URL, a proxy in front of it)")
    cluster.emulator.faults.clear()
    yield cluster.emulator
    cluster.emulator.faults.clear()


@pytest.fixture
def waits() -> list[float]:
    """Every wait the library's retry policy asked for (recorded, never slept)."""
    return []
