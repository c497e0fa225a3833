"""Shared workspaces on the fake kubectl runner: the pure claim/volume manifests, the association
model from kubectl's JSON, the event decisions and error texts, and WorkspaceVolume's calls.

:class:`FakeStorage` plays the cluster's volume side behind the FakeRunner (never a real kubectl):
``create``/``get``/``delete`` of claims and volumes, ``get events``, and ``get pvc --watch``. Its
``policy`` says what the "controller" does with a new claim.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kx_fakes import ExecReply, FakeProcess, FakeRunner, RunCall
from pydantic import ValidationError

from kubectl_executor import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PVCValidationResult,
    WorkspaceVolume,
)
from kubectl_executor import workspace as ws_module
from kubectl_executor._cluster import claim as claim_io
from kubectl_executor._cluster import claim_models
from kubectl_executor._cluster.claim_manifest import (
    WorkspaceOptions,
    build_claim_manifest,
    build_volume_manifest,
    workspace_labels,
)
from kubectl_executor._cluster.claim_models import ClaimEvent, decide_from_events, workspace_info
from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.labels import (
    CLAIM_LABEL,
    CLAIM_NAMESPACE_LABEL,
    CREATED_AT_LABEL,
    LIFETIME_LABEL,
    LONG_LIVED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_ID_LABEL,
    OWNER_PID_LABEL,
    VOLUME_ANNOTATION,
)
from kubectl_executor._cluster.manifest import ownership_labels
from kubectl_executor._cluster.retry import RetryPolicy
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.errors import ClaimNotBoundError, claim_not_bound_message
from kubectl_executor.gc import collect_garbage

NS = "team"
LABELS = ownership_labels("sess1", 1_700_000_000, 4242, host="build-host")

# -- the fake cluster's volume side ------------------------------------------------------------------


def claim_json(
    name: str,
    *,
    phase: str = "Pending",
    volume: str | None = None,
    modes: tuple[str, ...] = ("ReadWriteMany",),
    size: str = "1Gi",
    storage_class: str | None = "standard",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    namespace: str = NS,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(modes), "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    status: dict[str, Any] = {"phase": phase}
    if volume is not None:
        spec["volumeName"] = volume
        if phase == "Bound":
            status.update(accessModes=list(modes), capacity={"storage": size})
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "labels": dict(labels or {}),
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
        "status": status,
    }


def volume_json(
    name: str,
    claim: str,
    *,
    phase: str = "Bound",
    size: str = "1Gi",
    modes: tuple[str, ...] = ("ReadWriteMany",),
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": list(modes),
            "storageClassName": "standard",
            "claimRef": {"namespace": NS, "name": claim, "uid": f"uid-{claim}"},
        },
        "status": {"phase": phase},
    }


def event(
    reason: str, message: str, etype: str = "Warning", stamp: str = "2026-01-01T00:00:00Z"
) -> dict[str, Any]:
    return {"type": etype, "reason": reason, "message": message, "count": 1, "lastTimestamp": stamp}


PROVISIONING_FAILED = event(
    "ProvisioningFailed", "no volume plugin matched name: kubernetes.io/no-provisioner"
)
CLASS_NOT_FOUND = event("ProvisioningFailed", 'storageclass.storage.k8s.io "gold" not found')
WAIT_FOR_CONSUMER = event(
    "WaitForFirstConsumer", "waiting for first consumer to be created before binding", etype="Normal"
)


def _reply(call: RunCall, rc: int = 0, out: Any = None, err: str = "") -> Completed:
    body = json.dumps(out).encode() if out is not None else b""
    return Completed(tuple(call.argv), rc, body, err.encode())


class FakeStorage:
    """Claims, volumes and events behind the FakeRunner. ``policy(claim) -> events`` runs on a
    new claim: it may bind it (``self.bind``) and returns the events the controller records."""

    def __init__(self, runner: FakeRunner) -> None:
        self.runner = runner
        self.claims: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}  # by claim uid
        self.policy: Callable[[dict[str, Any]], list[dict[str, Any]]] = self.bind_dynamic
        self.created: list[dict[str, Any]] = []
        self.uids = 0
        runner.on_run = self.on_run
        self._spawn = runner.spawn
        runner.spawn = self.spawn  # type: ignore[method-assign]

    # controller behaviours
    def bind(self, claim: dict[str, Any], volume: str) -> None:
        spec = claim["spec"]
        spec["volumeName"] = volume
        size = spec["resources"]["requests"]["storage"]
        claim["status"] = {
            "phase": "Bound",
            "accessModes": spec["accessModes"],
            "capacity": {"storage": size},
        }
        if volume not in self.volumes:
            pv = volume_json(volume, claim["metadata"]["name"], size=size, modes=tuple(spec["accessModes"]))
            pv["spec"]["claimRef"]["uid"] = claim["metadata"]["uid"]
            self.volumes[volume] = pv
        else:
            self.volumes[volume]["status"] = {"phase": "Bound"}

    def bind_dynamic(self, claim: dict[str, Any]) -> list[dict[str, Any]]:
        self.bind(claim, f"pvc-{claim['metadata']['uid']}")
        return [event("ProvisioningSucceeded", "Successfully provisioned volume", etype="Normal")]

    def never(self, claim: dict[str, Any]) -> list[dict[str, Any]]:
        return [PROVISIONING_FAILED]

    # kubectl
    def spawn(self, argv: Any, **kw: Any) -> FakeProcess:
        proc = self._spawn(argv, **kw)
        args = proc.args
        if args[:2] == ["get", "pvc"] and "--watch" in args:
            found = self.claims.get(args[2])
            if found is None:
                msg = f'Error from server (NotFound): persistentvolumeclaims "{args[2]}" not found\n'
                proc.emit(ExecReply(stderr=msg.encode(), returncode=1))
            else:
                # The watch shows the claim as it is, then its round ends (as when the server closes
                # a watch): the waiter reads the events at once instead of waiting out a round.
                proc.emit(
                    ExecReply(
                        json.dumps(found).encode(), hang=bool(found.get("status", {}).get("phase") == "Bound")
                    )
                )
        return proc

    def on_run(self, call: RunCall) -> Completed | None:
        args = [a for a in call.args if not a.startswith("--namespace=")]
        if args[:3] == ["create", "-f", "-"]:
            return self._create(call, json.loads(call.stdin or b"{}"))
        if args[:2] == ["get", "pvc"] and args[2] == "-l":
            items = [c for c in self.claims.values() if _matches(args[3], c["metadata"]["labels"])]
            return _reply(call, out={"kind": "List", "items": items})
        if args[:2] in (["get", "pvc"], ["get", "pv"]):
            store = self.claims if args[1] == "pvc" else self.volumes
            kind = "persistentvolumeclaims" if args[1] == "pvc" else "persistentvolumes"
            if args[2] not in store:
                return _reply(call, 1, err=f'Error from server (NotFound): {kind} "{args[2]}" not found\n')
            return _reply(call, out=store[args[2]])
        if args[:2] == ["get", "events"]:
            selector = dict(term.split("=", 1) for term in args[3].split(","))
            uid = selector.get("involvedObject.uid") or f"uid-{selector['involvedObject.name']}"
            return _reply(call, out={"kind": "List", "items": self.events.get(uid, [])})
        if args[:2] == ["delete", "pvc"]:
            for name in args[2:]:
                if not name.startswith("-"):
                    self.claims.pop(name, None)
            return _reply(call)
        if args[:2] == ["delete", "pv"]:
            if args[2] == "-l":
                for name, pv in list(self.volumes.items()):
                    if _matches(args[3], pv["metadata"].get("labels") or {}):
                        del self.volumes[name]
            else:
                self.volumes.pop(args[2], None)
            return _reply(call)
        return None

    def _create(self, call: RunCall, obj: dict[str, Any]) -> Completed:
        self.created.append(obj)
        name = obj["metadata"]["name"]
        if obj["kind"] == "PersistentVolumeClaim":
            if name in self.claims:
                return _reply(
                    call,
                    1,
                    err=f'Error from server (AlreadyExists): persistentvolumeclaims "{name}" already exists\n',
                )
            self.uids += 1
            claim = json.loads(json.dumps(obj))
            claim["metadata"].update(namespace=NS, uid=f"uid-{name}-{self.uids}")
            claim["status"] = {"phase": "Pending"}
            claim["spec"].setdefault("storageClassName", "standard")
            self.claims[name] = claim
            self.events[claim["metadata"]["uid"]] = (
                [] if claim["spec"].get("volumeName") else self.policy(claim)
            )
            return _reply(call, out=claim)
        pv = json.loads(json.dumps(obj))
        pv["status"] = {"phase": "Available"}
        self.volumes[name] = pv
        ref = pv["spec"].get("claimRef") or {}
        claim = self.claims.get(ref.get("name", ""))
        if claim is not None and claim["spec"].get("volumeName") == name:
            self.bind(claim, name)
        return _reply(call, out=pv)


def _matches(selector: str, labels: dict[str, str]) -> bool:
    for term in selector.split(","):
        if " in (" in term:
            key, _, values = term.partition(" in (")
            if labels.get(key) not in values.rstrip(")").split(","):
                return False
            continue
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@pytest.fixture
def storage(fake_runner: FakeRunner) -> FakeStorage:
    return FakeStorage(fake_runner)


@pytest.fixture
def make_workspace(
    fake_kubectl: str, fake_runner: FakeRunner, retry_policy: RetryPolicy
) -> Iterator[Callable[..., WorkspaceVolume]]:
    made: list[WorkspaceVolume] = []

    def make(*args: Any, **kwargs: Any) -> WorkspaceVolume:
        kwargs.setdefault("kubectl", fake_kubectl)
        kwargs.setdefault("runner", fake_runner)
        kwargs.setdefault("retry", retry_policy)
        factory = WorkspaceVolume.existing if kwargs.pop("existing", False) else WorkspaceVolume
        ws = factory(*args, **kwargs)
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.stop()
    assert not [w for w in ws_module._live if w.kubectl.runner is fake_runner], "a workspace was left live"


def verbs(runner: FakeRunner, *prefix: str) -> list[list[str]]:
    return [c.args for c in runner.runs if c.args[: len(prefix)] == list(prefix)]


# -- options and manifests (pure) ----------------------------------------------------------------------


def test_claim_manifest_defaults_leave_the_class_to_the_cluster() -> None:
    claim = build_claim_manifest(WorkspaceOptions(), "ws1", LABELS)
    assert claim == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "ws1", "labels": LABELS},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "resources": {"requests": {"storage": "1Gi"}},
            "volumeMode": "Filesystem",
        },
    }


@pytest.mark.parametrize(("storage_class", "expected"), [("fast", "fast"), ("", "")])
def test_claim_manifest_names_a_class_when_given_even_the_empty_one(
    storage_class: str, expected: str
) -> None:
    opts = WorkspaceOptions(storage_class=storage_class, size="5Gi", access_mode="ReadWriteOnce")
    spec = build_claim_manifest(opts, "ws1", LABELS)["spec"]
    assert spec["storageClassName"] == expected
    assert spec["accessModes"] == ["ReadWriteOnce"] and spec["resources"]["requests"]["storage"] == "5Gi"
    fallback = build_claim_manifest(opts, "ws1", LABELS, access_mode="ReadWriteOncePod")
    assert fallback["spec"]["accessModes"] == ["ReadWriteOncePod"]


def test_claim_for_a_static_volume_names_it_and_takes_no_class() -> None:
    opts = WorkspaceOptions(host_path="/srv/data")
    claim = build_claim_manifest(opts, "ws1", LABELS, volume_name="kx-pv-1")
    assert claim["spec"]["volumeName"] == "kx-pv-1"
    assert claim["spec"]["storageClassName"] == ""  # no provisioner may take it first
    assert claim["metadata"]["annotations"] == {VOLUME_ANNOTATION: "kx-pv-1"}


def test_static_host_path_volume_is_reserved_for_the_claim_and_pinned() -> None:
    opts = WorkspaceOptions(host_path="/srv/data", node="node-1", size="2Gi", access_mode="ReadWriteOnce")
    pv = build_volume_manifest(opts, "kx-pv-1", "ws1", NS, LABELS)
    assert pv["metadata"] == {
        "name": "kx-pv-1",
        "labels": {**LABELS, CLAIM_LABEL: "ws1", CLAIM_NAMESPACE_LABEL: NS},
    }
    spec = pv["spec"]
    assert spec["hostPath"] == {"path": "/srv/data", "type": "DirectoryOrCreate"} and "local" not in spec
    assert spec["claimRef"] == {"namespace": NS, "name": "ws1"}
    assert spec["capacity"] == {"storage": "2Gi"} and spec["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeReclaimPolicy"] == "Retain" and spec["storageClassName"] == ""
    expr = spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expr == {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1"]}
    unpinned = build_volume_manifest(WorkspaceOptions(host_path="/srv/data"), "p", "ws1", NS, LABELS)
    assert "nodeAffinity" not in unpinned["spec"]


def test_local_volume_instead_of_host_path() -> None:
    opts = WorkspaceOptions(host_path="/mnt/disk1", local=True, node="node-1", storage_class="local")
    spec = build_volume_manifest(opts, "p", "ws1", NS, LABELS)["spec"]
    assert spec["local"] == {"path": "/mnt/disk1"} and "hostPath" not in spec
    assert spec["storageClassName"] == "local"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": "lots"}, "not a positive Kubernetes quantity"),
        ({"size": "0Gi"}, "not a positive Kubernetes quantity"),
        ({"size": "-1Gi"}, "not a positive Kubernetes quantity"),
        ({"name": "Bad_Name"}, "RFC 1123"),
        ({"storage_class": "Fast!"}, "not a valid object name"),
        ({"host_path": "relative/dir"}, "absolute node path"),
        ({"host_path": "/srv/../etc"}, "absolute node path"),
        ({"local": True, "host_path": "/srv/x"}, "local=True needs host_path and node"),
        ({"fallback_access_mode": "ReadWriteMany"}, "must differ"),
        ({"host_path": "/srv/x", "fallback_access_mode": "ReadWriteOnce"}, "not to a static"),
        ({"access_mode": "ReadWriteSometimes"}, "access_mode"),
        ({"bind_timeout": 0}, "bind_timeout"),
        ({"labels": {"bad key!": "v"}}, "invalid label key"),
    ],
)
def test_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises((ValidationError, InvalidInputError), match=message):
        WorkspaceOptions(**options)


def test_workspace_labels_mark_ownership_and_protect_it() -> None:
    labels = workspace_labels(WorkspaceOptions(labels={"team": "a"}, long_lived=True), LABELS)
    assert labels == {**LABELS, LIFETIME_LABEL: LONG_LIVED, "team": "a"}
    for key in (OWNER_ID_LABEL, MANAGED_BY_LABEL, CLAIM_LABEL):
        with pytest.raises(InvalidInputError, match="cannot be overridden"):
            workspace_labels(WorkspaceOptions(labels={key: "x"}), LABELS)


# -- the association model (pure) ------------------------------------------------------------------


def test_association_of_a_bound_claim_and_its_volume() -> None:
    claim = claim_json("ws1", phase="Bound", volume="pv-1", size="2Gi")
    result = PVCValidationResult.from_objects(claim, volume_json("pv-1", "ws1", size="2Gi"))
    assert result.model_dump() == {
        "claim_name": "ws1",
        "namespace": NS,
        "claim_status": "Bound",
        "storage_class": "standard",
        "claim_access_modes": ["ReadWriteMany"],
        "requested_storage": "2Gi",
        "volume_name": "pv-1",
        "volume_status": "Bound",
        "volume_capacity": "2Gi",
        "volume_access_modes": ["ReadWriteMany"],
        "binding_deferred": False,
    }
    assert result.bound


def test_association_without_a_readable_volume_takes_the_claims_status() -> None:
    claim = claim_json("ws1", phase="Bound", volume="pv-1", size="3Gi", modes=("ReadWriteOnce",))
    result = PVCValidationResult.from_objects(claim, None)
    assert (result.volume_name, result.volume_status) == ("pv-1", None)
    assert result.volume_capacity == "3Gi" and result.volume_access_modes == ["ReadWriteOnce"]
    # another claim's volume is not this claim's association
    other = PVCValidationResult.from_objects(claim, volume_json("pv-9", "x"))
    assert other.volume_status is None and other.volume_name == "pv-1"


def test_association_of_a_pending_and_a_terminating_claim() -> None:
    pending = PVCValidationResult.from_objects(claim_json("ws1", storage_class=None), binding_deferred=True)
    assert (pending.claim_status, pending.volume_name, pending.volume_capacity) == ("Pending", None, None)
    assert pending.storage_class is None and pending.binding_deferred and not pending.bound
    claim = claim_json("ws1", phase="Bound", volume="pv-1")
    claim["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    gone = PVCValidationResult.from_objects(claim, binding_deferred=True)
    assert gone.claim_status == "Terminating" and not gone.binding_deferred  # deferred ends once bound


# -- events and errors (pure) ------------------------------------------------------------------------


def _events(*items: dict[str, Any]) -> list[ClaimEvent]:
    return [ClaimEvent.model_validate(i) for i in items]


@pytest.mark.parametrize(
    ("items", "can_fall_back", "expected"),
    [
        ([], True, None),
        ([event("ExternalProvisioning", "waiting for a volume", etype="Normal")], True, None),
        ([WAIT_FOR_CONSUMER], False, "deferred"),
        ([CLASS_NOT_FOUND], True, "class-missing"),
        ([PROVISIONING_FAILED], False, None),
        ([PROVISIONING_FAILED], True, "fallback"),
        ([event("ProvisioningFailed", "transient", etype="Normal")], True, None),
    ],
)
def test_decisions_from_the_claims_events(
    items: list[dict[str, Any]], can_fall_back: bool, expected: str | None
) -> None:
    assert decide_from_events(_events(*items), can_fall_back=can_fall_back) == expected


def test_not_bound_message_names_the_class_and_the_clusters_reason() -> None:
    text = claim_not_bound_message(
        "ws1", "no-provisioner", "Pending", 5, ["Warning ProvisioningFailed: no plugin"]
    )
    assert text.startswith(
        'PersistentVolumeClaim ws1 is Pending: no provisioner bound it within 5s (storage class "no-provisioner")'
    )
    assert "\n  events:\n    Warning ProvisioningFailed: no plugin" in text
    assert "kubectl get storageclass" in text
    none = claim_not_bound_message("ws1", "", "Pending", 5, [])
    assert 'storage class "" (none: only a matching pre-created PersistentVolume can bind it)' in none
    assert "events: none" in none
    unset = claim_not_bound_message("ws1", None, "Pending", 5, [], why="something else")
    assert "something else (no storage class and no default class" in unset


def test_event_describe_counts_repeats() -> None:
    assert ClaimEvent.model_validate({**PROVISIONING_FAILED, "count": 3}).describe() == (
        "Warning ProvisioningFailed: no volume plugin matched name: kubernetes.io/no-provisioner (x3)"
    )


# -- WorkspaceVolume on the fake kubectl ---------------------------------------------------------------


def test_start_creates_the_claim_waits_and_stop_deletes_only_it(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    ws = make_workspace("ws1", size="2Gi", labels={"team": "a"})
    creates = verbs(fake_runner, "create")
    assert creates == [["create", "-f", "-", "-o", "json"]]  # create, never apply: not someone else's
    sent = storage.created[0]
    assert sent["spec"]["accessModes"] == ["ReadWriteMany"] and "storageClassName" not in sent["spec"]
    labels = sent["metadata"]["labels"]
    assert labels[MANAGED_BY_LABEL] == MANAGED_BY and labels[OWNER_ID_LABEL] == ws.owner_id
    assert labels[OWNER_PID_LABEL] == str(os.getpid()) and labels["team"] == "a"
    assert abs(int(labels[CREATED_AT_LABEL]) - time.time()) < 60
    assert LIFETIME_LABEL not in labels
    watches = [p for p in fake_runner.spawns if p.args[:3] == ["get", "pvc", "ws1"]]
    assert watches and all(p.killed for p in watches)  # the watch is never left running
    result = ws.result
    assert result is not None and result.bound and result.volume_name == "pvc-uid-ws1-1"
    assert result.volume_status == "Bound" and ws.namespace == NS
    storage.claims["other"] = claim_json("other")
    ws.stop()
    assert verbs(fake_runner, "delete") == [["delete", "pvc", "ws1", "--ignore-not-found", "--wait=false"]]
    assert "other" in storage.claims
    ws.stop()
    assert len(verbs(fake_runner, "delete")) == 1  # idempotent


def test_session_id_is_a_deprecated_alias_of_owner_id(make_workspace: Callable[..., WorkspaceVolume]) -> None:
    ws = make_workspace("ws1", start=False)
    with pytest.warns(DeprecationWarning, match="use owner_id"):
        assert ws.session_id == ws.owner_id


def test_an_existing_claim_is_waited_for_and_never_deleted(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    storage.claims["team-data"] = claim_json("team-data", phase="Bound", volume="pv-1")
    storage.volumes["pv-1"] = volume_json("pv-1", "team-data")
    with make_workspace("team-data", existing=True) as ws:
        assert not ws.managed and ws.result is not None and ws.result.volume_status == "Bound"
    assert verbs(fake_runner, "create") == [] and verbs(fake_runner, "delete") == []
    assert "team-data" in storage.claims


def test_an_existing_claim_must_exist(
    make_workspace: Callable[..., WorkspaceVolume], storage: FakeStorage
) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        make_workspace("nope", existing=True)
    with pytest.raises(InvalidInputError, match="needs the name"):
        WorkspaceVolume(manage=False, start=False)


def test_a_retried_create_finds_its_own_claim(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    ws = make_workspace("ws1", start=False)
    storage.claims["ws1"] = claim_json(
        "ws1", phase="Bound", volume="pv-1", labels={OWNER_ID_LABEL: ws.owner_id}
    )  # the first attempt went through, its answer was lost
    storage.volumes["pv-1"] = volume_json("pv-1", "ws1")
    result = ws.start()
    assert result.bound and result.volume_name == "pv-1"
    ws.stop()
    assert "ws1" not in storage.claims  # it is ours: deleted


def test_someone_elses_claim_of_that_name_is_refused_and_kept(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    storage.claims["ws1"] = claim_json("ws1", phase="Bound", volume="pv-1", labels={"app": "theirs"})
    with pytest.raises(ConflictError, match=r"already exists and is not ours; .*existing\('ws1'\)"):
        make_workspace("ws1")
    assert verbs(fake_runner, "delete") == []
    assert "ws1" in storage.claims


def test_a_claim_that_never_binds_is_a_typed_error_with_its_events_and_is_deleted(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    storage.policy = storage.never
    started = time.monotonic()
    with pytest.raises(ClaimNotBoundError) as caught:
        make_workspace("ws1", storage_class="no-provisioner", bind_timeout=0.3)
    assert time.monotonic() - started < 5
    err = caught.value
    assert (err.claim, err.storage_class, err.phase) == ("ws1", "no-provisioner", "Pending")
    assert err.events == [
        "Warning ProvisioningFailed: no volume plugin matched name: kubernetes.io/no-provisioner"
    ]
    assert 'no provisioner bound it within 0.3s (storage class "no-provisioner")' in str(err)
    events_calls = verbs(fake_runner, "get", "events")
    assert events_calls and events_calls[-1][3] == (
        "involvedObject.kind=PersistentVolumeClaim,involvedObject.name=ws1,involvedObject.uid=uid-ws1-1"
    )
    assert "ws1" not in storage.claims  # what it made is deleted on the failure


def test_a_missing_class_fails_fast(
    make_workspace: Callable[..., WorkspaceVolume], storage: FakeStorage
) -> None:
    storage.policy = lambda claim: [CLASS_NOT_FOUND]
    started = time.monotonic()
    with pytest.raises(
        ClaimNotBoundError, match='storage class "gold" does not exist, so no provisioner will bind it'
    ):
        make_workspace("ws1", storage_class="gold", bind_timeout=60)
    assert time.monotonic() - started < 10


def test_wait_for_first_consumer_ends_the_wait_as_deferred(
    make_workspace: Callable[..., WorkspaceVolume], storage: FakeStorage
) -> None:
    storage.policy = lambda claim: [WAIT_FOR_CONSUMER]
    ws = make_workspace("ws1", storage_class="local-path", bind_timeout=60)
    assert ws.result is not None and ws.result.binding_deferred and ws.result.claim_status == "Pending"
    storage.bind(storage.claims["ws1"], "pv-late")  # the first pod mounted it
    later = ws.validate()
    assert later.bound and later.volume_name == "pv-late" and not later.binding_deferred


def test_refused_access_mode_falls_back_by_making_the_claim_again(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    def rwo_only(claim: dict[str, Any]) -> list[dict[str, Any]]:
        if "ReadWriteMany" in claim["spec"]["accessModes"]:
            return [event("ProvisioningFailed", "access mode ReadWriteMany is not supported")]
        return storage.bind_dynamic(claim)

    storage.policy = rwo_only
    ws = make_workspace("ws1", fallback_access_mode="ReadWriteOnce", bind_timeout=30)
    assert ws.access_mode == "ReadWriteOnce"
    assert [c["spec"]["accessModes"] for c in storage.created] == [["ReadWriteMany"], ["ReadWriteOnce"]]
    deletes = verbs(fake_runner, "delete", "pvc")
    assert deletes and "--wait=true" in deletes[0]  # the old claim is gone before the new one
    assert ws.result is not None and ws.result.claim_access_modes == ["ReadWriteOnce"]


def test_static_volume_is_made_for_the_claims_namespace_and_deleted_with_it(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    ws = make_workspace("ws1", host_path="/srv/data", node="node-1")
    claim, pv = storage.created
    assert claim["kind"] == "PersistentVolumeClaim" and pv["kind"] == "PersistentVolume"
    assert claim["spec"]["volumeName"] == pv["metadata"]["name"] == ws.volume_name
    assert pv["spec"]["claimRef"] == {"namespace": NS, "name": "ws1"}  # the namespace the claim landed in
    assert ws.result is not None and ws.result.volume_name == ws.volume_name
    volume = ws.volume_name
    ws.stop()
    assert verbs(fake_runner, "delete") == [
        ["delete", "pvc", "ws1", "--ignore-not-found", "--wait=false"],
        ["delete", "pv", volume, "--ignore-not-found", "--wait=false"],
    ]


def test_executor_mounts_the_claim_with_the_workspaces_access_and_is_stopped_with_it(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    ws = make_workspace("ws1", host_path="/srv/data", node="node-1", namespace=NS)
    ex = ws.executor(image="busybox", timeout=5)
    manifest = fake_runner.pods[ex.pod_name]
    volumes = {v["name"]: v for v in manifest["spec"]["volumes"]}
    assert volumes["workspace"] == {"name": "workspace", "persistentVolumeClaim": {"claimName": "ws1"}}
    assert manifest["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    assert ex.namespace == NS and ex.image == "busybox" and ex.timeout == 5
    assert ex.kubectl.access == ws.kubectl.access  # the workspace's one ClusterAccess
    theirs = ws.executor(start=False, context="theirs")  # the caller's access keywords win
    assert theirs.kubectl.access == ws.kubectl.access.model_copy(update={"context": "theirs"})
    with pytest.raises(InvalidInputError, match="mounts that claim"):
        ws.executor(shared_pvc_name="other")
    ws.stop()
    assert ex.pod_name not in fake_runner.pods  # its executors go first, then the claim
    pod_delete = next(i for i, c in enumerate(fake_runner.runs) if c.args[:2] == ["delete", "pod"])
    pvc_delete = next(i for i, c in enumerate(fake_runner.runs) if c.args[:2] == ["delete", "pvc"])
    assert pod_delete < pvc_delete


def test_executor_takes_a_pod_shape_and_gets_the_claim_and_node(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    from kubectl_executor import PodShape

    ws = make_workspace("ws1", host_path="/srv/data", node="node-1", namespace=NS)
    shape = PodShape(image="busybox", work_dir="/data", env={"A": "1"})
    ex = ws.executor(pod=shape, start=False)
    assert ex.pod_shape == shape.model_copy(update={"shared_pvc_name": "ws1", "node": "node-1"})
    pinned = ws.executor(pod=PodShape(node="node-2", shared_pvc_name="ws1"), start=False)
    assert (pinned.pod_shape.node, pinned.pod_shape.shared_pvc_name) == ("node-2", "ws1")
    with pytest.raises(InvalidInputError, match="mounts that claim"):
        ws.executor(pod=PodShape(shared_pvc_name="other"), start=False)
    with pytest.raises(InvalidInputError, match="not both"):
        ws.executor(pod=shape, image="alpine", start=False)
    ws.stop()


def test_executor_needs_a_started_workspace(
    make_workspace: Callable[..., WorkspaceVolume], storage: FakeStorage
) -> None:
    ws = make_workspace("ws1", start=False)
    with pytest.raises(InvalidInputError, match="start"):
        ws.executor()


def test_keep_leaves_the_claim(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    ws = make_workspace("ws1", keep=True, long_lived=True)
    assert storage.created[0]["metadata"]["labels"][LIFETIME_LABEL] == LONG_LIVED
    ws.stop()
    assert verbs(fake_runner, "delete") == [] and "ws1" in storage.claims


def test_token_mode_never_puts_the_token_on_argv(
    make_workspace: Callable[..., WorkspaceVolume], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    ws = make_workspace("ws1", remote_control_plane="https://k8s.example:6443", kube_token="s3cret-token")
    ws.stop()
    assert fake_runner.all_argvs()
    assert not any("s3cret-token" in arg for argv in fake_runner.all_argvs() for arg in argv)
    assert not any("insecure" in arg for argv in fake_runner.all_argvs() for arg in argv)


# -- listing, deleting, gc -----------------------------------------------------------------------------


def test_workspace_info_for_the_list() -> None:
    labels = {**LABELS, LIFETIME_LABEL: LONG_LIVED}
    claim = claim_models.PersistentVolumeClaim.model_validate(
        claim_json(
            "ws1", phase="Bound", volume="pv-1", labels=labels, annotations={VOLUME_ANNOTATION: "pv-1"}
        )
    )
    info = workspace_info(claim, now=1_700_000_100)
    assert info.model_dump() == {
        "name": "ws1",
        "namespace": NS,
        "status": "Bound",
        "volume": "pv-1",
        "capacity": "1Gi",
        "access_modes": ["ReadWriteMany"],
        "storage_class": "standard",
        "long_lived": True,
        "static_volume": "pv-1",
        "owner_id": "sess1",
        "owner": "build-host:4242",
        "age_seconds": 100,
        "session": "sess1",  # deprecated: owner_id under its former name, for `workspace list --json`
    }
    assert info.short_access_modes == "RWX"


def test_delete_workspace_refuses_claims_it_did_not_make(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    storage.claims["theirs"] = claim_json("theirs")
    with pytest.raises(InvalidInputError, match="not made by kubectl-executor"):
        claim_io.delete_workspace(make_kubectl(), "theirs")
    assert verbs(fake_runner, "delete") == []
    assert claim_io.delete_workspace(make_kubectl(), "missing") is False


def test_deleting_a_static_workspace_takes_only_its_own_volume(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    mine = {**LABELS, CLAIM_LABEL: "ws1", CLAIM_NAMESPACE_LABEL: NS}
    storage.claims["ws1"] = claim_json("ws1", labels=LABELS, annotations={VOLUME_ANNOTATION: "pv-1"})
    storage.volumes["pv-1"] = {**volume_json("pv-1", "ws1"), "metadata": {"name": "pv-1", "labels": mine}}
    other = {**LABELS, CLAIM_LABEL: "ws2", CLAIM_NAMESPACE_LABEL: NS}
    storage.volumes["pv-2"] = {**volume_json("pv-2", "ws2"), "metadata": {"name": "pv-2", "labels": other}}
    assert claim_io.delete_workspace(make_kubectl(), "ws1") is True
    assert "ws1" not in storage.claims and list(storage.volumes) == ["pv-2"]
    selector = verbs(fake_runner, "delete", "pv")[0][3]
    assert selector == (
        f"{MANAGED_BY_LABEL}={MANAGED_BY},{CLAIM_NAMESPACE_LABEL}={NS},{CLAIM_LABEL} in (ws1)"
    )


def test_gc_with_volumes_collects_claims_of_owners_that_are_gone(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, storage: FakeStorage
) -> None:
    here = socket.gethostname()
    dead = ownership_labels("s1", 1_700_000_000, 999_999, host=here)
    alive = ownership_labels("s2", int(time.time()), os.getpid(), host=here)
    storage.claims["orphan"] = claim_json("orphan", labels=dead)
    storage.claims["live"] = claim_json("live", labels=alive)
    storage.claims["kept"] = claim_json("kept", labels={**dead, LIFETIME_LABEL: LONG_LIVED})

    def start(pid: int) -> float | None:
        return time.time() - 3600 if pid == os.getpid() else None

    without = collect_garbage(make_kubectl(), host=here, process_start=start)
    assert without == [] and verbs(fake_runner, "get", "pvc") == []  # opt-in: pods only by default
    dry = collect_garbage(make_kubectl(), host=here, process_start=start, include_volumes=True, dry_run=True)
    assert [(c.kind, c.name, c.reason, c.deleted) for c in dry] == [("pvc", "orphan", "owner-gone", False)]
    done = collect_garbage(make_kubectl(), host=here, process_start=start, include_volumes=True)
    assert [(c.kind, c.name, c.deleted) for c in done] == [("pvc", "orphan", True)]
    assert sorted(storage.claims) == ["kept", "live"]
