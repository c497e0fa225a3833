"""Shim for the seed's tests/test_kubernetes_commandline_executor.py (kubernetes-robin-executor).

The seed's module reads its cluster from the environment when it is imported (REMOTE_CONTROL_PLANE,
KUBE_TOKEN, ROBIN_*), so this conftest starts the cluster in pytest_configure, before collection,
and fills those variables: bearer-token mode against the emulator (any token is accepted) or
against KX_TEST_CONTEXT's cluster. Nothing in the seed's file is changed beyond its imports.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from kx_external import ExternalCluster

_cluster: ExternalCluster | None = None
_saved: dict[str, str | None] = {}


def _setenv(values: dict[str, str]) -> None:
    for key, value in values.items():
        _saved.setdefault(key, os.environ.get(key))
        os.environ[key] = value


def pytest_configure(config: pytest.Config) -> None:
    global _cluster
    tmp = Path(tempfile.mkdtemp(prefix="kx-seed-commandline-"))
    _cluster = ExternalCluster.start(tmp)
    values = {
        **_cluster.env,
        "REMOTE_CONTROL_PLANE": _cluster.url,
        "KUBE_TOKEN": _cluster.token,
        "ROBIN_NAMESPACE": _cluster.namespace,
        "KUBECTL": _cluster.kubectl,  # the executor finds kubectl as a user's would: $KUBECTL
        # An existing file that is empty: the seed's tests load it instead of searching parent
        # directories for a stray .env that could override these values.
        "ROBIN_ENV_FILE": str(tmp / "empty.env"),
    }
    (tmp / "empty.env").write_text("")
    if os.environ.get("KX_TEST_IMAGE") or _cluster.emulator is None:
        # On a real cluster the seed's default image (a private one) may not be pullable.
        values["ROBIN_IMAGE"] = _cluster.image
    if _cluster.ca_pem is not None:
        # The seed's tests pass no CA (its users never did): trust the cluster's CA system-wide.
        values.update(_cluster.trust_env(_cluster.ca_pem, tmp))
    _setenv(values)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Before pytest's summary: delete the namespace, stop the emulator, fail on a leaked pod."""
    global _cluster
    if _cluster is None:
        return
    leaked = _cluster.stop()
    _cluster = None
    for key, value in _saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if leaked:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"FAILED: pods leaked by the suite: {leaked}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
