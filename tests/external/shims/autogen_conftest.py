"""Shim for AutoGen's own executor tests (autogen-ext, autogen-agentchat) run on our adapter.

The suites construct their executors with no cluster arguments (``DockerCommandLineCodeExecutor()``
becomes ``KubectlCodeExecutor()``), so the cluster comes from the environment, as for any user of
kubectl: this conftest starts the emulator (or uses KX_TEST_CONTEXT's cluster), writes a
kubeconfig whose current context points at a fresh namespace, and exports KUBECONFIG and KUBECTL.

Many of these tests never stop their executor (the local executor needs no stop). Each adapter a
test started is stopped after that test (executors of module fixtures by their own fixture), and
at the end the namespace must hold no pod of ours: a pod left behind fails the run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kx_external import ExternalCluster

from kubectl_executor.autogen import KubectlCodeExecutor

_cluster: ExternalCluster | None = None
_saved: dict[str, str | None] = {}
_started: list[KubectlCodeExecutor] = []
_original_start = KubectlCodeExecutor.start


async def _recording_start(self: KubectlCodeExecutor) -> None:
    """The adapter's own start, noting the executor so the shim can stop what a test left."""
    await _original_start(self)
    if self not in _started:
        _started.append(self)


def _setenv(values: dict[str, str]) -> None:
    for key, value in values.items():
        _saved.setdefault(key, os.environ.get(key))
        os.environ[key] = value


def _namespaced_kubeconfig(cluster: ExternalCluster, tmp: Path) -> Path:
    """A self-contained kubeconfig of the cluster whose current context uses the test namespace."""
    path = tmp / "kubeconfig-ns"
    view = cluster.run("config", "view", "--raw", "--minify", "--flatten")
    path.write_text(view.stdout)
    path.chmod(0o600)
    argv = [cluster.kubectl, f"--kubeconfig={path}", "config", "set-context", "--current"]
    subprocess.run([*argv, f"--namespace={cluster.namespace}"], check=True, capture_output=True, timeout=60)
    return path


def pytest_configure(config: pytest.Config) -> None:
    global _cluster
    tmp = Path(tempfile.mkdtemp(prefix="kx-autogen-suite-"))
    _cluster = ExternalCluster.start(tmp)
    kubeconfig = _namespaced_kubeconfig(_cluster, tmp)
    _setenv({**_cluster.env, "KUBECONFIG": str(kubeconfig), "KUBECTL": _cluster.kubectl})
    KubectlCodeExecutor.start = _recording_start  # type: ignore[method-assign]


def _stop(executors: list[KubectlCodeExecutor]) -> None:
    for executor in executors:
        if executor.executor is not None:
            asyncio.run(executor.stop())


@pytest.fixture(autouse=True)
def _stop_what_the_test_started() -> Iterator[None]:
    mark = len(_started)
    yield
    left = _started[mark:]
    del _started[mark:]
    _stop(left)


def pytest_sessionfinish(session: pytest.Session, exitstatus: Any) -> None:
    """Stop what is still running, delete the namespace, fail on a leaked pod."""
    global _cluster
    _stop(list(_started))
    _started.clear()
    KubectlCodeExecutor.start = _original_start  # type: ignore[method-assign]
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
