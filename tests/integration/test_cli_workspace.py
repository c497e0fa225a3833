"""`kubectl-executor workspace create/list/delete` as users run it: a process, the real kubectl,
the emulator (or a real cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import CodeBlock

pytestmark = pytest.mark.integration


def kx(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process; the cluster reaches it only through KUBECTL_EXECUTOR_* variables."""
    env = {**os.environ, **cluster.env}
    env.update(KUBECTL_EXECUTOR_KUBECTL=cluster.kubectl, KUBECTL_EXECUTOR_NAMESPACE=cluster.namespace)
    if cluster.kubeconfig:
        env["KUBECTL_EXECUTOR_KUBECONFIG"] = cluster.kubeconfig
    if cluster.context:
        env["KUBECTL_EXECUTOR_CONTEXT"] = cluster.context
    return subprocess.run(
        [sys.executable, "-m", "kubectl_executor", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )


def test_create_list_share_and_delete(cluster: Cluster, executor_factory: ExecutorFactory) -> None:
    made = kx(cluster, "workspace", "create", "cli-ws", "--size", "2Gi", "-o", "json")
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)
    assert result["claim_name"] == "cli-ws" and result["claim_status"] == "Bound"
    assert result["volume_status"] == "Bound" and result["volume_capacity"] == "2Gi"
    volume = result["volume_name"]
    try:
        assert cluster.get_object("pvc", "cli-ws") is not None  # kept after the command ended
        listed = json.loads(kx(cluster, "workspace", "list", "-o", "json").stdout)
        row = next(w for w in listed if w["name"] == "cli-ws")
        assert row["long_lived"] and row["status"] == "Bound" and row["volume"] == volume
        table = kx(cluster, "workspace", "list", "--long-lived").stdout.splitlines()
        assert any(line.split()[:3] == ["cli-ws", "Bound", volume] for line in table[1:])
        # executors share it through shared_pvc_name
        writer = executor_factory(shared_pvc_name="cli-ws")
        reader = executor_factory(shared_pvc_name="cli-ws")
        writer.upload_file_content("hello.txt", "from the writer")
        read = reader.execute_code_blocks([CodeBlock("cat hello.txt", "sh")])
        assert read.exit_code == 0 and read.stdout == "from the writer"
        writer.stop()
        reader.stop()
        # gc leaves a long-lived workspace alone even though the process that made it is gone
        collected = json.loads(kx(cluster, "gc", "--volumes", "-o", "json").stdout)
        assert "cli-ws" not in [c["name"] for c in collected]
        assert cluster.get_object("pvc", "cli-ws") is not None
    finally:
        deleted = kx(cluster, "workspace", "delete", "cli-ws", "--wait", "-o", "json")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout) == {"deleted": ["cli-ws"], "not_found": []}
    assert cluster.get_object("pvc", "cli-ws") is None
    cluster.wait_gone("pv", volume)


def test_static_workspace_and_its_volume_go_together(cluster: Cluster) -> None:
    path = f"/srv/kx-tests/{cluster.namespace}/cli"
    made = kx(
        cluster,
        "workspace",
        "create",
        "cli-static",
        "--host-path",
        path,
        "--node",
        cluster.node_name(),
        "-o",
        "json",
    )
    assert made.returncode == 0, made.stderr
    volume = json.loads(made.stdout)["volume_name"]
    pv = cluster.get_object("pv", volume)
    assert pv is not None and pv["spec"]["hostPath"]["path"] == path
    listed = json.loads(kx(cluster, "workspace", "list", "-o", "json").stdout)
    assert next(w for w in listed if w["name"] == "cli-static")["static_volume"] == volume
    deleted = kx(cluster, "workspace", "delete", "cli-static")
    assert deleted.returncode == 0 and "deleted workspace cli-static" in deleted.stdout
    cluster.wait_gone("pvc", "cli-static")
    cluster.wait_gone("pv", volume)


def test_a_workspace_nothing_binds_exits_125_naming_the_class(cluster: Cluster) -> None:
    done = kx(
        cluster,
        "workspace",
        "create",
        "cli-never",
        "--storage-class",
        "no-provisioner",
        "--bind-timeout",
        "2",
    )
    assert done.returncode == 125
    assert 'storage class "no-provisioner"' in done.stderr and "no provisioner bound it" in done.stderr
    assert "ProvisioningFailed" in done.stderr
    cluster.wait_gone("pvc", "cli-never")


def test_delete_refuses_a_claim_the_tool_did_not_make(cluster: Cluster) -> None:
    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cli-theirs"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    cluster.run("apply", "-n", cluster.namespace, "-f", "-", input=json.dumps(claim).encode())
    try:
        done = kx(cluster, "workspace", "delete", "cli-theirs")
        assert done.returncode == 125 and "not made by kubectl-executor" in done.stderr
        assert cluster.get_object("pvc", "cli-theirs") is not None
        missing = kx(cluster, "workspace", "delete", "cli-ghost")
        assert missing.returncode == 0 and "workspace cli-ghost not found" in missing.stderr
    finally:
        cluster.run("delete", "pvc", "cli-theirs", "-n", cluster.namespace, "--wait=false")
