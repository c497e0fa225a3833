"""Pod lifecycle and admission: failure images, crashes, deadlines, Pod Security, volumes."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from emu_helpers import Kubectl, phase, pod_manifest, start_pod, wait_for
from kube_emulator import Emulator


def _status(emu: Emulator, ns: str, name: str) -> dict[str, Any]:
    pod = emu.get("pods", name, ns)
    assert pod is not None
    return pod.get("status") or {}


def _container_state(emu: Emulator, ns: str, name: str) -> dict[str, Any]:
    statuses = _status(emu, ns, name).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


@pytest.mark.parametrize(
    "image,reason",
    [
        ("fail/errimagepull", "ErrImagePull"),
        ("fail/imagepullbackoff:v1", "ImagePullBackOff"),
        ("fail/createcontainerconfigerror", "CreateContainerConfigError"),
    ],
)
def test_failure_images_wait_with_reason(
    kubectl132: Kubectl, emulator: Emulator, image: str, reason: str
) -> None:
    ns = kubectl132.namespace
    emulator.create(pod_manifest("bad", image), namespace=ns)
    wait_for(
        lambda: (_container_state(emulator, ns, "bad").get("waiting") or {}).get("reason") == reason,
        what=reason,
    )
    waiting = _container_state(emulator, ns, "bad")["waiting"]
    assert waiting["message"]
    assert phase(emulator, ns, "bad") == "Pending"
    row = kubectl132.ok("get", "pod", "bad", "--no-headers").split()
    assert row[1:3] == ["0/1", reason]


def test_unschedulable(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    emulator.create(pod_manifest("nowhere", "fail/unschedulable"), namespace=ns)
    cond = next(c for c in _status(emulator, ns, "nowhere")["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert cond["message"].startswith("0/1 nodes are available")
    waited = kubectl132.run("wait", "--for=condition=PodScheduled", "pod/nowhere", "--timeout=1s")
    assert waited.returncode != 0


@pytest.mark.parametrize("policy", ["Never", "Always"])
def test_crashing_container(emulator: Emulator, ns: str, policy: str) -> None:
    emulator.create(pod_manifest("crash", "fail/crash", restartPolicy=policy), namespace=ns)
    if policy == "Never":
        wait_for(lambda: phase(emulator, ns, "crash") == "Failed", what="Failed")
        assert _container_state(emulator, ns, "crash")["terminated"]["exitCode"] == 1
    else:
        wait_for(
            lambda: (
                (_container_state(emulator, ns, "crash").get("waiting") or {}).get("reason")
                == "CrashLoopBackOff"
            ),
            what="CrashLoopBackOff",
        )
        cs = _status(emulator, ns, "crash")["containerStatuses"][0]
        assert cs["restartCount"] >= 1 and cs["lastState"]["terminated"]["exitCode"] == 1
        assert cs["ready"] is False


def test_completed_pod_logs_and_exec_refused(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    emulator.create(
        pod_manifest(
            "job",
            restartPolicy="Never",
            containers=[
                {"name": "main", "image": "python:3-slim", "command": ["sh", "-c", "echo from-main; exit 0"]}
            ],
        ),
        namespace=ns,
    )
    wait_for(lambda: phase(emulator, ns, "job") == "Succeeded", what="Succeeded")
    assert _container_state(emulator, ns, "job")["terminated"]["reason"] == "Completed"
    assert kubectl132.ok("logs", "job") == "from-main\n"
    res = kubectl132.run("exec", "job", "--", "true")
    assert res.returncode != 0 and b"completed pod" in res.stderr


def test_run_as_non_root_without_user_is_config_error(emulator: Emulator, ns: str) -> None:
    emulator.create(pod_manifest("rootish", securityContext={"runAsNonRoot": True}), namespace=ns)
    wait_for(
        lambda: (
            (_container_state(emulator, ns, "rootish").get("waiting") or {}).get("reason")
            not in (None, "ContainerCreating")
        ),
        what="the start attempt",
    )
    waiting = _container_state(emulator, ns, "rootish")["waiting"]
    assert waiting["reason"] == "CreateContainerConfigError"
    assert waiting["message"].startswith("container has runAsNonRoot and image will run as root")


def test_active_deadline_seconds(emulator: Emulator, ns: str) -> None:
    t0 = time.monotonic()
    start_pod(emulator, ns, "short", activeDeadlineSeconds=1)
    assert emulator.pod_pids(ns, "short")
    wait_for(lambda: phase(emulator, ns, "short") == "Failed", timeout=5, what="deadline")
    assert 0.9 < time.monotonic() - t0 < 2.0
    status = _status(emulator, ns, "short")
    assert status["reason"] == "DeadlineExceeded"
    assert emulator.pod_pids(ns, "short") == []


RESTRICTED_NS = {"pod-security.kubernetes.io/enforce": "restricted"}


def test_restricted_namespace_refuses_root_pod(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    kubectl132.ok("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    res = kubectl132.run("apply", "-f", "-", input=yaml.safe_dump(pod_manifest("r")).encode())
    assert res.returncode != 0
    err = res.stderr.decode()
    assert "(Forbidden)" in err
    assert (
        'pods "r" is forbidden: violates PodSecurity "restricted:latest": '
        'allowPrivilegeEscalation != false (container "main" must set '
        "securityContext.allowPrivilegeEscalation=false), unrestricted capabilities "
        '(container "main" must set securityContext.capabilities.drop=["ALL"]), '
        'runAsNonRoot != true (pod or container "main" must set '
        'securityContext.runAsNonRoot=true), seccompProfile (pod or container "main" must '
        'set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
    ) in err
    assert emulator.get("pods", "r", ns) is None


def test_restricted_namespace_admits_hardened_pod(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    kubectl132.ok("label", "namespace", ns, "pod-security.kubernetes.io/enforce=restricted")
    pod = pod_manifest(
        "hard",
        securityContext={
            "runAsNonRoot": True,
            "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        containers=[
            {
                "name": "main",
                "image": "python:3-slim",
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            }
        ],
    )
    kubectl132.ok("apply", "-f", "-", input=yaml.safe_dump(pod).encode())
    kubectl132.ok("wait", "--for=condition=Ready", "pod/hard", "--timeout=10s")
    assert kubectl132.ok("exec", "hard", "--", "id", "-u").strip() == "1000"
    # hostPath and privileged are refused with their own reasons
    bad = pod_manifest(
        "bad",
        volumes=[{"name": "h", "hostPath": {"path": "/etc"}}],
        containers=[{"name": "main", "image": "x", "securityContext": {"privileged": True}}],
    )
    res = kubectl132.run("apply", "-f", "-", input=yaml.safe_dump(bad).encode())
    err = res.stderr.decode()
    assert 'hostPath volumes (volume "h")' in err
    assert 'privileged (container "main" must not set securityContext.privileged=true)' in err
    assert 'restricted volume types (volume "h" uses restricted volume type "hostPath")' in err


def test_pvc_is_shared_between_pods(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    mount = {"name": "data", "persistentVolumeClaim": {"claimName": "shared"}}

    def pod(name: str) -> dict[str, Any]:
        return pod_manifest(
            name,
            volumes=[mount],
            containers=[
                {
                    "name": "main",
                    "image": "python:3-slim",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }
            ],
        )

    # a pod whose claim does not exist yet waits, and starts once the claim is created
    emulator.create(pod("writer"), namespace=ns)
    cond = _status(emulator, ns, "writer")["conditions"][0]
    assert cond["reason"] == "Unschedulable" and '"shared" not found' in cond["message"]
    emulator.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "shared"},
            "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        namespace=ns,
    )
    wait_for(lambda: phase(emulator, ns, "writer") == "Running", what="writer Running")
    start_pod(emulator, ns, "reader", volumes=[mount], containers=pod("reader")["spec"]["containers"])
    kubectl132.ok("exec", "writer", "--", "sh", "-c", "echo shared-bytes > /data/f")
    assert kubectl132.ok("exec", "reader", "--", "cat", "/data/f") == "shared-bytes\n"


def test_env_sources_and_multi_container(kubectl132: Kubectl, emulator: Emulator) -> None:
    ns = kubectl132.namespace
    emulator.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"greeting": "hello"}},
        namespace=ns,
    )
    start_pod(
        emulator,
        ns,
        "envy",
        containers=[
            {
                "name": "main",
                "image": "python:3-slim",
                "workingDir": "/work",
                "env": [
                    {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {
                        "name": "GREETING",
                        "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}},
                    },
                    {"name": "BOTH", "value": "$(GREETING)-$(MY_NAME)"},
                ],
            },
            {"name": "side", "image": "busybox"},
        ],
    )
    out = kubectl132.ok(
        "exec", "envy", "-c", "main", "--", "sh", "-c", 'echo "$MY_NAME $GREETING $BOTH $(pwd)"'
    )
    assert out == "envy hello hello-envy /work\n"
    res = kubectl132.run("exec", "envy", "-c", "side", "--", "python3", "-c", "1")
    assert res.returncode == 127  # busybox image: no python
    res = kubectl132.run("exec", "envy", "--", "true")
    assert res.returncode == 0  # kubectl defaults to the first container
