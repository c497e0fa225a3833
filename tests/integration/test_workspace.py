"""Shared workspaces through the real kubectl: executors sharing a claim, existing claims, the
claim nothing binds, static volumes, WaitForFirstConsumer, the access-mode fallback, cleanup.

On the emulator, classes behave as in fixtures/kube_emulator/binder.py: ``standard`` (default)
provisions at once, ``standard-rwo`` refuses ReadWriteMany, ``local-path`` waits for the first
consumer, ``no-provisioner`` never binds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kx_cluster import Cluster

from kubectl_executor import (
    CodeBlock,
    ConflictError,
    KubernetesCommandLineCodeExecutor,
    PVCValidationResult,
)
from kubectl_executor._cluster.labels import MANAGED_BY, MANAGED_BY_LABEL
from kubectl_executor.errors import ClaimNotBoundError
from kubectl_executor.gc import collect_garbage
from kubectl_executor.workspace import WorkspaceVolume

pytestmark = pytest.mark.integration

WorkspaceFactory = Callable[..., WorkspaceVolume]
ALL_BYTES = bytes(range(256)) * 17


def _claims(cluster: Cluster) -> list[str]:
    out = cluster.run(
        "get", "pvc", "-n", cluster.namespace, "-l", f"{MANAGED_BY_LABEL}={MANAGED_BY}", "-o", "json"
    )
    items = json.loads(out.stdout)["items"]
    return [c["metadata"]["name"] for c in items if not c["metadata"].get("deletionTimestamp")]


def _apply(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.run("apply", "-n", cluster.namespace, "-f", "-", input=json.dumps(obj).encode())


def _user_claim(name: str, **spec: Any) -> dict[str, Any]:
    body = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}, **spec}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": body}


@pytest.fixture
def workspace_factory(cluster: Cluster) -> Iterator[WorkspaceFactory]:
    """Workspaces on the test cluster; every one is stopped, and none of ours is left behind."""
    made: list[WorkspaceVolume] = []

    def make(*args: Any, **kwargs: Any) -> WorkspaceVolume:
        access = {
            "kubectl": cluster.kubectl,
            "kubeconfig": cluster.kubeconfig,
            "context": cluster.context,
            "namespace": cluster.namespace,
        }
        if kwargs.get("manage", True) is False:
            ws = WorkspaceVolume.existing(
                *args, **{**access, **{k: v for k, v in kwargs.items() if k != "manage"}}
            )
        else:
            ws = WorkspaceVolume(*args, **{**access, **kwargs})
        made.append(ws)
        return ws

    yield make
    for ws in made:
        ws.stop()
    assert _claims(cluster) == [], "workspaces leaked"


def _sh(executor: KubernetesCommandLineCodeExecutor, script: str) -> str:
    result = executor.execute_code_blocks([CodeBlock(script, "sh")])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_two_executors_share_the_claims_files(
    workspace_factory: WorkspaceFactory, cluster: Cluster, tmp_path: Path
) -> None:
    ws = workspace_factory(size="2Gi")
    result = ws.result
    assert isinstance(result, PVCValidationResult) and result.bound
    assert (result.claim_name, result.namespace) == (ws.name, cluster.namespace)
    assert result.claim_status == "Bound" and result.claim_access_modes == ["ReadWriteMany"]
    assert result.requested_storage == "2Gi" and result.volume_capacity == "2Gi"
    assert result.volume_status == "Bound" and result.volume_access_modes == ["ReadWriteMany"]
    assert result.volume_name and result.storage_class == "standard"

    writer = ws.executor(image=cluster.image)
    reader = ws.executor(image=cluster.image)
    assert writer.pod_name != reader.pod_name
    writer.upload_file_content("shared/notes.txt", "written by the first pod\n")
    writer.upload_file_content("shared/blob.bin", ALL_BYTES)
    _sh(writer, "echo from-code > shared/made.txt")
    assert _sh(reader, "cat shared/notes.txt shared/made.txt") == "written by the first pod\nfrom-code\n"
    got = reader.download_file("shared/blob.bin", tmp_path / "blob.bin")
    assert hashlib.sha256(Path(got).read_bytes()).digest() == hashlib.sha256(ALL_BYTES).digest()
    # and back the other way
    _sh(reader, "printf reply > shared/reply.txt")
    assert _sh(writer, "cat shared/reply.txt") == "reply"

    pods = {p["metadata"]["name"]: p for p in cluster.pods()}
    for ex in (writer, reader):
        volumes = pods[ex.pod_name]["spec"]["volumes"]
        assert {"name": "workspace", "persistentVolumeClaim": {"claimName": ws.name}} in volumes
    volume = result.volume_name
    ws.stop()  # stops its executors, then deletes the claim; the class reclaims the volume
    assert {p["metadata"]["name"] for p in cluster.pods()}.isdisjoint(pods)
    cluster.wait_gone("pvc", ws.name)
    cluster.wait_gone("pv", volume)
    ws.stop()  # idempotent


def test_an_existing_claim_is_used_and_never_deleted(
    workspace_factory: WorkspaceFactory, cluster: Cluster
) -> None:
    _apply(cluster, _user_claim("team-data"))
    try:
        ws = workspace_factory("team-data", manage=False)
        assert not ws.managed and ws.result is not None and ws.result.bound
        with ws.executor(image=cluster.image) as ex:
            ex.upload_file_content("kept.txt", "still here")
        ws.stop()
        claim = cluster.get_object("pvc", "team-data")
        assert claim is not None and claim["status"]["phase"] == "Bound"
        # its data survived too: a new workspace on the same claim reads it
        again = workspace_factory("team-data", manage=False)
        with again.executor(image=cluster.image) as ex:
            assert _sh(ex, "cat kept.txt") == "still here"
        again.stop()
        assert cluster.get_object("pvc", "team-data") is not None
    finally:
        cluster.run("delete", "pvc", "team-data", "-n", cluster.namespace, "--wait=false")


def test_a_name_taken_by_someone_elses_claim_is_refused_and_left_alone(
    workspace_factory: WorkspaceFactory, cluster: Cluster
) -> None:
    _apply(cluster, _user_claim("not-ours"))
    try:
        with pytest.raises(ConflictError, match=r"already exists and is not ours.*existing\('not-ours'\)"):
            workspace_factory("not-ours")
        claim = cluster.get_object("pvc", "not-ours")
        assert claim is not None and MANAGED_BY_LABEL not in (claim["metadata"].get("labels") or {})
    finally:
        cluster.run("delete", "pvc", "not-ours", "-n", cluster.namespace, "--wait=false")


def test_a_claim_no_provisioner_binds_fails_in_time_with_the_clusters_reason(
    workspace_factory: WorkspaceFactory, cluster: Cluster
) -> None:
    started = time.monotonic()
    with pytest.raises(ClaimNotBoundError) as caught:
        workspace_factory("never-bound", storage_class="no-provisioner", bind_timeout=2)
    assert time.monotonic() - started < 15
    err = caught.value
    text = str(err)
    assert err.claim == "never-bound" and err.storage_class == "no-provisioner" and err.phase == "Pending"
    assert 'storage class "no-provisioner"' in text and "no provisioner bound it within" in text
    assert any("ProvisioningFailed" in e and "kubernetes.io/no-provisioner" in e for e in err.events)
    assert isinstance(err, TimeoutError)
    cluster.wait_gone("pvc", "never-bound")  # what it created is deleted on the failure


def test_a_missing_storage_class_fails_fast(workspace_factory: WorkspaceFactory, cluster: Cluster) -> None:
    started = time.monotonic()
    with pytest.raises(ClaimNotBoundError, match='storage class "gold" does not exist') as caught:
        workspace_factory(storage_class="gold", bind_timeout=60)
    assert time.monotonic() - started < 30  # long before the 60 s
    assert any('storageclass.storage.k8s.io "gold" not found' in e for e in caught.value.events)


def test_a_static_host_path_volume_pinned_to_the_node(
    workspace_factory: WorkspaceFactory, cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    path = f"/srv/kx-tests/{cluster.namespace}/static"
    node = cluster.node_name()
    if cluster.emulator is None:
        # A real node's hostPath directory must exist, writable by the pod's user, as an admin makes it.
        if not cluster.node_is_this_machine():
            pytest.skip(
                "a static hostPath volume needs its directory prepared on the node (not this machine)"
            )
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        request.addfinalizer(lambda: shutil.rmtree(f"/srv/kx-tests/{cluster.namespace}", ignore_errors=True))
    ws = workspace_factory(size="500Mi", host_path=path, node=node, access_mode="ReadWriteOnce")
    assert ws.volume_name is not None and ws.result is not None
    pv = cluster.get_object("pv", ws.volume_name)
    assert pv is not None
    assert pv["spec"]["hostPath"]["path"] == path
    assert (
        pv["spec"]["claimRef"]["name"] == ws.name and pv["spec"]["claimRef"]["namespace"] == cluster.namespace
    )
    terms = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"]
    assert terms[0]["matchExpressions"][0]["values"] == [node]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert ws.result.volume_name == ws.volume_name and ws.result.volume_status == "Bound"
    assert ws.result.storage_class == "" and ws.result.volume_capacity == "500Mi"
    a, b = ws.executor(image=cluster.image), ws.executor(image=cluster.image)
    pods = {p["metadata"]["name"]: p for p in cluster.pods()}
    assert pods[a.pod_name]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": node}
    a.upload_file_content("x.txt", "static")
    assert _sh(b, "cat x.txt") == "static"
    volume = ws.volume_name
    ws.stop()
    cluster.wait_gone("pvc", ws.name)
    cluster.wait_gone("pv", volume)


def test_stop_deletes_only_what_it_created(workspace_factory: WorkspaceFactory, cluster: Cluster) -> None:
    _apply(cluster, _user_claim("bystander"))
    try:
        ws = workspace_factory()
        other = workspace_factory()
        assert ws.result is not None and ws.result.volume_name
        dynamic = ws.result.volume_name
        ws.stop()
        cluster.wait_gone("pvc", ws.name)
        cluster.wait_gone("pv", dynamic)
        assert cluster.get_object("pvc", "bystander") is not None
        assert cluster.get_object("pvc", other.name) is not None  # another workspace is not ours to delete
    finally:
        cluster.run("delete", "pvc", "bystander", "-n", cluster.namespace, "--wait=false")


def test_wait_for_first_consumer_binds_with_the_first_executor(
    workspace_factory: WorkspaceFactory, cluster: Cluster
) -> None:
    ws = workspace_factory(storage_class="local-path", access_mode="ReadWriteOnce", bind_timeout=30)
    assert ws.result is not None
    assert (
        ws.result.binding_deferred and ws.result.claim_status == "Pending" and ws.result.volume_name is None
    )
    with ws.executor(image=cluster.image) as ex:
        ex.upload_file_content("a.txt", "lazy")
        after = ws.validate()
        assert after.bound and not after.binding_deferred and after.volume_status == "Bound"


def test_the_fallback_access_mode_when_the_provisioner_refuses(
    workspace_factory: WorkspaceFactory, cluster: Cluster
) -> None:
    ws = workspace_factory(
        storage_class="standard-rwo",
        access_mode="ReadWriteMany",
        fallback_access_mode="ReadWriteOnce",
        bind_timeout=30,
    )
    assert ws.access_mode == "ReadWriteOnce"
    assert ws.result is not None and ws.result.bound
    assert ws.result.claim_access_modes == ["ReadWriteOnce"]
    a, b = ws.executor(image=cluster.image), ws.executor(image=cluster.image)  # one node: RWO is shared
    a.upload_file_content("f.txt", "rwo")
    assert _sh(b, "cat f.txt") == "rwo"


# A user's program: it makes a static workspace with an executor on it, then dies without stop().
CHILD = """
import json, sys, time
from kubectl_executor import WorkspaceVolume

