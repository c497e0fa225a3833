"""Hardening options on the fake runner: the egress NetworkPolicy, the in-cluster ownerReference,
and a pod watch that recovers from kubectl's dropped first event."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kx_fakes import FakeRunner, RunCall, pod_json

from kubectl_executor._cluster import pod as pod_module
from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.labels import MANAGED_BY_LABEL, OWNER_ID_LABEL
from kubectl_executor._cluster.netpol import build_egress_deny_policy
from kubectl_executor._cluster.pod import (
    SA_NAMESPACE_FILE,
    CallerPod,
    detect_caller_pod,
    resolve_owner_references,
    wait_ready,
)
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.errors import ForbiddenError, InvalidInputError
from kubectl_executor.executor import KubernetesCommandLineCodeExecutor

Make = Callable[..., KubernetesCommandLineCodeExecutor]


# -- the NetworkPolicy (pure) ---------------------------------------------------------------------


def test_policy_denies_all_egress_of_exactly_the_sessions_pod() -> None:
    policy = build_egress_deny_policy("kx-abc", "s1")
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    assert policy["metadata"]["name"] == "kx-abc"
    assert policy["metadata"]["labels"] == {MANAGED_BY_LABEL: "kubectl-executor", OWNER_ID_LABEL: "s1"}
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {OWNER_ID_LABEL: "s1"}},
        "policyTypes": ["Egress"],
        "egress": [],  # no rule: nothing allowed, DNS included
    }
    assert "ownerReferences" not in policy["metadata"]


def test_policy_owned_by_its_pod() -> None:
    policy = build_egress_deny_policy("kx-abc", "s1", owner_pod={"name": "kx-abc", "uid": "u-1"})
    assert policy["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": "kx-abc",
            "uid": "u-1",
            "controller": False,
            "blockOwnerDeletion": False,
        }
    ]


@pytest.mark.parametrize(
    ("name", "owner_id", "owner"),
    [("Bad_Name", "s1", None), ("kx-a", "", None), ("kx-a", "x" * 64, None), ("kx-a", "s1", {"name": "p"})],
)
def test_policy_refuses_bad_input(name: str, owner_id: str, owner: dict[str, str] | None) -> None:
    with pytest.raises(InvalidInputError):
        build_egress_deny_policy(name, owner_id, owner_pod=owner)


# -- the NetworkPolicy with the executor ------------------------------------------------------------


def _answer_policies(fake_runner: FakeRunner) -> list[dict[str, Any]]:
    """Let the fake take NetworkPolicy applies (it only knows pods); returns what was applied."""
    applied: list[dict[str, Any]] = []

    def on_run(call: RunCall) -> Completed | None:
        if call.args[:3] == ["apply", "-f", "-"] and call.stdin is not None:
            obj = json.loads(call.stdin)
            if obj["kind"] == "NetworkPolicy":
                applied.append(obj)
                return Completed(tuple(call.argv), 0, json.dumps(obj).encode())
        if call.args[:2] == ["delete", "networkpolicy.networking.k8s.io"]:
            return Completed(tuple(call.argv), 0, b"")
        return None

    fake_runner.on_run = on_run
    return applied


def test_policy_is_created_before_the_pod_then_owned_by_it(make: Make, fake_runner: FakeRunner) -> None:
    applied = _answer_policies(fake_runner)
    ex = make(network_policy=True)
    kinds = [json.loads(c.stdin or b"{}").get("kind") for c in fake_runner.runs if c.args[:1] == ["apply"]]
    assert kinds == ["NetworkPolicy", "Pod", "NetworkPolicy"]
    first, owned = applied
    assert first["spec"]["podSelector"]["matchLabels"] == {OWNER_ID_LABEL: ex.owner_id}
    assert "ownerReferences" not in first["metadata"]
    assert owned["metadata"]["ownerReferences"][0]["uid"] == f"uid-{ex.pod_name}"
    # the pod really carries the label the policy selects
    pod_manifest = json.loads(next(c.stdin for c in fake_runner.runs if b'"Pod"' in (c.stdin or b"")) or b"")
    assert pod_manifest["metadata"]["labels"][OWNER_ID_LABEL] == ex.owner_id


def test_stop_deletes_the_pod_then_its_policy(make: Make, fake_runner: FakeRunner) -> None:
    _answer_policies(fake_runner)
    ex = make(network_policy=True)
    ex.stop()
    deletes = [c.args[:3] for c in fake_runner.runs if c.args[:1] == ["delete"]]
    assert deletes == [
        ["delete", "pod", ex.pod_name],
        ["delete", "networkpolicy.networking.k8s.io", ex.pod_name],
    ]


def test_no_policy_by_default(make: Make, fake_runner: FakeRunner) -> None:
    ex = make()
    ex.stop()
    assert not any(b"NetworkPolicy" in (c.stdin or b"") for c in fake_runner.runs)
    assert not any("networkpolicy" in " ".join(c.args) for c in fake_runner.runs)


# -- who is the caller's pod (pure) -------------------------------------------------------------------


def _files(**content: str) -> Callable[[str], str | None]:
    table = {SA_NAMESPACE_FILE: content.get("sa")}
    return lambda path: table.get(path)


@pytest.mark.parametrize(
    ("env", "sa", "expected"),
    [
        ({}, None, None),  # a laptop: nothing says "pod"
        ({"HOSTNAME": "web-1"}, None, None),  # a host name alone is not a pod
        (
            {"POD_NAME": "agent-0", "POD_NAMESPACE": "ci", "POD_UID": "u-9"},
            None,
            CallerPod("agent-0", "ci", "u-9"),
        ),
        ({"POD_NAME": "agent-0"}, "team", CallerPod("agent-0", "team", None)),
        ({"HOSTNAME": "agent-7d9f-x2"}, "team", CallerPod("agent-7d9f-x2", "team", None)),
        (
            {"HOSTNAME": "agent-0", "KUBERNETES_SERVICE_HOST": "10.0.0.1"},
            None,
            CallerPod("agent-0", None, None),
        ),
        ({"HOSTNAME": "-rm-rf"}, "team", None),  # never a kubectl flag
        ({"HOSTNAME": "My_Laptop"}, "team", None),
    ],
)
def test_detect_caller_pod(env: dict[str, str], sa: str | None, expected: CallerPod | None) -> None:
    files = _files(sa=sa) if sa is not None else _files()
    assert detect_caller_pod(env, files) == expected


# -- ownerReference resolution (thin kubectl layer) ----------------------------------------------------


@pytest.fixture
def kubectl(make_kubectl: Callable[..., Kubectl]) -> Kubectl:
    return make_kubectl(namespace="team")


IN_POD = {"HOSTNAME": "agent-0"}


def test_no_reference_outside_a_cluster_and_no_kubectl_call(
    kubectl: Kubectl, fake_runner: FakeRunner
) -> None:
    assert resolve_owner_references(kubectl, None, "team", env={}, read_file=_files()) == []
    assert fake_runner.runs == []
    with pytest.raises(InvalidInputError, match="does not run in a Kubernetes pod"):
        resolve_owner_references(kubectl, True, "team", env={}, read_file=_files())


def test_false_never_looks(kubectl: Kubectl, fake_runner: FakeRunner) -> None:
    assert resolve_owner_references(kubectl, False, "team", env=IN_POD, read_file=_files(sa="team")) == []
    assert fake_runner.runs == []


def test_explicit_reference_is_validated_and_used(kubectl: Kubectl) -> None:
    ref = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "agents", "uid": "u-1"}
    assert resolve_owner_references(kubectl, ref, "team", env={}) == [ref]
    with pytest.raises(InvalidInputError, match="uid"):
        resolve_owner_references(kubectl, {**ref, "uid": ""}, "team", env={})
    with pytest.raises(InvalidInputError, match="controller"):
        resolve_owner_references(kubectl, {**ref, "controller": "yes"}, "team", env={})


def test_downward_api_in_our_namespace_needs_no_lookup(kubectl: Kubectl, fake_runner: FakeRunner) -> None:
    env = {"POD_NAME": "agent-0", "POD_NAMESPACE": "team", "POD_UID": "u-9"}
    refs = resolve_owner_references(kubectl, None, "team", env=env, read_file=_files())
    assert refs == [pod_module.owner_reference("agent-0", "u-9")]
    assert refs[0]["blockOwnerDeletion"] is False  # needs no finalizer permission on the owner
    assert fake_runner.runs == []


def test_service_account_and_hostname_look_the_pod_up_with_our_flags(
    kubectl: Kubectl, fake_runner: FakeRunner
) -> None:
    fake_runner.pods["agent-0"] = pod_json("agent-0", namespace="team")
    refs = resolve_owner_references(kubectl, None, None, env=IN_POD, read_file=_files(sa="team"))
    assert refs == [pod_module.owner_reference("agent-0", "uid-agent-0")]
    (call,) = fake_runner.runs
    assert call.args[:3] == ["get", "pod", "agent-0"]
    assert "--namespace=team" in call.argv  # the namespace our pod goes to, nothing else


def test_downward_api_elsewhere_is_checked_by_lookup(kubectl: Kubectl, fake_runner: FakeRunner) -> None:
    """POD_NAMESPACE differs from ours: only a lookup in OUR namespace may prove the pod is there."""
    env = {"POD_NAME": "agent-0", "POD_NAMESPACE": "other", "POD_UID": "u-9"}
    assert resolve_owner_references(kubectl, None, "team", env=env, read_file=_files()) == []
    assert [c.args[:3] for c in fake_runner.runs] == [["get", "pod", "agent-0"]]
    with pytest.raises(InvalidInputError, match="cannot cross namespaces"):
        resolve_owner_references(kubectl, True, "team", env=env, read_file=_files())


def test_uid_mismatch_gives_no_reference(kubectl: Kubectl, fake_runner: FakeRunner) -> None:
    fake_runner.pods["agent-0"] = pod_json("agent-0", namespace="team")
    env = {"POD_NAME": "agent-0", "POD_UID": "someone-else"}
    assert resolve_owner_references(kubectl, None, None, env=env, read_file=_files(sa="team")) == []


def test_forbidden_lookup_is_not_fatal_unless_required(kubectl: Kubectl, fake_runner: FakeRunner) -> None:
    message = (
        'Error from server (Forbidden): pods "agent-0" is forbidden: User "system:serviceaccount:team:agent" '
        'cannot get resource "pods" in API group "" in the namespace "team"\n'
    )

    def on_run(call: RunCall) -> Completed | None:
        return Completed(tuple(call.argv), 1, b"", message.encode())

    fake_runner.on_run = on_run
    assert resolve_owner_references(kubectl, None, "team", env=IN_POD, read_file=_files(sa="team")) == []
    with pytest.raises(ForbiddenError) as info:
        resolve_owner_references(kubectl, True, "team", env=IN_POD, read_file=_files(sa="team"))
    assert (info.value.verb, info.value.resource) == ("get", "pods")


def test_executor_puts_the_reference_in_the_manifest(
    make: Make, fake_runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POD_NAME", "agent-0")
    monkeypatch.setenv("POD_NAMESPACE", "team")
    monkeypatch.setenv("POD_UID", "u-9")
    ex = make(namespace="team")
    manifest = json.loads(next(c.stdin for c in fake_runner.runs if c.args[:1] == ["apply"]) or b"")
    assert manifest["metadata"]["ownerReferences"] == [pod_module.owner_reference("agent-0", "u-9")]
    ex.restart()  # resolved once, kept for the new pod
    manifests = [json.loads(c.stdin or b"") for c in fake_runner.runs if c.args[:1] == ["apply"]]
    assert [m["metadata"]["ownerReferences"][0]["uid"] for m in manifests] == ["u-9", "u-9"]
    off = make(namespace="team", owner_reference=False)
    last = json.loads(fake_runner.runs_of("apply")[-1].stdin or b"")
    assert last["metadata"]["name"] == off.pod_name and "ownerReferences" not in last["metadata"]


# -- the watch that lost its first event ---------------------------------------------------------------


def test_wait_ready_recovers_when_the_watch_misses_the_change(
    kubectl: Kubectl, fake_runner: FakeRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kubectl's `get pod --watch` drops its first watch event (it takes it for the object it just
    printed); a change between its GET and the watch start is lost and that watch never reports
    Ready. The next round's fresh GET must see it."""
    monkeypatch.setattr(pod_module, "WATCH_ROUND_FIRST", 0.05)
    pending = pod_json("p", phase="Pending", ready=False)
    ready = pod_json("p")
    fake_runner.pods["p"] = ready
    fake_runner.watch_pod = pending  # the first watch: stale state, then silence (it hangs)
    spawn = fake_runner.spawn

    def spawn_then_catch_up(argv: Any, **kwargs: Any) -> Any:
        proc = spawn(argv, **kwargs)
        fake_runner.watch_pod = None  # later watches GET the stored, Ready pod
        return proc

    monkeypatch.setattr(fake_runner, "spawn", spawn_then_catch_up)
    got = wait_ready(kubectl, "p", timeout=30)
    assert got.ready
    watches = [p for p in fake_runner.spawns if "--watch" in p.args]
    assert len(watches) == 2
    assert all(w.killed for w in watches)


