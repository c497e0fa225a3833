"""Fault injection (Python and HTTP API) and request accounting, seen through the real kubectl."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from emu_helpers import Kubectl, pod_manifest, wait_for
from kube_emulator import Emulator


@pytest.fixture(autouse=True)
def _clean_faults(emulator: Emulator) -> Any:
    emulator.faults.clear()
    yield
    emulator.faults.clear()


def test_fail_requests_with_status(kubectl: Kubectl, running_pod: str, emulator: Emulator) -> None:
    path = f"/namespaces/{kubectl.namespace}/pods/{running_pod}$"
    fault = emulator.faults.fail_requests(path, 500, method="GET")
    before = emulator.stats.count("GET", path)
    res = kubectl.run("get", "pod", running_pod, "-o", "name")
    assert res.returncode == 1
    assert b"Error from server (InternalError)" in res.stderr
    assert fault.fired == 1 and emulator.faults.fired("fail_requests", fault) == 1
    assert emulator.stats.count("GET", path, status=500) >= 1
    # the fault is used up: the next request succeeds
    assert kubectl.ok("get", "pod", running_pod, "-o", "name").strip() == f"pod/{running_pod}"
    assert emulator.stats.count("GET", path) >= before + 2


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_retried_by_kubectl(
    kubectl: Kubectl, running_pod: str, emulator: Emulator, status: int
) -> None:
    path = f"/namespaces/{kubectl.namespace}/pods/{running_pod}$"
    fault = emulator.faults.fail_requests(path, status, method="GET", retry_after=0, count=2)
    before = emulator.stats.count("GET", path)
    out = kubectl.ok("get", "pod", running_pod, "-o", "name")
    assert out.strip() == f"pod/{running_pod}"
    assert fault.fired == 2
    assert emulator.stats.count("GET", path) - before == 3  # two refused, one answered
    assert emulator.stats.count("GET", path, status=status) >= 2


def test_post_retried_after_503_with_retry_after(kubectl132: Kubectl, emulator: Emulator) -> None:
    path = f"/namespaces/{kubectl132.namespace}/pods$"
    fault = emulator.faults.fail_requests(path, 503, method="POST", retry_after=1)
    t0 = time.monotonic()
    kubectl132.ok("create", "-f", "-", input=json.dumps(pod_manifest("late")).encode())
    assert time.monotonic() - t0 >= 0.9  # waited as told
    assert fault.fired == 1 and emulator.stats.count("POST", path) == 2


def test_refused_exec_upgrade(kubectl: Kubectl, running_pod: str, emulator: Emulator) -> None:
    fault = emulator.faults.refuse_exec(
        500, "error dialing backend: dial tcp 10.1.2.3:10250: connect: connection refused", pod=running_pod
    )
    posts = emulator.stats.count("POST", "/exec$")
    res = kubectl.run("exec", running_pod, "--", "echo", "hi")
    assert res.returncode == 1 and res.stdout == b""
    assert b"error dialing backend: dial tcp 10.1.2.3:10250: connect: connection refused" in res.stderr
    assert fault.fired == 1
    assert emulator.exec_count(running_pod, kubectl.namespace) == 0
    if kubectl.version == "1.32":
        # 1.32 retried over SPDY (POST) and reported that attempt's (identical) error
        assert emulator.stats.count("POST", "/exec$") == posts + 1
    assert kubectl.ok("exec", running_pod, "--", "echo", "hi") == "hi\n"
    assert emulator.exec_count(running_pod, kubectl.namespace) == 1


def test_drop_exec_after_bytes(kubectl: Kubectl, running_pod: str, emulator: Emulator) -> None:
    fault = emulator.faults.drop_exec(after_bytes=1000)
    res = kubectl.run("exec", running_pod, "--", "sh", "-c", "head -c 100000 /dev/zero; sleep 30")
    assert res.returncode == 1
    assert len(res.stdout) <= 1000
    assert b"1006" in res.stderr or b"unexpected EOF" in res.stderr
    assert fault.fired == 1
    # the exec'd process did not survive the dropped connection
    wait_for(
        lambda: (
            not any(b"sleep\x0030" in _cmdline(p) for p in emulator.pod_pids(kubectl.namespace, running_pod))
        ),
        timeout=5,
        what="the dropped exec to be killed",
    )


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def test_drop_exec_before_status(kubectl: Kubectl, running_pod: str, emulator: Emulator) -> None:
    fault = emulator.faults.drop_exec(before_status=True)
    res = kubectl.run("exec", running_pod, "--", "echo", "hi")
    assert res.stdout == b"hi\n"  # all output arrived, only the exit status is missing
    assert res.returncode == 1 and b"command terminated" not in res.stderr
    assert fault.fired == 1


@pytest.mark.parametrize("trigger", [{"after_seconds": 0.3}, {"after_bytes": 5}])
def test_delete_pod_during_exec(
    kubectl: Kubectl, running_pod: str, emulator: Emulator, trigger: dict[str, Any]
) -> None:
    ns = kubectl.namespace
    fault = emulator.faults.delete_pod_during_exec(pod=running_pod, **trigger)
    res = kubectl.run("exec", running_pod, "--", "sh", "-c", "echo hello-there; sleep 30")
    assert res.returncode == 137
    assert fault.fired == 1
    wait_for(lambda: emulator.get("pods", running_pod, ns) is None, what="pod gone")
    assert emulator.pod_pids(ns, running_pod) == []


def test_latency(kubectl132: Kubectl, running_pod: str, emulator: Emulator) -> None:
    path = f"/namespaces/{kubectl132.namespace}/pods/{running_pod}$"
    fault = emulator.faults.add_latency(0.5, path_regex=path, method="GET", count=1)
    t0 = time.monotonic()
    kubectl132.ok("get", "pod", running_pod, "-o", "name")
    assert time.monotonic() - t0 >= 0.5
    assert fault.fired == 1 and fault not in emulator.faults.active()


def _http(emu: Emulator, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        emu.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_http_fault_and_stats_endpoints(kubectl132: Kubectl, running_pod: str, emulator: Emulator) -> None:
    path = f"/namespaces/{kubectl132.namespace}/pods/{running_pod}$"
    code, made = _http(
        emulator,
        "/_emulator/faults",
        "POST",
        {
            "kind": "fail_requests",
            "path_regex": path,
            "status": 503,
            "method": "GET",
            "message": "etcd is sad",
        },
    )
    assert code == 201 and made["faults"][0]["remaining"] == 1
    res = kubectl132.run("get", "pod", running_pod)
    assert b"etcd is sad" in res.stderr and b"(ServiceUnavailable)" in res.stderr
    code, faults = _http(emulator, "/_emulator/faults")
    assert faults["active"] == [] and faults["fired"] >= 1
    code, stats = _http(emulator, "/_emulator/stats")
    assert code == 200 and stats["total"] > 0
    key = f"GET /api/v1/namespaces/{kubectl132.namespace}/pods/{running_pod}"
    assert stats["by_request"][key] >= 1
    assert not any(k.startswith("GET /_emulator") for k in stats["by_request"])
    code, err = _http(emulator, "/_emulator/faults", "POST", {"kind": "nonsense"})
    assert code == 400 and "unknown fault kind" in err["message"]
    code, err = _http(
        emulator, "/_emulator/faults", "POST", {"kind": "drop_exec", "after_bytes": 1, "before_status": True}
    )
    assert code == 400


def test_exec_count_and_request_counts(kubectl132: Kubectl, running_pod: str, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    assert emulator.exec_count(running_pod, ns) == 0
    for _ in range(3):
        kubectl132.ok("exec", running_pod, "--", "true")
    assert emulator.exec_count(running_pod, ns) == 3
    assert emulator.stats.count("GET", f"/namespaces/{ns}/pods/{running_pod}/exec$", status=101) == 3
