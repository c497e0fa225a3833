"""Object API through the real kubectl: discovery, apply, get, selectors, errors, watch/wait."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from emu_helpers import Kubectl, phase, pod_manifest, start_pod, wait_for
from kube_emulator import Emulator


def _http(
    emu: Emulator, path: str, method: str = "GET", body: Any = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(emu.url + path, data=data, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _yaml(obj: dict[str, Any]) -> bytes:
    return yaml.safe_dump(obj).encode()


def test_discovery_documents(emulator: Emulator) -> None:
    code, version = _http(emulator, "/version")
    assert code == 200 and version["minor"] == "32"  # the dispatcher then picks kubectl 1.32
    code, groups = _http(emulator, "/apis")
    assert code == 200
    assert "networking.k8s.io" in [g["name"] for g in groups["groups"]]
    code, v1 = _http(emulator, "/api/v1")
    names = {r["name"]: r for r in v1["resources"]}
    assert names["pods"]["namespaced"] and names["pods"]["kind"] == "Pod"
    assert not names["namespaces"]["namespaced"]
    assert "pods/exec" in names and "persistentvolumeclaims" in names
    code, root = _http(emulator, "/openapi/v3")
    url = root["paths"]["api/v1"]["serverRelativeURL"]
    code, doc = _http(emulator, url)
    patch = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Pod"
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]


def test_api_resources_via_kubectl(kubectl: Kubectl) -> None:
    out = kubectl.ok("api-resources", "--no-headers")
    assert "networkpolicies" in out and "persistentvolumeclaims" in out and "pods" in out


def test_apply_client_side_create_and_update(kubectl: Kubectl, emulator: Emulator, tmp_path: Path) -> None:
    pod = pod_manifest("web")
    pod["metadata"]["labels"] = {"app": "web"}
    assert "pod/web created" in kubectl.ok("apply", "-f", "-", input=_yaml(pod))
    first = kubectl.json("get", "pod", "web")
    assert first["metadata"]["labels"] == {"app": "web"}
    assert first["spec"]["containers"][0]["image"] == "python:3-slim"
    assert first["metadata"]["uid"] and int(first["metadata"]["resourceVersion"]) > 0

    pod["metadata"]["labels"] = {"app": "web", "tier": "front"}
    assert "pod/web configured" in kubectl.ok("apply", "-f", "-", input=_yaml(pod))
    second = kubectl.json("get", "pod", "web")
    assert second["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    # unchanged manifest: nothing to do
    assert "unchanged" in kubectl.ok("apply", "-f", "-", input=_yaml(pod))


def test_apply_server_side_creates_when_missing(kubectl: Kubectl, emulator: Emulator) -> None:
    pod = pod_manifest("ssa")
    out = kubectl.ok("apply", "--server-side", "-f", "-", input=_yaml(pod))
    assert "pod/ssa serverside-applied" in out
    assert emulator.get("pods", "ssa", kubectl.namespace) is not None
    pod["metadata"]["labels"] = {"k": "v"}
    kubectl.ok("apply", "--server-side", "-f", "-", input=_yaml(pod))
    assert kubectl.json("get", "pod", "ssa")["metadata"]["labels"] == {"k": "v"}


def test_pod_spec_is_immutable(kubectl132: Kubectl) -> None:
    pod = pod_manifest("fixed")
    kubectl132.ok("apply", "-f", "-", input=_yaml(pod))
    pod["spec"]["containers"][0]["command"] = ["sleep", "5"]
    res = kubectl132.run("apply", "-f", "-", input=_yaml(pod))
    assert res.returncode != 0
    assert b"pod updates may not change fields" in res.stderr


def test_get_table_shows_status(kubectl132: Kubectl, emulator: Emulator) -> None:
    start_pod(emulator, kubectl132.namespace, "tbl")
    out = kubectl132.ok("get", "pods")
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "READY", "STATUS"]
    assert row.split()[:3] == ["tbl", "1/1", "Running"]


def test_label_selectors(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    for name, labels in (("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})):
        pod = pod_manifest(name)
        pod["metadata"]["labels"] = labels
        emulator.create(pod, namespace=ns)

    def names(selector: str) -> list[str]:
        out = kubectl132.ok("get", "pods", "-l", selector, "-o", "name")
        return sorted(line.split("/")[1] for line in out.split())

    assert names("app=x") == ["a"]
    assert names("app==y") == ["b"]
    assert names("app!=x") == ["b", "c"]
    assert names("app in (x,y)") == ["a", "b"]
    assert names("app notin (x)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!app") == ["c"]
    assert names("app,!tier") == ["b"]
    out = kubectl132.ok("get", "pods", "--field-selector", "metadata.name=b", "-o", "name")
    assert out.split() == ["pod/b"]
    bad = kubectl132.run("get", "pods", "--field-selector", "spec.bogus=1")
    assert bad.returncode != 0 and b"field label not supported" in bad.stderr


def test_errors_are_status_objects(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    missing = kubectl132.run("get", "pod", "nope")
    assert missing.returncode != 0
    assert b'Error from server (NotFound): pods "nope" not found' in missing.stderr

    pod = pod_manifest("dup")
    kubectl132.ok("create", "-f", "-", input=_yaml(pod))
    again = kubectl132.run("create", "-f", "-", input=_yaml(pod))
    assert b"(AlreadyExists)" in again.stderr and b'pods "dup" already exists' in again.stderr

    bad = kubectl132.run("create", "-f", "-", input=_yaml(pod_manifest("Bad_Name")))
    assert b'The Pod "Bad_Name" is invalid: metadata.name' in bad.stderr
    assert b"RFC 1123" in bad.stderr
    code, status = _http(emulator, f"/api/v1/namespaces/{ns}/pods", "POST", pod_manifest("Bad_Name"))
    assert code == 422 and status["kind"] == "Status" and status["reason"] == "Invalid"
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    code, status = _http(emulator, "/api/v1/namespaces/no-such-ns/pods", "POST", pod_manifest("x"))
    assert code == 404 and status["message"] == 'namespaces "no-such-ns" not found'


def test_generate_name(kubectl132: Kubectl) -> None:
    pod = pod_manifest("")
    pod["metadata"] = {"generateName": "gen-"}
    out = kubectl132.ok("create", "-f", "-", "-o", "name", input=_yaml(pod))
    name = out.strip().split("/")[1]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5


def test_label_resource_version_conflict(kubectl: Kubectl, emulator: Emulator) -> None:
    start_pod(emulator, kubectl.namespace, "rv")
    rv = kubectl.ok("get", "pod", "rv", "-o", "jsonpath={.metadata.resourceVersion}")
    kubectl.ok("label", "pod", "rv", "one=1", f"--resource-version={rv}")
    stale = kubectl.run("label", "pod", "rv", "two=2", f"--resource-version={rv}")
    assert stale.returncode != 0
    assert b"(Conflict)" in stale.stderr and b"the object has been modified" in stale.stderr
    labels = kubectl.json("get", "pod", "rv")["metadata"]["labels"]
    assert labels == {"one": "1"}
    kubectl.ok("annotate", "pod", "rv", "note=x")
    assert kubectl.json("get", "pod", "rv")["metadata"]["annotations"] == {"note": "x"}
    # PUT with a stale resourceVersion is a Conflict too; with the current one it applies
    current = kubectl.json("get", "pod", "rv")
    stale = json.loads(json.dumps(current))
    stale["metadata"]["resourceVersion"] = rv
    path = f"/api/v1/namespaces/{kubectl.namespace}/pods/rv"
    code, status = _http(emulator, path, "PUT", stale)
    assert (code, status["reason"]) == (409, "Conflict")
    current["metadata"]["labels"]["three"] = "3"
    code, updated = _http(emulator, path, "PUT", current)
    assert code == 200 and updated["metadata"]["labels"]["three"] == "3"


def test_namespace_create_label_delete(kubectl: Kubectl, emulator: Emulator) -> None:
    name = f"life-{kubectl.version.replace('.', '')}"
    kubectl.ok("create", "namespace", name)  # protobuf body from kubectl's typed client
    kubectl.ok("label", "namespace", name, "team=blue")
    labels = kubectl.json("get", "namespace", name)["metadata"]["labels"]
    assert labels == {"team": "blue", "kubernetes.io/metadata.name": name}
    start_pod(emulator, name, "inside")
    pids = emulator.pod_pids(name, "inside")
    assert pids
    kubectl.ok("delete", "namespace", name)
    assert kubectl.run("get", "namespace", name).returncode != 0
    assert emulator.get("pods", "inside", name) is None
    assert emulator.pod_pids(name, "inside") == []
    refused = kubectl.run("delete", "namespace", "default")
    assert b"(Forbidden)" in refused.stderr


def test_typed_create_commands(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    kubectl132.ok("create", "configmap", "cfg", "--from-literal=a=1", "--from-literal=b=two")
    kubectl132.ok("create", "secret", "generic", "sec", "--from-literal=k=v")
    kubectl132.ok("create", "serviceaccount", "robot")
    assert (emulator.get("configmaps", "cfg", ns) or {})["data"] == {"a": "1", "b": "two"}
    assert (emulator.get("secrets", "sec", ns) or {})["data"] == {"k": "dg=="}
    assert emulator.get("serviceaccounts", "robot", ns) is not None


def test_network_policy_and_pvc_objects(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    netpol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    kubectl132.ok("apply", "-f", "-", input=_yaml(netpol) + b"---\n" + _yaml(pvc))
    got = kubectl132.json("get", "networkpolicy", "deny")
    assert got["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert kubectl132.json("get", "pvc", "data")["status"]["phase"] == "Bound"
    kubectl132.ok("delete", "networkpolicy", "deny")
    assert emulator.get("networkpolicies", "deny", ns) is None


def test_wait_for_ready_and_delete(kubectl: Kubectl, emulator: Emulator) -> None:
    kubectl.ok("apply", "-f", "-", input=_yaml(pod_manifest("w")))
    out = kubectl.ok("wait", "--for=condition=Ready", "pod/w", "--timeout=20s")
    assert "condition met" in out
    assert phase(emulator, kubectl.namespace, "w") == "Running"
    waiter = kubectl.popen("wait", "--for=delete", "pod/w", "--timeout=20s", stdout=-1, stderr=-1)
    wait_for(
        lambda: emulator.watch_count() > 0 or waiter.poll() is not None,
        what="kubectl wait --for=delete to watch",
    )
    kubectl.ok("delete", "pod", "w")
    _, err_b = waiter.communicate(timeout=20)
    assert waiter.returncode == 0, err_b


def test_wait_survives_ready_between_list_and_watch(kubectl: Kubectl, emulator: Emulator) -> None:
    """The pod turns Ready while kubectl is between its list and its watch: the watch must
    replay events after the list's resourceVersion or kubectl hangs."""
    ns = kubectl.namespace
    fault = emulator.faults.add_latency(
        0.6, path_regex=f"^/api/v1/namespaces/{ns}/pods$", query_regex="watch=", count=1
    )
    emulator.create(pod_manifest("racy"), namespace=ns)
    try:
        out = kubectl.ok("wait", "--for=condition=Ready", "pod/racy", "--timeout=15s")
    finally:
        emulator.faults.clear()
    assert "condition met" in out
    assert emulator.faults.fired(fault=fault) == 1