options = json.loads(sys.argv[1])
ws = WorkspaceVolume(**options)
ex = ws.executor()
print(ws.name, ws.volume_name, ws.owner_id, ex.pod_name, ex.owner_id, flush=True)
time.sleep(600)
"""


def test_a_sigkilled_owners_workspace_is_collected_by_gc(cluster: Cluster) -> None:
    options = {
        "kubectl": cluster.kubectl,
        "kubeconfig": cluster.kubeconfig,
        "context": cluster.context,
        "namespace": cluster.namespace,
        "host_path": f"/srv/kx-tests/{cluster.namespace}/orphan",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **cluster.env},
        start_new_session=True,
    )
    kubectl = cluster.library_kubectl()
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        assert len(line) == 5, child.stderr.read() if child.stderr else ""
        claim, volume, owner_id, pod, pod_owner_id = line
        os.killpg(child.pid, signal.SIGKILL)  # no stop(), no atexit: only gc can clean up now
        child.wait()
        assert cluster.get_object("pvc", claim) is not None and cluster.get_object("pv", volume) is not None

        assert collect_garbage(kubectl, owner_id=owner_id) == []  # volumes are opt-in: they hold data
        assert cluster.get_object("pvc", claim) is not None
        pods = collect_garbage(kubectl, owner_id=pod_owner_id, include_volumes=True)
        assert [(c.kind, c.name, c.deleted) for c in pods] == [("pod", pod, True)]
        done = collect_garbage(kubectl, owner_id=owner_id, include_volumes=True)
        assert [(c.kind, c.name, c.reason, c.deleted) for c in done] == [("pvc", claim, "owner-gone", True)]
        cluster.wait_gone("pvc", claim)
        cluster.wait_gone("pv", volume)  # the static volume made for it goes along
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
        kubectl.close()
