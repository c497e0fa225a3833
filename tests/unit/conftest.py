"""Fixtures of the unit tests: the fake kubectl runner (see kx_fakes.py), never a real kubectl."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kx_fakes import FakeRunner

from kubectl_executor import executor as executor_module
from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._exec.protocol import LOG_DIR
from kubectl_executor.boundary import ClusterAccess


@pytest.fixture(scope="session", autouse=True)
def _pod_logs_left_on_this_machine() -> Iterator[None]:
    """The pod scripts that unit tests run here (run.sh, agent.sh, rich.py) keep their logs in
    /tmp/kx-logs, as they do in a pod: what the run added there is removed at its end."""
    logs = Path(LOG_DIR)
    existed = logs.is_dir()
    before = set(logs.iterdir()) if existed else set()
    yield
    if not logs.is_dir():
        return
    for entry in set(logs.iterdir()) - before:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not existed and not any(logs.iterdir()):
        logs.rmdir()


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> str:
    """An executable named kubectl for locate_kubectl to find. Running it fails loudly."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    path = bindir / "kubectl"
    path.write_text("#!/bin/sh\necho 'unit tests must never run kubectl' >&2\nexit 99\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def fake_runner() -> FakeRunner:
    return FakeRunner()


@pytest.fixture
def sleeps() -> list[float]:
    """Waits a RetryPolicy asked for (recorded, never slept)."""
    return []


@pytest.fixture
def retry_policy(sleeps: list[float]) -> RetryPolicy:
    return RetryPolicy(attempts=4, sleep=sleeps.append)


@pytest.fixture
def make_kubectl(
    fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy
) -> Iterator[Callable[..., Kubectl]]:
    made: list[Kubectl] = []

    def make(**access: Any) -> Kubectl:
        k = Kubectl(ClusterAccess(kubectl=fake_kubectl, **access), runner=fake_runner, retry=retry_policy)
        made.append(k)
        return k

    yield make
    for k in made:
        k.close()


@pytest.fixture
def make_executor(
    fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy
) -> Iterator[Callable[..., executor_module.KubernetesCommandLineCodeExecutor]]:
    """Executors on the fake runner; every one (even one whose constructor failed) is stopped."""

    def make(**kwargs: Any) -> executor_module.KubernetesCommandLineCodeExecutor:
        kwargs.setdefault("kubectl", fake_kubectl)
        kwargs.setdefault("runner", fake_runner)
        kwargs.setdefault("retry", retry_policy)
        return executor_module.KubernetesCommandLineCodeExecutor(**kwargs)

    yield make
    for ex in list(executor_module._live):
        if ex.kubectl.runner is fake_runner:
            ex.stop()
