"""Shim for the seed's tests/test_kubernetees_code_executor.py (kubernetes-robin-executor) run on
kubectl_executor.autogen.PodCommandLineCodeExecutor.

The cluster comes from KUBECONFIG, which the seed's own conftest (the kubernetes client) reads
too, when pytest imports it, before any pytest_configure: so this shim starts the cluster at its
own import (pytest imports the root conftest first); the seed's tests put their pods in namespace "default" (its default), so that namespace is
checked for pods of ours left behind as well (see tests/external/kx_autogen_shim.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kx_autogen_shim
import pytest

_cluster = kx_autogen_shim.configure()
_cluster.run("create", "namespace", "default", check=False)  # exists on real clusters


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    yield from kx_autogen_shim.stop_after_test()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    kx_autogen_shim.note_skip(report)


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    kx_autogen_shim.finish(session, also_namespaces=("default",))
