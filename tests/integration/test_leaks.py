"""No pod outlives its executor, through the real kubectl: stop(), the ``with`` exit, exceptions in
the body, a failed start, restart(), and interpreter exit without stop() (the atexit backstop, in a
child process). A host process killed outright (SIGKILL) is gc's job: tests/integration/test_gc.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor, PodStartError

pytestmark = pytest.mark.integration


def names(cluster: Cluster) -> set[str]:
    return {p["metadata"]["name"] for p in cluster.pods()}


def test_stop_deletes_and_is_idempotent(cluster: Cluster, executor_factory: ExecutorFactory) -> None:
    before = names(cluster)
    ex = executor_factory()
    assert names(cluster) == before | {ex.pod_name}
    ex.stop()
    ex.stop()
    ex.cleanup()  # the seed's name
    assert names(cluster) == before


def test_with_block_deletes_on_exit(cluster: Cluster) -> None:
    before = names(cluster)
    with KubernetesCommandLineCodeExecutor(**cluster.executor_kwargs()) as ex:
        assert ex.execute_code_blocks([CodeBlock("print(1)", "python")]).exit_code == 0
        assert ex.pod_name in names(cluster)
    assert names(cluster) == before


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt(), SystemExit(3)])
def test_with_block_deletes_when_the_body_raises(cluster: Cluster, error: BaseException) -> None:
    before = names(cluster)
    seen: list[str] = []
    with pytest.raises(type(error)), KubernetesCommandLineCodeExecutor(**cluster.executor_kwargs()) as ex:
        seen.append(ex.pod_name)
        raise error
    assert seen and seen[0] not in names(cluster)
    assert names(cluster) == before


def test_failed_start_leaves_nothing(cluster: Cluster) -> None:
    if cluster.emulator is None:
        pytest.skip("failure images exist only on the emulator")
    before = names(cluster)
    made: list[KubernetesCommandLineCodeExecutor] = []
    try:
        with pytest.raises(PodStartError, match=r"ErrImagePull|ImagePullBackOff"):
            kwargs = {**cluster.executor_kwargs(), "image": "fail/errimagepull"}
            made.append(KubernetesCommandLineCodeExecutor(**kwargs, startup_timeout=60))
    finally:
        for ex in made:  # only if the start wrongly succeeded: keep the other tests' counts right
            ex.stop()
    assert names(cluster) == before


def test_restart_deletes_the_old_pod(cluster: Cluster, executor_factory: ExecutorFactory) -> None:
    before = names(cluster)
    ex = executor_factory()
    first = ex.pod_name
    ex.restart()
    assert names(cluster) == before | {ex.pod_name} and first != ex.pod_name
    ex.stop()
    assert names(cluster) == before


def test_deferred_start_creates_nothing(cluster: Cluster) -> None:
    before = names(cluster)
    ex = KubernetesCommandLineCodeExecutor(**cluster.executor_kwargs(), start=False)
    ex.stop()
    assert names(cluster) == before


# A user's program that never calls stop(): the interpreter exits in various ways.
CHILD = """
import json, sys
from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor

options, ending = json.loads(sys.argv[1]), sys.argv[2]
kept = KubernetesCommandLineCodeExecutor(**options)
dropped = KubernetesCommandLineCodeExecutor(**options)
print(kept.pod_name, dropped.pod_name, flush=True)
kept.execute_code_blocks([CodeBlock("print('hi')", "python")])
del dropped  # no reference left: the pod is still ours to delete
import gc; gc.collect()
if ending == "exit-code":
    sys.exit(3)
if ending == "exception":
    raise RuntimeError("the user's program crashed")
"""


@pytest.mark.parametrize(("ending", "returncode"), [("normal", 0), ("exit-code", 3), ("exception", 1)])
def test_interpreter_exit_without_stop_deletes_the_pods(
    cluster: Cluster, ending: str, returncode: int
) -> None:
    before = names(cluster)
    options: dict[str, Any] = cluster.executor_kwargs()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(options), ending],
        capture_output=True,
        text=True,
        env={**os.environ, **cluster.env},
        timeout=180,
    )
    assert child.returncode == returncode, child.stderr
    made = set(child.stdout.split())
    assert len(made) == 2
    assert not made & names(cluster)  # atexit deleted both, while kubectl could still run
    assert names(cluster) == before
    assert "could not stop" not in child.stderr
