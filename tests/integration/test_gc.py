"""gc through the real kubectl: orphans of a SIGKILLed process go, live and long-lived pods stay."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kx_cluster import Cluster, ExecutorFactory

from kubectl_executor import Kubectl
from kubectl_executor.gc import collect_garbage

pytestmark = pytest.mark.integration

# A user's program: it creates an executor and is in the middle of a long block when it dies.
CHILD = """
import json, sys
from kubectl_executor import CodeBlock, KubernetesCommandLineCodeExecutor

options = json.loads(sys.argv[1])
executor = KubernetesCommandLineCodeExecutor(timeout=600, **options)
print(executor.pod_name, executor.owner_id, flush=True)

def on_output(stream, chunk):
    print("RUNNING", flush=True)

block = "print('started', flush=True)\\nimport time\\ntime.sleep(600)"
executor.execute_code_blocks([CodeBlock(block, "python")], on_output=on_output)
"""


@pytest.fixture
def kubectl(cluster: Cluster) -> Iterator[Kubectl]:
    k = cluster.library_kubectl()
    yield k
    k.close()


def start_child(cluster: Cluster, **options: Any) -> tuple[subprocess.Popen[str], str, str]:
    """The child's pod name and owner id, once its block is running in the pod."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps({**cluster.executor_kwargs(), **options})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **cluster.env},
        start_new_session=True,  # its process group holds its kubectl too: cleaned up at the end
    )
    assert child.stdout is not None
    first = child.stdout.readline().split()
    if len(first) != 2:
        why = child.stderr.read() if child.stderr else ""
        kill_group(child)  # its pipes closed, its kubectl gone, before the failure
        pytest.fail(f"the child did not start its executor: {why}")
    return child, first[0], first[1]


def kill_group(child: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    for pipe in (child.stdout, child.stderr):
        if pipe is not None:
            pipe.close()


def wait_deleted(cluster: Cluster, name: str) -> None:
    cluster.run("wait", "--for=delete", f"pod/{name}", "-n", cluster.namespace, "--timeout=120s", check=False)


def test_sigkilled_owner_mid_run_leaves_no_pod_after_gc(cluster: Cluster, kubectl: Kubectl) -> None:
    child, pod, owner_id = start_child(cluster)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "RUNNING"  # the block is running in the pod
        os.kill(child.pid, signal.SIGKILL)  # no stop(), no atexit: only gc can clean up now
        child.wait()
        assert pod in {p["metadata"]["name"] for p in cluster.pods()}

        dry = collect_garbage(kubectl, owner_id=owner_id, dry_run=True)
        assert [(c.name, c.reason, c.deleted) for c in dry] == [(pod, "owner-gone", False)]
        assert pod in {p["metadata"]["name"] for p in cluster.pods()}

        done = collect_garbage(kubectl, owner_id=owner_id)
        assert [(c.name, c.reason, c.deleted) for c in done] == [(pod, "owner-gone", True)]
        wait_deleted(cluster, pod)
        listed = cluster.run("get", "pods", "-n", cluster.namespace, "-o", "json")
        assert pod not in {p["metadata"]["name"] for p in json.loads(listed.stdout)["items"]}
        if cluster.emulator is not None:
            assert cluster.emulator.pod_pids(cluster.namespace, pod) == []  # the sleeping block is gone too
    finally:
        kill_group(child)


def test_gc_keeps_pods_of_live_owners_and_long_lived_pods(
    cluster: Cluster, kubectl: Kubectl, executor_factory: ExecutorFactory
) -> None:
    live = executor_factory()  # owned by this (alive) test process
    up = subprocess.run(
        [sys.executable, "-m", "kubectl_executor", "up", "gc-keep-me"],
        env={
            **os.environ,
            **cluster.env,
            "KUBECTL_EXECUTOR_KUBECTL": cluster.kubectl,
            "KUBECTL_EXECUTOR_KUBECONFIG": cluster.kubeconfig or "",
            "KUBECTL_EXECUTOR_CONTEXT": cluster.context or "",
            "KUBECTL_EXECUTOR_NAMESPACE": cluster.namespace,
            "KUBECTL_EXECUTOR_IMAGE": cluster.image,
        },
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    try:
        # `up` has exited, so its owner pid is dead and the pod is "old enough": still kept.
        kept = collect_garbage(kubectl, older_than=0)
        assert {live.pod_name, "gc-keep-me"}.isdisjoint(c.name for c in kept)
        names = {p["metadata"]["name"] for p in cluster.pods()}
        assert {live.pod_name, "gc-keep-me"} <= names

        asked = collect_garbage(kubectl, older_than=0, include_long_lived=True)
        assert "gc-keep-me" in {c.name for c in asked if c.deleted}
        assert live.pod_name not in {c.name for c in asked}
        wait_deleted(cluster, "gc-keep-me")
        assert live.pod_name in {p["metadata"]["name"] for p in cluster.pods()}
    finally:
        cluster.run("delete", "pod", "gc-keep-me", "-n", cluster.namespace, "--ignore-not-found", check=False)


def test_cli_gc_collects_a_pod_past_its_deadline(cluster: Cluster) -> None:
    """A pod that hit activeDeadlineSeconds (Failed/DeadlineExceeded) is collected whoever owns it."""
    # The deadline counts from the pod's start on the node: a real node takes seconds to start
    # the sandbox and the container, and a pod past it before Ready never runs the block.
    child, pod, owner_id = start_child(cluster, active_deadline_seconds=2 if cluster.emulator else 20)
    # The owner dies first, without cleaning up: a live owner sees its block fail at the deadline
    # and deletes its own pod before gc looks (seen on the real cluster, where the deadline is long).
    kill_group(child)
    try:
        waited = cluster.run(
            "wait",
            "--for=jsonpath={.status.phase}=Failed",
            f"pod/{pod}",
            "-n",
            cluster.namespace,
            "--timeout=120s",
            check=False,
        )
        assert waited.returncode == 0, waited.stderr
        env = {
            **os.environ,
            **cluster.env,
            "KUBECTL_EXECUTOR_KUBECTL": cluster.kubectl,
            "KUBECTL_EXECUTOR_NAMESPACE": cluster.namespace,
        }
        if cluster.kubeconfig:
            env["KUBECTL_EXECUTOR_KUBECONFIG"] = cluster.kubeconfig
        if cluster.context:
            env["KUBECTL_EXECUTOR_CONTEXT"] = cluster.context
        # The owner is gone too, but the phase decides first.
        done = subprocess.run(
            [sys.executable, "-m", "kubectl_executor", "gc", "--owner-id", owner_id, "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout)
        assert [(c["name"], c["reason"], c["deleted"]) for c in found] == [(pod, "finished", True)]
        assert "DeadlineExceeded" in found[0]["detail"]
        wait_deleted(cluster, pod)
        assert pod not in {p["metadata"]["name"] for p in cluster.pods()}
    finally:
        kill_group(child)