def test_watch_streams_events(kubectl: Kubectl, emulator: Emulator) -> None:
    ns = kubectl.namespace
    baseline = emulator.watch_count()
    watcher = kubectl.popen(
        "get", "pods", "--watch", "-o", "name", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    lines: list[bytes] = []
    assert watcher.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(watcher.stdout.readline, b"")))
    reader.start()
    try:
        wait_for(
            lambda: emulator.stats.count("GET", f"/namespaces/{ns}/pods$", query_regex="watch=1|watch=true"),
            what="kubectl to start watching",
        )
        start_pod(emulator, ns, "seen")  # created after the watch began: must arrive as events
        wait_for(lambda: b"pod/seen\n" in lines, what="the watch event in kubectl's output")
    finally:
        watcher.terminate()
        watcher.wait(10)
        reader.join(10)
        watcher.stdout.close()
    # the abandoned watch is noticed and released
    wait_for(lambda: emulator.watch_count() <= baseline, timeout=5, what="watch released")


def test_watch_resource_version_replay_over_http(emulator: Emulator, ns: str) -> None:
    _, listing = _http(emulator, f"/api/v1/namespaces/{ns}/pods")
    rv = listing["metadata"]["resourceVersion"]
    emulator.create(pod_manifest("later"), namespace=ns)
    wait_for(lambda: phase(emulator, ns, "later") == "Running")
    url = f"{emulator.url}/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1"
    with urllib.request.urlopen(url, timeout=10) as resp:
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    types = [e["type"] for e in events]
    assert types[0] == "ADDED" and "MODIFIED" in types
    assert events[-1]["object"]["status"]["phase"] == "Running"
    # streaming list (kubectl 1.37): initial ADDED events then the initial-events-end bookmark
    url = (
        f"{emulator.url}/api/v1/namespaces/{ns}/pods?watch=true&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"
    )
    with urllib.request.urlopen(url, timeout=10) as resp:
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    marks = events[1]["object"]["metadata"]["annotations"]
    assert marks == {"k8s.io/initial-events-end": "true"}


@pytest.mark.parametrize(
    "patch_type,body",
    [
        ("merge", {"metadata": {"labels": {"m": "1"}}}),
        ("strategic", {"metadata": {"labels": {"m": "1"}}}),
        ("json", [{"op": "add", "path": "/metadata/labels", "value": {"m": "1"}}]),
    ],
)
def test_patch_types(kubectl132: Kubectl, emulator: Emulator, patch_type: str, body: Any) -> None:
    start_pod(emulator, kubectl132.namespace, "pt")
    kubectl132.ok("patch", "pod", "pt", "--type", patch_type, "-p", json.dumps(body))
    assert kubectl132.json("get", "pod", "pt")["metadata"]["labels"] == {"m": "1"}