@pytest.fixture
def make(make_executor: Make) -> Make:
    return make_executor


# -- user labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels",
    [
        {"bad key": "v"},
        {"-lead": "v"},
        {"x" * 64: "v"},
        {"Example.COM/name": "v"},  # prefixes are lower-case DNS subdomains
        {"a/b/c": "v"},
        {"": "v"},
        {"team": "bad value"},
        {OWNER_ID_LABEL: "mine"},  # would hide the pod from gc, reuse and its NetworkPolicy
        {MANAGED_BY_LABEL: "someone-else"},
    ],
)
def test_user_labels_refused_before_the_cluster(
    make: Make, fake_runner: FakeRunner, labels: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        make(labels=labels)
    assert fake_runner.runs == []


def test_non_string_label_value_is_a_value_error(make: Make, fake_runner: FakeRunner) -> None:
    with pytest.raises(ValueError, match="string"):  # pydantic's, from PodOptions
        make(labels={"team": 42})
    assert fake_runner.runs == []


def test_good_user_label_keys(make: Make, fake_runner: FakeRunner) -> None:
    make(labels={"team": "ml", "example.com/cost-center": "42", "a_b.c": ""})
    labels = json.loads(fake_runner.runs_of("apply")[0].stdin or b"")["metadata"]["labels"]
    assert labels["example.com/cost-center"] == "42" and labels["a_b.c"] == ""
