"""What the AutoGen-style suites' shims share (tests/external/shims/autogen_conftest.py,
seed_pod_conftest.py): the cluster from the environment, and stopping what tests leave running.

Those suites construct executors with no cluster arguments (``DockerCommandLineCodeExecutor()``
becomes ``KubectlCodeExecutor()``), so the cluster comes from the environment, as for any user of
kubectl: ``configure()`` starts the emulator (or uses KX_TEST_CONTEXT's cluster), writes a
kubeconfig whose current context points at a fresh namespace, and exports KUBECONFIG and KUBECTL.

Many of these tests never stop their executor (the local executor needs no stop). Each adapter a
test started is stopped after that test (executors of module fixtures by their own fixture), and
at the end the namespaces must hold no pod of ours: a pod left behind fails the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kx_external import MANAGED, ExternalCluster
from kx_external_plugin import listed_skips

from kubectl_executor.autogen import KubectlCodeExecutor

_state: dict[str, ExternalCluster] = {}
_unexpected_skips: list[str] = []
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
    path.write_text(cluster.run("config", "view", "--raw", "--minify", "--flatten").stdout)
    path.chmod(0o600)
    argv = [cluster.kubectl, f"--kubeconfig={path}", "config", "set-context", "--current"]
    subprocess.run([*argv, f"--namespace={cluster.namespace}"], check=True, capture_output=True, timeout=60)
    return path


def configure() -> ExternalCluster:
    tmp = Path(tempfile.mkdtemp(prefix="kx-autogen-suite-"))
    cluster = ExternalCluster.start(tmp)
    _state["cluster"] = cluster
    kubeconfig = _namespaced_kubeconfig(cluster, tmp)
    _setenv({**cluster.env, "KUBECONFIG": str(kubeconfig), "KUBECTL": cluster.kubectl})
    KubectlCodeExecutor.start = _recording_start  # type: ignore[method-assign]
    return cluster


def _stop(executors: list[KubectlCodeExecutor]) -> None:
    for executor in executors:
        if executor.executor is not None:
            asyncio.run(executor.stop())


def stop_after_test() -> Iterator[None]:
    """Body of an autouse fixture: stop the adapters the test started and left running."""
    mark = len(_started)
    yield
    left = _started[mark:]
    del _started[mark:]
    _stop(left)


def _ours_in(cluster: ExternalCluster, namespace: str) -> list[str]:
    done = cluster.run("get", "pods", "-n", namespace, "-l", MANAGED, "-o", "json", check=False)
    if done.returncode != 0:
        return [f"(could not list pods in {namespace}: {done.stderr.strip()})"]
    items = json.loads(done.stdout)["items"]
    return [
        f"{namespace}/{p['metadata']['name']}" for p in items if not p["metadata"].get("deletionTimestamp")
    ]


def note_skip(report: pytest.TestReport) -> None:
    """A skip that rules.toml does not list is a failure: the suite's own gates (is a cluster
    reachable?) must not turn a broken setup into a green run of zero tests."""
    if not report.skipped:
        return
    listed = listed_skips()
    nodeid = report.nodeid
    names = {
        nodeid,
        nodeid.split("[", 1)[0],
        nodeid.rsplit("::", 1)[-1],
        nodeid.rsplit("::", 1)[-1].split("[", 1)[0],
    }
    if not names & set(listed):
        _unexpected_skips.append(nodeid)


def finish(session: pytest.Session, also_namespaces: tuple[str, ...] = ()) -> None:
    """Stop what is still running, delete the namespace, fail on a leaked pod or an unlisted skip."""
    _stop(list(_started))
    _started.clear()
    KubectlCodeExecutor.start = _original_start  # type: ignore[method-assign]
    cluster = _state.pop("cluster", None)
    if cluster is None:
        return
    leaked = [leak for ns in also_namespaces for leak in _ours_in(cluster, ns)]
    leaked += cluster.stop()
    for key, value in _saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    problems = []
    if leaked:
        problems.append(f"pods leaked by the suite: {leaked}")
    if _unexpected_skips:
        problems.append(f"tests skipped that rules.toml does not list as not applicable: {_unexpected_skips}")
    for problem in problems:
        if reporter is not None:
            reporter.write_line(f"FAILED: {problem}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
