"""gc: the pure decision on a table of pods, and the thin kubectl layer on the fake runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from kx_fakes import FakeRunner, pod_json

from kubectl_executor._cluster.gc import GcPolicy, decide, local_process_start, plan, selector
from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.labels import LIFETIME_LABEL, LONG_LIVED
from kubectl_executor._cluster.manifest import ownership_labels
from kubectl_executor._cluster.models import Pod
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.errors import InvalidInputError
from kubectl_executor.gc import collect_garbage

NOW = 1_800_000_000.0
HERE = "build-host"
LIVE_PID = 100  # started before every pod below
REUSED_PID = 200  # alive, but started after the pods were created
DEAD_PID = 300


def process_start(pid: int) -> float | None:
    return {LIVE_PID: NOW - 10_000, REUSED_PID: NOW - 10}.get(pid)


def make_pod(
    name: str,
    *,
    age: float = 60,
    host: str = HERE,
    pid: int = DEAD_PID,
    owner_id: str = "s1",
    phase: str = "Running",
    reason: str | None = None,
    long_lived: bool = False,
    managed: bool = True,
    deleting: bool = False,
    namespace: str = "ns",
) -> Pod:
    labels = ownership_labels(owner_id, int(NOW - age), pid, host=host)
    if long_lived:
        labels[LIFETIME_LABEL] = LONG_LIVED
    if not managed:
        labels = {"app": "other"}
    data = pod_json(name, namespace=namespace, phase=phase, labels=labels)
    if reason:
        data["status"]["reason"] = reason
    if deleting:
        data["metadata"]["deletionTimestamp"] = "2027-01-01T00:00:00Z"
    return Pod.model_validate(data)


def policy(**kw: Any) -> GcPolicy:
    return GcPolicy(now=NOW, host=HERE, process_start=process_start, **kw)


# (pod, policy options, expected reason or None to keep)
TABLE: list[tuple[str, Pod, dict[str, Any], str | None]] = [
    ("owner alive here", make_pod("a", pid=LIVE_PID), {}, None),
    ("owner gone here", make_pod("b", pid=DEAD_PID), {}, "owner-gone"),
    ("pid reused by a younger process", make_pod("c", pid=REUSED_PID, age=3600), {}, "owner-gone"),
    ("owner on another host, young", make_pod("d", host="elsewhere"), {}, None),
    (
        "owner on another host, expired",
        make_pod("e", host="elsewhere", age=7200),
        {"older_than": 3600},
        "expired",
    ),
    ("young pod of a dead owner: still garbage", make_pod("f", age=5), {"older_than": 3600}, "owner-gone"),
    (
        "failed: DeadlineExceeded",
        make_pod("g", host="x", phase="Failed", reason="DeadlineExceeded"),
        {},
        "finished",
    ),
    ("succeeded", make_pod("h", host="x", phase="Succeeded"), {}, "finished"),
    ("live owner protects an expired pod", make_pod("i", pid=LIVE_PID, age=9999), {"older_than": 60}, None),
    ("live owner protects a failed pod", make_pod("j", pid=LIVE_PID, phase="Failed"), {}, None),
    (
        "live owners included: expired",
        make_pod("k", pid=LIVE_PID, age=9999),
        {"older_than": 60, "include_live_owners": True},
        "expired",
    ),
    ("live owners included but young", make_pod("l", pid=LIVE_PID), {"include_live_owners": True}, None),
    ("long-lived pod of a gone owner", make_pod("m", long_lived=True), {}, None),
    ("long-lived, expired", make_pod("n", long_lived=True, age=9999), {"older_than": 60}, None),
    (
        "long-lived, explicitly included and expired",
        make_pod("o", long_lived=True, age=9999),
        {"older_than": 60, "include_long_lived": True},
        "expired",
    ),
    (
        "long-lived, included: its pid (the exited `up`) means nothing",
        make_pod("p", long_lived=True),
        {"include_long_lived": True},
        None,
    ),
    ("not ours", make_pod("q", managed=False), {}, None),
    ("already being deleted", make_pod("r", deleting=True), {}, None),
    ("other owner id filtered out", make_pod("s", owner_id="s2"), {"owner_id": "s1"}, None),
    ("owner id matches", make_pod("t", owner_id="s1"), {"owner_id": "s1"}, "owner-gone"),
    ("other owner host filtered out", make_pod("u", host="x", phase="Failed"), {"owner_host": HERE}, None),
]


@pytest.mark.parametrize(("pod", "options", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_decision_table(pod: Pod, options: dict[str, Any], expected: str | None) -> None:
    candidate = decide(pod, policy(**options))
    assert (candidate.reason if candidate else None) == expected


def test_candidate_says_why_and_whose() -> None:
    candidate = decide(make_pod("b", pid=DEAD_PID, age=120, owner_id="abc"), policy())
    assert candidate is not None
    assert (candidate.name, candidate.namespace, candidate.owner_id) == ("b", "ns", "abc")
    assert (candidate.owner_host, candidate.owner_pid) == (HERE, DEAD_PID)
    assert candidate.age_seconds == pytest.approx(120)
    assert f"pid {DEAD_PID}" in candidate.detail
    assert not candidate.deleted


def test_failed_detail_names_the_cluster_reason() -> None:
    candidate = decide(make_pod("g", phase="Failed", reason="DeadlineExceeded"), policy())
    assert candidate is not None and "DeadlineExceeded" in candidate.detail


def test_creation_timestamp_is_the_fallback_age() -> None:
    pod = make_pod("x", host="elsewhere")
    pod.metadata.labels.pop("kubectl-executor.io/created-at")
    pod.metadata.creation_timestamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 7200))
    candidate = decide(pod, policy(older_than=3600))
    assert candidate is not None and candidate.reason == "expired"
    assert candidate.age_seconds == pytest.approx(7200)


def test_plan_orders_oldest_first() -> None:
    pods = [make_pod("young", age=10), make_pod("old", age=1000), make_pod("mid", age=100)]
    assert [c.name for c in plan(pods, policy())] == ["old", "mid", "young"]


def test_selector_filters_on_the_server_side_too() -> None:
    assert selector() == "app.kubernetes.io/managed-by=kubectl-executor"
    assert selector("s1", "my host") == (
        "app.kubernetes.io/managed-by=kubectl-executor,kubectl-executor.io/session=s1,"
        "kubectl-executor.io/owner-host=my-host"
    )


def test_local_process_start_sees_live_dead_and_zombie_processes() -> None:
    started = local_process_start(os.getpid())
    assert started is not None and started <= time.time()
    assert started > time.time() - 24 * 3600 * 365
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert local_process_start(child.pid) is None  # reaped: gone
    assert local_process_start(0) is None and local_process_start(-1) is None


def test_a_younger_process_with_the_owner_pid_is_not_the_owner() -> None:
    """The real /proc start time: our own process started before a pod created now."""
    pod = Pod.model_validate(pod_json("p", labels=ownership_labels("s", int(time.time()), os.getpid())))
    live = GcPolicy(
        now=time.time(),
        host=pod.metadata.labels["kubectl-executor.io/owner-host"],
        process_start=local_process_start,
    )
    assert decide(pod, live) is None
    old = Pod.model_validate(
        pod_json("p", labels=ownership_labels("s", int(time.time()) - 10**6, os.getpid()))
    )
    old_candidate = decide(old, live)
    assert old_candidate is not None and old_candidate.reason == "owner-gone"


# -- the kubectl layer ----------------------------------------------------------------------------


def store(fake_runner: FakeRunner, pod: Pod) -> None:
    fake_runner.pods[pod.metadata.name] = json.loads(pod.model_dump_json(by_alias=True))


def gc_on_fake(make_kubectl: Callable[..., Kubectl], **kw: Any) -> Any:
    kw.setdefault("host", HERE)
    kw.setdefault("process_start", process_start)
    return collect_garbage(make_kubectl(), **kw)


def test_collect_deletes_candidates_in_one_call_per_namespace(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner
) -> None:
    for pod in (make_pod("dead1"), make_pod("dead2"), make_pod("alive", pid=LIVE_PID)):
        store(fake_runner, pod)
    done = gc_on_fake(make_kubectl)
    assert sorted(c.name for c in done) == ["dead1", "dead2"]
    assert all(c.deleted for c in done)
    deletes = fake_runner.runs_of("delete")
    assert len(deletes) == 1
    args = deletes[0].args
    assert args[:2] == ["delete", "pod"] and set(args[2:4]) == {"dead1", "dead2"}
    assert "--namespace=ns" in args and "--ignore-not-found" in args
    listing = fake_runner.runs_of("get")[0].args
    assert listing[:4] == ["get", "pods", "-l", "app.kubernetes.io/managed-by=kubectl-executor"]


def test_dry_run_deletes_nothing(make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner) -> None:
    store(fake_runner, make_pod("dead"))
    done = gc_on_fake(make_kubectl, dry_run=True)
    assert [(c.name, c.deleted) for c in done] == [("dead", False)]
    assert fake_runner.runs_of("delete") == []


def test_all_namespaces_lists_everywhere_and_deletes_per_namespace(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner
) -> None:
    pods = [make_pod("a", namespace="one"), make_pod("b", namespace="two")]
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [json.loads(p.model_dump_json(by_alias=True)) for p in pods],
    }

    def answer(call: Any) -> Completed | None:
        if call.args[:2] == ["get", "pods"]:
            assert "--all-namespaces" in call.args
            return Completed(tuple(call.argv), 0, json.dumps(listing).encode())
        return None

    fake_runner.on_run = answer
    gc_on_fake(make_kubectl, all_namespaces=True)
    namespaces = sorted(
        a for c in fake_runner.runs_of("delete") for a in c.args if a.startswith("--namespace=")
    )
    assert namespaces == ["--namespace=one", "--namespace=two"]


def test_negative_ttl_is_refused(make_kubectl: Callable[..., Kubectl]) -> None:
    with pytest.raises(InvalidInputError, match="older_than"):
        gc_on_fake(make_kubectl, older_than=-1)


def test_owner_id_filters_and_session_is_its_deprecated_alias(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner
) -> None:
    store(fake_runner, make_pod("mine", owner_id="s1"))
    store(fake_runner, make_pod("theirs", owner_id="s2"))
    assert [c.name for c in gc_on_fake(make_kubectl, owner_id="s1", dry_run=True)] == ["mine"]
    with pytest.warns(DeprecationWarning, match="owner_id"):
        found = gc_on_fake(make_kubectl, session="s1", dry_run=True)
    assert [c.name for c in found] == ["mine"]
    assert "kubectl-executor.io/session=s1" in fake_runner.runs_of("get")[-1].args[3]
    with pytest.warns(DeprecationWarning), pytest.raises(InvalidInputError, match="not both"):
        gc_on_fake(make_kubectl, session="s1", owner_id="s2")


def test_candidate_session_is_a_deprecated_alias_of_owner_id() -> None:
    candidate = decide(make_pod("b", owner_id="abc"), policy())
    assert candidate is not None
    with pytest.warns(DeprecationWarning, match="owner_id"):
        assert candidate.session == "abc"
