"""Persistent storage through the real kubectl: storage classes, the binder and provisioner,
static volumes, release and reclaim, and the scheduler's volume checks."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from emu_helpers import Kubectl, phase, pod_manifest, wait_for
from kube_emulator import Emulator

GI = "1Gi"


def _yaml(*objs: dict[str, Any]) -> bytes:
    return b"---\n".join(yaml.safe_dump(o).encode() for o in objs)


def claim(
    name: str, *, modes: tuple[str, ...] = ("ReadWriteOnce",), size: str = GI, **spec: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"accessModes": list(modes), "resources": {"requests": {"storage": size}}}
    body.update(spec)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": body}


def volume(
    name: str,
    path: str,
    *,
    modes: tuple[str, ...] = ("ReadWriteOnce", "ReadWriteMany"),
    size: str = GI,
    source: str = "hostPath",
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "capacity": {"storage": size},
        "accessModes": list(modes),
        source: {"path": path},
        "storageClassName": "",
    }
    body.update(spec)
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": meta, "spec": body}


def mounting_pod(name: str, claim_name: str) -> dict[str, Any]:
    return pod_manifest(
        name,
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
        containers=[
            {
                "name": "main",
                "image": "python:3-slim",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }
        ],
    )


def node_affinity(node: str) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}
    return {"required": {"nodeSelectorTerms": [term]}}


def _claim(emu: Emulator, ns: str, name: str) -> dict[str, Any]:
    got = emu.get("persistentvolumeclaims", name, ns)
    assert got is not None, f"claim {name} not found"
    return got


def _pv(emu: Emulator, name: str) -> dict[str, Any] | None:
    return emu.get("persistentvolumes", name, None)


def _bound(emu: Emulator, ns: str, name: str) -> bool:
    got = emu.get("persistentvolumeclaims", name, ns)
    return got is not None and got["status"].get("phase") == "Bound"


def _events(kubectl: Kubectl, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.name={name},involvedObject.kind=PersistentVolumeClaim"
    items: list[dict[str, Any]] = kubectl.json("get", "events", "--field-selector", selector)["items"]
    return items


def _event_reasons(kubectl: Kubectl, name: str) -> dict[str, str]:
    return {e["reason"]: e["message"] for e in _events(kubectl, name)}


def _scheduled(emu: Emulator, ns: str, pod: str) -> dict[str, Any]:
    got = emu.get("pods", pod, ns)
    assert got is not None
    return next(c for c in got["status"]["conditions"] if c["type"] == "PodScheduled")


@pytest.fixture
def static_volumes(emulator: Emulator) -> Iterator[list[str]]:
    """Names of cluster-scoped volumes a test creates; deleted afterwards (they outlive namespaces)."""
    made: list[str] = []
    yield made
    for name in made:
        if _pv(emulator, name) is not None:
            emulator.delete("persistentvolumes", name, None)


# -- discovery and classes ------------------------------------------------------------------------


def test_discovery_lists_volumes_claims_and_storage_classes(kubectl: Kubectl) -> None:
    out = kubectl.ok("api-resources", "--no-headers")
    rows = {line.split()[0]: line.split() for line in out.splitlines()}
    assert {"persistentvolumes", "persistentvolumeclaims", "storageclasses"} <= set(rows)
    assert "storage.k8s.io/v1" in rows["storageclasses"]
    assert rows["persistentvolumes"][2] == "v1" and rows["persistentvolumes"][3] == "false"  # cluster-scoped
    listed = kubectl.ok("get", "storageclass", "--no-headers")
    rows = {line.split()[0]: line.split()[1:] for line in listed.splitlines()}
    assert rows["standard"][:2] == ["(default)", "emulator.local/hostpath"]  # printed as kubectl does
    names = set(rows)
    assert {"standard-rwo", "local-path", "no-provisioner"} <= names
    sc = kubectl.json("get", "sc", "no-provisioner")
    assert sc["provisioner"] == "kubernetes.io/no-provisioner"


# -- dynamic provisioning --------------------------------------------------------------------------


def test_default_class_provisions_and_binds_as_watch_events(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    with urllib.request.urlopen(
        f"{emulator.url}/api/v1/namespaces/{ns}/persistentvolumeclaims", timeout=10
    ) as r:
        rv = json.loads(r.read())["metadata"]["resourceVersion"]
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("data", modes=("ReadWriteMany",), size="2Gi")))
    kubectl132.ok("wait", "--for=jsonpath={.status.phase}=Bound", "pvc/data", "--timeout=10s")

    url = (
        f"{emulator.url}/api/v1/namespaces/{ns}/persistentvolumeclaims?watch=true"
        f"&resourceVersion={rv}&timeoutSeconds=1"
    )
    with urllib.request.urlopen(url, timeout=10) as resp:
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    phases = [(e["type"], e["object"]["status"]["phase"]) for e in events]
    assert phases[0] == ("ADDED", "Pending")  # created unbound, as on a real cluster
    assert phases[-1] == ("MODIFIED", "Bound")

    pvc = kubectl132.json("get", "pvc", "data")
    assert pvc["spec"]["storageClassName"] == "standard"  # the default class was filled in
    assert pvc["status"] == {
        "phase": "Bound",
        "accessModes": ["ReadWriteMany"],
        "capacity": {"storage": "2Gi"},
    }
    assert "kubernetes.io/pvc-protection" in pvc["metadata"]["finalizers"]
    pv = kubectl132.json("get", "pv", pvc["spec"]["volumeName"])
    ref = pv["spec"]["claimRef"]
    assert (ref["namespace"], ref["name"], ref["uid"]) == (ns, "data", pvc["metadata"]["uid"])
    assert pv["status"]["phase"] == "Bound"
    assert pv["spec"]["capacity"] == {"storage": "2Gi"} and pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["storageClassName"] == "standard"
    row = kubectl132.ok("get", "pvc", "data", "--no-headers").split()
    assert row[:6] == ["data", "Bound", pv["metadata"]["name"], "2Gi", "RWX", "standard"]
    assert _event_reasons(kubectl132, "data")["ProvisioningSucceeded"].endswith(pv["metadata"]["name"])


@pytest.mark.parametrize(
    "cls,reason,message",
    [
        (
            "no-provisioner",
            "ProvisioningFailed",
            "no volume plugin matched name: kubernetes.io/no-provisioner",
        ),
        ("gold", "ProvisioningFailed", 'storageclass.storage.k8s.io "gold" not found'),
        ("", "FailedBinding", "no persistent volumes available for this claim and no storage class is set"),
    ],
)
def test_a_claim_nothing_can_bind_stays_pending_with_an_event(
    kubectl132: Kubectl, emulator: Emulator, cls: str, reason: str, message: str
) -> None:
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("never", storageClassName=cls)))
    event = wait_for(lambda: _event_reasons(kubectl132, "never").get(reason), what=f"{reason} event")
    assert event == message
    assert _claim(emulator, kubectl132.namespace, "never")["status"]["phase"] == "Pending"
    described = kubectl132.ok("describe", "pvc", "never")
    assert message in described
    # the pod that mounts it is not scheduled, with the scheduler's words
    emulator.create(mounting_pod("user", "never"), namespace=kubectl132.namespace)
    cond = _scheduled(emulator, kubectl132.namespace, "user")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert "pod has unbound immediate PersistentVolumeClaims" in cond["message"]


def test_an_external_provisioner_that_never_answers(kubectl132: Kubectl, emulator: Emulator) -> None:
    sc = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "kx-test-external"},
        "provisioner": "ebs.csi.aws.com",
    }
    kubectl132.ok("apply", "-f", "-", input=_yaml(sc))
    try:
        kubectl132.ok("apply", "-f", "-", input=_yaml(claim("ext", storageClassName="kx-test-external")))
        message = wait_for(
            lambda: _event_reasons(kubectl132, "ext").get("ExternalProvisioning"), what="event"
        )
        assert "external provisioner 'ebs.csi.aws.com'" in message
        assert _claim(emulator, kubectl132.namespace, "ext")["status"]["phase"] == "Pending"
    finally:
        kubectl132.ok("delete", "storageclass", "kx-test-external")


def test_a_provisioner_refuses_an_access_mode_it_cannot_give(kubectl132: Kubectl, emulator: Emulator) -> None:
    kubectl132.ok(
        "apply",
        "-f",
        "-",
        input=_yaml(claim("many", modes=("ReadWriteMany",), storageClassName="standard-rwo")),
    )
    message = wait_for(lambda: _event_reasons(kubectl132, "many").get("ProvisioningFailed"), what="event")
    assert 'StorageClass "standard-rwo"' in message and "ReadWriteMany" in message
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("once", storageClassName="standard-rwo")))
    wait_for(lambda: _bound(emulator, kubectl132.namespace, "once"), what="the RWO claim bound")
    assert _claim(emulator, kubectl132.namespace, "many")["status"]["phase"] == "Pending"


def test_wait_for_first_consumer_binds_when_a_pod_mounts_the_claim(
    kubectl132: Kubectl, emulator: Emulator
) -> None:
    ns = kubectl132.namespace
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("lazy", storageClassName="local-path")))
    message = wait_for(lambda: _event_reasons(kubectl132, "lazy").get("WaitForFirstConsumer"), what="event")
    assert message == "waiting for first consumer to be created before binding"
    assert _claim(emulator, ns, "lazy")["status"]["phase"] == "Pending"
    emulator.create(mounting_pod("consumer", "lazy"), namespace=ns)
    wait_for(lambda: phase(emulator, ns, "consumer") == "Running", what="the consumer running")
    bound = _claim(emulator, ns, "lazy")
    assert bound["status"]["phase"] == "Bound"
    assert bound["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == "emulator-node"
    pv = _pv(emulator, bound["spec"]["volumeName"])
    assert pv is not None and pv["spec"]["nodeAffinity"] == node_affinity("emulator-node")
    # the provisioner cannot give ReadWriteMany: the consumer is not scheduled
    kubectl132.ok(
        "apply",
        "-f",
        "-",
        input=_yaml(claim("lazy-many", modes=("ReadWriteMany",), storageClassName="local-path")),
    )
    emulator.create(mounting_pod("stuck", "lazy-many"), namespace=ns)
    cond = _scheduled(emulator, ns, "stuck")
    assert cond["reason"] == "Unschedulable"
    assert "didn't find available persistent volumes to bind" in cond["message"]


# -- static volumes -------------------------------------------------------------------------------


def test_static_volume_binds_to_the_smallest_claim_it_fits(
    kubectl132: Kubectl, emulator: Emulator, static_volumes: list[str]
) -> None:
    ns = kubectl132.namespace
    names = [f"{ns}-small", f"{ns}-rwo", f"{ns}-big", f"{ns}-fit"]
    static_volumes.extend(names)
    kubectl132.ok(
        "apply",
        "-f",
        "-",
        input=_yaml(
            volume(names[0], f"/srv/{ns}/small", size="500Mi"),
            volume(names[1], f"/srv/{ns}/rwo", modes=("ReadWriteOnce",), size="2Gi"),
            volume(names[2], f"/srv/{ns}/big", size="10Gi"),
            volume(names[3], f"/srv/{ns}/fit", size="2Gi"),
        ),
    )
    wait_for(
        lambda: (_pv(emulator, names[3]) or {}).get("status", {}).get("phase") == "Available",
        what="Available",
    )
    kubectl132.ok(
        "apply", "-f", "-", input=_yaml(claim("static", modes=("ReadWriteMany",), storageClassName=""))
    )
    wait_for(lambda: _bound(emulator, ns, "static"), what="static claim bound")
    got = _claim(emulator, ns, "static")
    # too small, wrong access mode, and bigger than needed all lose to the one that fits best
    assert got["spec"]["volumeName"] == names[3]
    assert got["status"]["capacity"] == {"storage": "2Gi"}
    assert got["status"]["accessModes"] == ["ReadWriteOnce", "ReadWriteMany"]
    pv = _pv(emulator, names[3])
    assert pv is not None and pv["status"]["phase"] == "Bound"
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    for other in names[:3]:
        assert (_pv(emulator, other) or {})["status"]["phase"] == "Available"
    # a claim may name its volume; a class mismatch is never bound
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("named", storageClassName="", volumeName=names[2])))
    wait_for(lambda: _bound(emulator, ns, "named"), what="named claim bound")
    assert _claim(emulator, ns, "named")["spec"]["volumeName"] == names[2]
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("wrong-class", storageClassName="no-provisioner")))
    wait_for(lambda: _event_reasons(kubectl132, "wrong-class").get("ProvisioningFailed"), what="event")
    assert _claim(emulator, ns, "wrong-class")["status"]["phase"] == "Pending"


def test_a_pending_pod_starts_once_a_volume_for_its_claim_appears(
    kubectl132: Kubectl, emulator: Emulator, static_volumes: list[str]
) -> None:
    ns = kubectl132.namespace
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("later", storageClassName="no-provisioner")))
    emulator.create(mounting_pod("waiter", "later"), namespace=ns)
    assert _scheduled(emulator, ns, "waiter")["reason"] == "Unschedulable"
    name = f"{ns}-later"
    static_volumes.append(name)
    kubectl132.ok(
        "apply", "-f", "-", input=_yaml(volume(name, f"/srv/{ns}/later", storageClassName="no-provisioner"))
    )
    wait_for(lambda: phase(emulator, ns, "waiter") == "Running", what="the pod running")
    assert _claim(emulator, ns, "later")["spec"]["volumeName"] == name


def test_volumes_on_one_host_path_share_files_like_a_node(
    kubectl132: Kubectl, emulator: Emulator, static_volumes: list[str]
) -> None:
    ns = kubectl132.namespace
    path = f"/mnt/{ns}/shared"
    names = [f"{ns}-a", f"{ns}-b"]
    static_volumes.extend(names)
    kubectl132.ok(
        "apply",
        "-f",
        "-",
        input=_yaml(
            volume(names[0], path, claimRef={"namespace": ns, "name": "a"}),
            volume(
                names[1],
                path,
                source="local",
                nodeAffinity=node_affinity("emulator-node"),
                claimRef={"namespace": ns, "name": "b"},
            ),
            claim("a", storageClassName=""),
            claim("b", storageClassName=""),
        ),
    )
    wait_for(lambda: _bound(emulator, ns, "a") and _bound(emulator, ns, "b"), what="both bound")
    assert _claim(emulator, ns, "a")["spec"]["volumeName"] == names[0]  # pre-bound by claimRef
    emulator.create(mounting_pod("pa", "a"), namespace=ns)
    emulator.create(mounting_pod("pb", "b"), namespace=ns)
    wait_for(lambda: phase(emulator, ns, "pa") == phase(emulator, ns, "pb") == "Running", what="both running")
    kubectl132.ok("exec", "pa", "--", "sh", "-c", "printf node-bytes > /data/f")
    assert kubectl132.ok("exec", "pb", "--", "cat", "/data/f") == "node-bytes"


def test_volume_node_affinity_elsewhere_keeps_the_pod_pending(
    kubectl132: Kubectl, emulator: Emulator, static_volumes: list[str]
) -> None:
    ns = kubectl132.namespace
    name = f"{ns}-far"
    static_volumes.append(name)
    far = volume(name, f"/srv/{ns}/far", source="local", nodeAffinity=node_affinity("other-node"))
    kubectl132.ok("apply", "-f", "-", input=_yaml(far, claim("far", storageClassName="")))
    wait_for(lambda: _bound(emulator, ns, "far"), what="bound")  # Immediate binding ignores the pod's node
    emulator.create(mounting_pod("far-pod", "far"), namespace=ns)
    cond = _scheduled(emulator, ns, "far-pod")
    assert cond["reason"] == "Unschedulable" and "volume node affinity conflict" in cond["message"]


def test_invalid_claims_and_volumes_are_refused(kubectl132: Kubectl) -> None:
    bad_claim = claim("bad")
    del bad_claim["spec"]["accessModes"]
    bad_claim["spec"]["resources"] = {}
    err = kubectl132.run("apply", "-f", "-", input=_yaml(bad_claim)).stderr.decode()
    assert "spec.accessModes: Required value: at least 1 access mode is required" in err
    assert "spec.resources[storage]: Required value" in err
    local = volume("kx-test-bad-local", "/srv/x", source="local")
    err = kubectl132.run("apply", "-f", "-", input=_yaml(local)).stderr.decode()
    assert "spec.nodeAffinity: Required value: Local volume requires node affinity" in err
    escaping = volume("kx-test-bad-path", "/srv/../etc")
    err = kubectl132.run("apply", "-f", "-", input=_yaml(escaping)).stderr.decode()
    assert "must not contain '..'" in err


def test_a_claims_spec_is_immutable(kubectl132: Kubectl, emulator: Emulator) -> None:
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("fixed")))
    wait_for(lambda: _bound(emulator, kubectl132.namespace, "fixed"), what="bound")
    done = kubectl132.run(
        "patch", "pvc", "fixed", "--type=merge", "-p", '{"spec":{"storageClassName":"local-path"}}'
    )
    assert done.returncode != 0
    assert "spec is immutable after creation" in done.stderr.decode()
    labelled = kubectl132.run("label", "pvc", "fixed", "team=a")
    assert labelled.returncode == 0, labelled.stderr


# -- release and reclaim ---------------------------------------------------------------------------


def test_deleting_a_claim_deletes_its_dynamic_volume_and_data(
    kubectl132: Kubectl, emulator: Emulator
) -> None:
    ns = kubectl132.namespace
    kubectl132.ok("apply", "-f", "-", input=_yaml(claim("gone")))
    wait_for(lambda: _bound(emulator, ns, "gone"), what="bound")
    pv_name = _claim(emulator, ns, "gone")["spec"]["volumeName"]
    pv = _pv(emulator, pv_name)
    assert pv is not None
    data_dir: Path = emulator.server.binder.volume_dir(pv)
    emulator.create(mounting_pod("writer", "gone"), namespace=ns)
    wait_for(lambda: phase(emulator, ns, "writer") == "Running", what="writer running")
    kubectl132.ok("exec", "writer", "--", "sh", "-c", "echo kept > /data/f")
    assert (data_dir / "f").read_text() == "kept\n"
    # in use: Terminating (pvc-protection) until the pod is gone
    kubectl132.ok("delete", "pvc", "gone", "--wait=false")
    assert _claim(emulator, ns, "gone")["metadata"]["deletionTimestamp"]
    assert kubectl132.ok("get", "pvc", "gone", "--no-headers").split()[1] == "Terminating"
    assert _pv(emulator, pv_name) is not None
    kubectl132.ok("delete", "pod", "writer")
    kubectl132.ok("wait", "--for=delete", "pvc/gone", "--timeout=10s")
    wait_for(lambda: _pv(emulator, pv_name) is None, what="the volume deleted (reclaim policy Delete)")
    wait_for(lambda: not data_dir.exists(), what="its data removed")


def test_deleting_a_claim_releases_a_retained_volume_and_keeps_its_data(
    kubectl132: Kubectl, emulator: Emulator, static_volumes: list[str]
) -> None:
    ns = kubectl132.namespace
    name = f"{ns}-kept"
    static_volumes.append(name)
    kubectl132.ok(
        "apply", "-f", "-", input=_yaml(volume(name, f"/srv/{ns}/kept"), claim("kept", storageClassName=""))
    )
    wait_for(lambda: _bound(emulator, ns, "kept"), what="bound")
    pv = _pv(emulator, name)
    assert pv is not None and pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    data_dir: Path = emulator.server.binder.volume_dir(pv)
    (data_dir / "f").write_text("still here")
    # a bound volume cannot go before its claim (pv-protection)
    kubectl132.ok("delete", "pv", name, "--wait=false")
    assert (_pv(emulator, name) or {})["metadata"].get("deletionTimestamp")
    kubectl132.ok("delete", "pvc", "kept")
    wait_for(lambda: _pv(emulator, name) is None, what="the terminating volume gone with its claim")
    assert (data_dir / "f").read_text() == "still here"  # Retain: the data stays on the node
    static_volumes.append(f"{ns}-kept2")
    kubectl132.ok(
        "apply",
        "-f",
        "-",
        input=_yaml(volume(f"{ns}-kept2", f"/srv/{ns}/kept"), claim("kept2", storageClassName="")),
    )
    wait_for(lambda: _bound(emulator, ns, "kept2"), what="bound")
    kubectl132.ok("delete", "pvc", "kept2")
    wait_for(
        lambda: (_pv(emulator, f"{ns}-kept2") or {}).get("status", {}).get("phase") == "Released",
        what="Released",
    )
    row = kubectl132.ok("get", "pv", f"{ns}-kept2", "--no-headers").split()
    assert row[3:6] == ["Retain", "Released", f"{ns}/kept2"]
