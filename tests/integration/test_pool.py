"""Warm pods through the real kubectl (emulator or a real cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import CodeBlock
from kubectl_executor._cluster.labels import CLAIMED_LABEL, POOL_LABEL
from kubectl_executor.pool import WarmPool

pytestmark = pytest.mark.integration

PoolFactory = Callable[..., WarmPool]


def pool_kwargs(cluster: Cluster) -> dict[str, Any]:
    return {
        "kubectl": cluster.kubectl,
        "kubeconfig": cluster.kubeconfig,
        "context": cluster.context,
        "namespace": cluster.namespace,
        "image": cluster.image,
    }


@pytest.fixture
def make_pool(cluster: Cluster) -> Iterator[PoolFactory]:
    made: list[WarmPool] = []

    def make(**kwargs: Any) -> WarmPool:
        pool = WarmPool(**{**pool_kwargs(cluster), **kwargs})
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.stop()


def pool_pods(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    return [p for p in cluster.pods() if p["metadata"]["labels"].get(POOL_LABEL) == name]


CLAIM_IN_A_CHILD = """
import json, sys
from kubectl_executor.pool import WarmPool
args = json.loads(sys.argv[1])
pool = WarmPool(size=0, name=args.pop("name"), **args)
print(pool.claim(timeout=120).metadata.name)
pool.stop()
"""


def test_claims_are_exclusive_across_processes_and_threads(make_pool: PoolFactory, cluster: Cluster) -> None:
    pool = make_pool(size=6, name="shared", refill_interval=3600)
    assert pool.wait_warm(timeout=120)
    args = json.dumps({**pool_kwargs(cluster), "name": "shared"})
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM_IN_A_CHILD, args],
            stdout=subprocess.PIPE,
            env={**os.environ, **cluster.env},
        )
        for _ in range(3)
    ]
    got: list[str] = []
    lock = threading.Lock()

    def claim() -> None:
        name = pool.claim(timeout=120).metadata.name
        with lock:
            got.append(name)

    threads = [threading.Thread(target=claim) for _ in range(3)]
    for t in threads:
        t.start()
    for child in children:
        out, _ = child.communicate(timeout=300)
        assert child.returncode == 0
        got.append(out.decode().strip())
    for t in threads:
        t.join()
    try:
        assert len(got) == 6 and len(set(got)) == 6
        claimed = {p["metadata"]["name"]: p["metadata"]["labels"] for p in pool_pods(cluster, "shared")}
        assert all(CLAIMED_LABEL in claimed[name] for name in got)
    finally:
        for name in got:
            pool.release(name)


def test_an_executor_takes_a_warm_pod_and_its_pod_is_deleted_on_stop(
    make_pool: PoolFactory, executor_factory: ExecutorFactory, cluster: Cluster
) -> None:
    pool = make_pool(size=1, name="exec")
    assert pool.wait_warm(timeout=120)
    warm = pool_pods(cluster, "exec")[0]["metadata"]["name"]
    executor = executor_factory(pool=pool, session=True)
    assert executor.pod_name == warm
    result = executor.execute_code_blocks([CodeBlock("print('from the pool')", "python")])
    assert (result.exit_code, result.output) == (0, "from the pool\n")
    executor.stop()
    assert warm not in [p["metadata"]["name"] for p in cluster.pods()]
    assert pool.wait_warm(timeout=120)  # refilled
    assert len(pool_pods(cluster, "exec")) == 1


def test_close_deletes_the_unclaimed_pods(make_pool: PoolFactory, cluster: Cluster) -> None:
    pool = make_pool(size=2, name="closing")
    assert pool.wait_warm(timeout=120)
    kept = pool.claim().metadata.name
    pool.stop()
    assert [p["metadata"]["name"] for p in pool_pods(cluster, "closing")] == [kept]
    pool.release(kept)
    assert pool_pods(cluster, "closing") == []
