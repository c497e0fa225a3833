"""WarmPool on a fake kubectl (never a real one): a tiny thread-safe cluster behind the Runner
interface that honours label selectors (``!key`` too) and ``--resource-version`` preconditions."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from kx_fakes import ExecReply, FakeProcess, kubectl_args, pod_json

from kubectl_executor import executor as executor_module
from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.labels import CLAIMED_LABEL, OWNER_ID_LABEL, OWNER_PID_LABEL, POOL_LABEL
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._cluster.runner import Completed, Sink, StdinData
from kubectl_executor.boundary import ClusterAccess
from kubectl_executor.errors import StartupTimeoutError
from kubectl_executor.pool import WarmPool

CONFLICT = (
    'Error from server (Conflict): Operation cannot be fulfilled on pods "{}": the object has been '
    "modified; please apply your changes to the latest version and try again\n"
)


def matches(selector: str, labels: Mapping[str, str]) -> bool:
    for term in selector.split(","):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif labels.get(term.split("=", 1)[0]) != term.split("=", 1)[1]:
            return False
    return True


class PoolCluster:
    """Pods in memory; every call is atomic (one lock), as on an API server."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pods: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.calls: list[list[str]] = []
        self.waiting: dict[str, str] | None = None  # container waiting state for new pods
        # Runs before a label call is served (inside the lock): a test plays another client.
        self.before_label: Callable[[str], Completed | None] | None = None

    def _bump(self, pod: dict[str, Any]) -> None:
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)

    def add(self, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        with self.lock:
            pod = pod_json(name, labels=labels)
            self._bump(pod)
            self.pods[name] = pod
            return pod

    def free(self, pool: str = "default") -> list[str]:
        return sorted(
            n
            for n, p in self.pods.items()
            if matches(f"{POOL_LABEL}={pool},!{CLAIMED_LABEL}", p["metadata"]["labels"])
        )

    def verbs(self, verb: str) -> list[list[str]]:
        return [c for c in self.calls if c[:1] == [verb]]

    # -- Runner ------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: StdinData = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> Completed:
        args = kubectl_args(argv)
        with self.lock:
            self.calls.append(args)
            code, out, err = self._serve(args, stdin if isinstance(stdin, bytes) else None)
        return Completed(tuple(argv), code, out.encode(), err.encode())

    def _serve(self, args: list[str], stdin: bytes | None) -> tuple[int, str, str]:
        if args[:3] == ["apply", "-f", "-"]:
            assert stdin is not None
            for document in stdin.decode().split("\n"):
                item = json.loads(document)
                meta = item["metadata"]
                pod = pod_json(
                    meta["name"], labels=meta["labels"], waiting=self.waiting, ready=self.waiting is None
                )
                self._bump(pod)
                self.pods[meta["name"]] = pod
            return 0, "", ""
        if args[:3] == ["get", "pods", "-l"]:
            items = [p for p in self.pods.values() if matches(args[3], p["metadata"]["labels"])]
            return 0, json.dumps({"kind": "List", "items": items}), ""
        if args[:2] == ["get", "pod"]:
            pod = self.pods.get(args[2])
            if pod is None:
                return 1, "", f'Error from server (NotFound): pods "{args[2]}" not found\n'
            return 0, json.dumps(pod), ""
        if args[:2] == ["delete", "pod"]:
            self.pods.pop(args[2], None)
            return 0, "", ""
        if args[:2] == ["label", "pod"]:
            name = args[2]
            if self.before_label is not None:
                early = self.before_label(name)
                if early is not None:
                    return early.returncode, early.stdout.decode(), early.stderr.decode()
            pod = self.pods.get(name)
            if pod is None:
                return 1, "", f'Error from server (NotFound): pods "{name}" not found\n'
            wanted = next((a.split("=", 1)[1] for a in args if a.startswith("--resource-version=")), None)
            if wanted is not None and wanted != pod["metadata"]["resourceVersion"]:
                return 1, "", CONFLICT.format(name)
            values = {i + 1 for i, a in enumerate(args) if a == "-o"}  # "-o json": json is no label
            changes = [a for i, a in enumerate(args[3:], 3) if not a.startswith("-") and i not in values]
            self.relabel(name, changes)
            return 0, json.dumps(pod), ""
        raise AssertionError(f"no answer for {args}")

    def relabel(self, name: str, changes: list[str]) -> None:
        pod = self.pods[name]
        labels = pod["metadata"]["labels"]
        for change in changes:
            if change.endswith("-") and "=" not in change:
                labels.pop(change[:-1], None)
            else:
                key, value = change.split("=", 1)
                labels[key] = value
        self._bump(pod)

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> FakeProcess:
        proc = FakeProcess(argv, on_stdout, on_stderr, lambda p: None)
        args = kubectl_args(argv)
        assert args[:2] == ["get", "pod"] and "--watch" in args, args
        with self.lock:
            pod = self.pods.get(args[2])
        if pod is None:
            proc.emit(
                ExecReply(
                    stderr=f'Error from server (NotFound): pods "{args[2]}" not found\n'.encode(),
                    returncode=1,
                )
            )
        else:
            proc.emit(ExecReply(json.dumps(pod).encode(), hang=True))
        return proc


@pytest.fixture
def cluster() -> PoolCluster:
    return PoolCluster()


@pytest.fixture
def make_pool(
    fake_kubectl: str, cluster: PoolCluster, retry_policy: RetryPolicy
) -> Iterator[Callable[..., WarmPool]]:
    made: list[WarmPool] = []

    def make(**kwargs: Any) -> WarmPool:
        kwargs.setdefault(
            "client", Kubectl(ClusterAccess(kubectl=fake_kubectl), runner=cluster, retry=retry_policy)
        )
        pool = WarmPool(**kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.stop()


def test_the_pool_fills_up_with_one_apply_and_labels_its_pods(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster
) -> None:
    pool = make_pool(size=3)
    assert pool.wait_warm(timeout=30)
    assert len(cluster.free()) == 3
    assert len(cluster.verbs("apply")) == 1
    for name in cluster.free():
        assert cluster.pods[name]["metadata"]["labels"][OWNER_ID_LABEL] == pool.pool_id


def test_a_claim_is_one_label_call_with_a_resource_version_precondition(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster
) -> None:
    pool = make_pool(size=2)
    assert pool.wait_warm(timeout=30)
    versions = {n: cluster.pods[n]["metadata"]["resourceVersion"] for n in cluster.free()}
    pod = pool.claim("owner1")
    labels = cluster.verbs("label")
    assert len(labels) == 1
    # The pool knew its Ready pods: no list of the whole pool was needed (the refill lists its own).
    assert [c for c in cluster.verbs("get") if c[3] == f"{POOL_LABEL}=default,!{CLAIMED_LABEL}"] == []
    call = labels[0]
    assert call[2] == pod.metadata.name
    assert f"--resource-version={versions[pod.metadata.name]}" in call
    assert f"{CLAIMED_LABEL}=owner1" in call and f"{OWNER_ID_LABEL}=owner1" in call
    stored = cluster.pods[pod.metadata.name]["metadata"]["labels"]
    assert stored[CLAIMED_LABEL] == "owner1" and stored[OWNER_PID_LABEL].isdigit()
    assert pod.metadata.name not in cluster.free()
    assert pool.wait_warm(timeout=30)  # refilled in the background
    assert len(cluster.free()) == 2


def test_a_pod_taken_by_another_client_meanwhile_is_skipped(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster
) -> None:
    pool = make_pool(size=2, refill_interval=3600)
    assert pool.wait_warm(timeout=30)
    stolen: list[str] = []

    def another_client(name: str) -> None:
        if not stolen:  # the first pod we try is claimed by someone else just before us
            stolen.append(name)
            cluster.relabel(name, [f"{CLAIMED_LABEL}=other"])

    cluster.before_label = another_client
    pod = pool.claim("mine")
    assert pod.metadata.name != stolen[0]
    assert cluster.pods[stolen[0]]["metadata"]["labels"][CLAIMED_LABEL] == "other"
    assert cluster.pods[pod.metadata.name]["metadata"]["labels"][CLAIMED_LABEL] == "mine"


def test_a_retried_claim_that_had_succeeded_is_recognised_as_ours(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster, sleeps: list[float]
) -> None:
    pool = make_pool(size=1, refill_interval=3600)
    assert pool.wait_warm(timeout=30)
    answered: list[str] = []

    def lost_response(name: str) -> Completed | None:
        if answered:
            return None
        answered.append(name)
        cluster.relabel(name, [f"{CLAIMED_LABEL}=mine"])  # applied, but the answer is lost
        return Completed((), 1, b"", b"Error from server (InternalError): an error on the server\n")

    cluster.before_label = lost_response
    pod = pool.claim("mine")
    assert pod.metadata.name == answered[0]
    assert sleeps  # the label call was retried, met the Conflict, and found it was ours


def test_concurrent_claims_from_threads_never_share_a_pod(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster
) -> None:
    pool = make_pool(size=6, refill_interval=3600)
    assert pool.wait_warm(timeout=30)
    others = make_pool(size=0)  # a second client of the same pool, with no pods of its own
    got: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait()
        name = (pool if i % 2 else others).claim(f"c{i}", timeout=30).metadata.name
        with lock:
            got.append(name)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 6 and len(set(got)) == 6
    owners = {cluster.pods[n]["metadata"]["labels"][CLAIMED_LABEL] for n in got}
    assert owners == {f"c{i}" for i in range(6)}


def test_claim_gives_up_when_nothing_becomes_ready(make_pool: Callable[..., WarmPool]) -> None:
    pool = make_pool(size=0)
    with pytest.raises(StartupTimeoutError):
        pool.claim(timeout=0.05)


def test_release_deletes_by_default_and_reuse_hands_the_pod_back(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster
) -> None:
    pool = make_pool(size=2, refill_interval=3600)
    assert pool.wait_warm(timeout=30)
    first = pool.claim().metadata.name
    pool.release(first)
    assert first not in cluster.pods
    second = pool.claim().metadata.name
    pool.release(second, reuse=True)
    assert second in cluster.free()
    assert cluster.pods[second]["metadata"]["labels"][OWNER_ID_LABEL] == pool.pool_id


def test_close_deletes_only_its_own_unclaimed_pods_and_claims_them_first(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster
) -> None:
    foreign = cluster.add("kx-foreign", {POOL_LABEL: "default", OWNER_ID_LABEL: "someone-else"})
    pool = make_pool(size=2, refill_interval=3600)
    assert pool.wait_warm(timeout=30)
    claimed = pool.claim("user").metadata.name
    if claimed == foreign["metadata"]["name"]:
        claimed = pool.claim("user").metadata.name
    own_free = [
        n for n in cluster.free() if cluster.pods[n]["metadata"]["labels"][OWNER_ID_LABEL] == pool.pool_id
    ]
    pool.stop()
    for name in own_free:
        assert name not in cluster.pods
        # each was claimed (atomically) before it was deleted
        assert any(c[:3] == ["label", "pod", name] and f"{CLAIMED_LABEL}=closing" in c for c in cluster.calls)
    assert claimed in cluster.pods
    pool.stop()  # idempotent


def test_stop_deletes_free_pods_whose_status_changed_since_the_list(
    make_pool: Callable[..., WarmPool], cluster: PoolCluster
) -> None:
    # The leak seen on a real cluster: stop() listed its free pods, the kubelet updated them, and
    # the closing claim's Conflict left them behind.
    pool = make_pool(size=3, refill_interval=3600)
    assert pool.wait_warm(timeout=30)
    own = list(cluster.free())
    updated: set[str] = set()

    def kubelet_updates_status(name: str) -> None:
        if name not in updated:  # once per pod, between stop()'s list and its claim
            updated.add(name)
            cluster._bump(cluster.pods[name])

    cluster.before_label = kubelet_updates_status
    pool.stop()
    assert updated == set(own)
    assert [n for n in own if n in cluster.pods] == []


def test_pods_that_cannot_start_are_deleted(make_pool: Callable[..., WarmPool], cluster: PoolCluster) -> None:
    cluster.waiting = {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}
    pool = make_pool(size=2, start=False)
    with pytest.raises(Exception, match="did not become ready"):
        pool._refill_once()
    assert cluster.pods == {}
    assert len(cluster.verbs("delete")) == 2


def test_pool_options_are_validated(make_pool: Callable[..., WarmPool]) -> None:
    with pytest.raises(ValueError):
        make_pool(size=-1, start=False)
    with pytest.raises(ValueError):
        make_pool(name="Not A Label", start=False)
    with pytest.raises(ValueError):
        make_pool(work_dir="relative", start=False)


def test_the_executor_takes_its_pod_from_the_pool_and_deletes_it_on_stop(
    make_pool: Callable[..., WarmPool],
    cluster: PoolCluster,
    fake_kubectl: str,
    retry_policy: RetryPolicy,
) -> None:
    pool = make_pool(size=1, refill_interval=3600)
    assert pool.wait_warm(timeout=30)
    warm = cluster.free()[0]
    executor = executor_module.KubernetesCommandLineCodeExecutor(
        kubectl=fake_kubectl, runner=cluster, retry=retry_policy, pool=pool
    )
    try:
        assert executor.pod_name == warm
        assert not cluster.verbs("apply")[1:]  # no pod of its own: only the pool's one apply
    finally:
        executor.stop()
    assert warm not in cluster.pods


def test_the_executor_refuses_a_pool_of_another_workspace(
    make_pool: Callable[..., WarmPool], fake_kubectl: str, cluster: PoolCluster
) -> None:
    pool = make_pool(size=0, work_dir="/other")
    with pytest.raises(ValueError, match="work_dir"):
        executor_module.KubernetesCommandLineCodeExecutor(kubectl=fake_kubectl, runner=cluster, pool=pool)


def test_the_pool_and_the_executor_agree_on_a_work_dir_spelt_differently(
    make_pool: Callable[..., WarmPool], fake_kubectl: str, cluster: PoolCluster
) -> None:
    pool = make_pool(size=0, work_dir="/workspace/", start=False)
    assert pool.work_dir == "/workspace"
    # Before the shape normalised work_dir, the pool kept "/workspace/" and this refused the pool.
    executor = executor_module.KubernetesCommandLineCodeExecutor(
        kubectl=fake_kubectl, runner=cluster, pool=pool, work_dir="/workspace//", start=False
    )
    assert str(executor.work_dir) == "/workspace" == executor.pod_shape.work_dir


def test_close_is_an_alias_of_stop() -> None:
    """One way to stop (``stop()`` / ``with``); ``close`` stays for code written against it."""
    assert WarmPool.close is WarmPool.stop
