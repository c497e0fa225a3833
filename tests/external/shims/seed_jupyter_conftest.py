"""Shim for the seed's tests/test_jupyter_code_executor.py (kubernetes-robin-executor) run on
kubectl_executor.autogen.jupyter (PodJupyterServer, PodJupyterCodeExecutor).

As for the seed-pod suite: the cluster comes from KUBECONFIG, which the seed's own conftest (the
kubernetes client, its `kubernetes_enabled` gate) reads at import, so this shim starts the cluster
at its own import. The seed's servers live in namespace "default" (its default), which is also
checked for pods of ours left behind. A server a test started and left running is stopped after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import kx_autogen_shim
import pytest

from kubectl_executor.autogen import PodJupyterServer

_cluster = kx_autogen_shim.configure()
_cluster.run("create", "namespace", "default", check=False)  # exists on real clusters

_servers: list[PodJupyterServer] = []
_original_start = PodJupyterServer.start


async def _recording_start(self: PodJupyterServer) -> None:
    await _original_start(self)
    if self not in _servers:
        _servers.append(self)


PodJupyterServer.start = _recording_start  # type: ignore[method-assign]


def _stop_servers() -> None:
    for server in _servers:
        if server.running:
            asyncio.run(server.stop())
    _servers.clear()


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    yield from kx_autogen_shim.stop_after_test()
    _stop_servers()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    kx_autogen_shim.note_skip(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    _stop_servers()
    PodJupyterServer.start = _original_start  # type: ignore[method-assign]
    kx_autogen_shim.finish(session, also_namespaces=("default",))
