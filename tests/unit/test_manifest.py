"""manifest.py: the pod this library creates, on plain dicts."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from kubectl_executor._cluster.labels import (
    CREATED_AT_LABEL,
    IMAGE_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_HOST_LABEL,
    OWNER_ID_LABEL,
    OWNER_PID_LABEL,
    SPEC_LABEL,
    WORK_DIR_ANNOTATION,
)
from kubectl_executor._cluster.manifest import (
    CONTAINER,
    build_pod_manifest,
    deep_merge,
    generate_pod_name,
    label_safe,
    ownership_labels,
    spec_hash,
    validate_dns_label,
)
from kubectl_executor.boundary import PodOptions, Resources
from kubectl_executor.errors import InvalidInputError

LABELS = ownership_labels("0123456789abcdef", 1767225600, 4242, host="build-host-1")


def build(**options: Any) -> dict[str, Any]:
    options.setdefault("name", "kx-0123456789")
    return build_pod_manifest(PodOptions(**options), LABELS)


def container(pod: dict[str, Any], name: str = CONTAINER) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in pod["spec"]["containers"] if c["name"] == name)
    return found


def volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(v for v in pod["spec"]["volumes"] if v["name"] == name)
    return found


# -- the "restricted" Pod Security Standard, written out as checks ---------------------------------

ALLOWED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# Baseline's allowed capability additions; restricted allows only NET_BIND_SERVICE to be added.
RESTRICTED_ADD_CAPS = {"NET_BIND_SERVICE"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Violations of the Pod Security Standards "restricted" profile (baseline rules included),
    per https://kubernetes.io/docs/concepts/security/pod-security-standards/ (v1.25+)."""
    spec = pod["spec"]
    psc = spec.get("securityContext") or {}
    containers = [
        *spec.get("containers", []),
        *spec.get("initContainers", []),
        *spec.get("ephemeralContainers", []),
    ]
    bad: list[str] = []
    # baseline
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            bad.append(f"spec.{key}")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        bad.append("hostProcess")
    for sysctl in psc.get("sysctls") or []:
        if sysctl["name"] not in SAFE_SYSCTLS:
            bad.append(f"sysctl {sysctl['name']}")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        bad.append("pod seccomp Unconfined")
    for vol in spec.get("volumes", []):
        kinds = set(vol) - {"name"}
        if "hostPath" in kinds:
            bad.append(f"hostPath volume {vol['name']}")
        # restricted: volume types
        if not kinds <= ALLOWED_VOLUME_TYPES:
            bad.append(f"volume type {sorted(kinds)} of {vol['name']}")
    for c in containers:
        csc = c.get("securityContext") or {}
        where = f"container {c['name']}"
        if csc.get("privileged"):
            bad.append(f"{where}: privileged")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{where}: hostPort")
        if csc.get("procMount", "Default") != "Default":
            bad.append(f"{where}: procMount")
        # restricted rules
        if csc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation must be false")
        if csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            bad.append(f"{where}: runAsNonRoot must be true")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{where}: runAsUser 0")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
        caps = csc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            bad.append(f"{where}: capabilities must drop ALL")
        if not set(caps.get("add") or []) <= RESTRICTED_ADD_CAPS:
            bad.append(f"{where}: capabilities add {caps.get('add')}")
    return bad


def test_default_pod_passes_the_restricted_profile() -> None:
    assert restricted_violations(build()) == []


def test_restricted_checker_catches_relaxed_pods() -> None:
    """The checker itself is not vacuous."""
    assert restricted_violations(build(hardened=False))
    privileged = build(
        pod_overrides={"spec": {"containers": [{"name": CONTAINER, "securityContext": {"privileged": True}}]}}
    )
    assert any("privileged" in v for v in restricted_violations(privileged))
    host = build(pod_overrides={"spec": {"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}})
    assert any("hostPath" in v for v in restricted_violations(host))


def test_restricted_profile_holds_with_pvc_and_options() -> None:
    pod = build(
        shared_pvc_name="team-data",
        node="node-1",
        read_only_root_filesystem=True,
        runtime_class_name="gvisor",
    )
    assert restricted_violations(pod) == []


# -- hardened defaults ---------------------------------------------------------------------------------


def test_hardened_defaults() -> None:
    pod = build()
    spec = pod["spec"]
    c = container(pod)
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert spec["activeDeadlineSeconds"] == 6 * 3600
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "2Gi", "ephemeral-storage": "4Gi"},
    }
    assert volume(pod, "workspace") == {"name": "workspace", "emptyDir": {"sizeLimit": "2Gi"}}
    assert {"name": "workspace", "mountPath": "/workspace"} in c["volumeMounts"]
    assert c["workingDir"] == "/workspace"
    # No DNS forced on the user's cluster (the seed pinned 8.8.8.8).
    assert "dnsPolicy" not in spec and "dnsConfig" not in spec
    assert "hostNetwork" not in spec
    assert "nodeSelector" not in spec
    assert "serviceAccountName" not in spec


def test_every_emptydir_is_size_limited() -> None:
    for vol in build()["spec"]["volumes"]:
        if "emptyDir" in vol:
            assert vol["emptyDir"].get("sizeLimit"), vol


def test_resources_and_deadline_are_configurable() -> None:
    pod = build(
        resources=Resources(cpu_request="1", memory_request="1Gi", cpu_limit=None, memory_limit="3Gi"),
        active_deadline_seconds=None,
        run_as_user=2000,
        run_as_group=3000,
    )
    assert container(pod)["resources"] == {
        "requests": {"cpu": "1", "memory": "1Gi"},
        "limits": {"memory": "3Gi", "ephemeral-storage": "4Gi"},
    }
    assert "activeDeadlineSeconds" not in pod["spec"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 2000
    assert pod["spec"]["securityContext"]["runAsGroup"] == 3000


def test_hardened_false_relaxes() -> None:
    pod = build(hardened=False)
    assert "securityContext" not in pod["spec"]
    assert "securityContext" not in container(pod)
    # Still no service account token and still bounded.
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "limits" in container(pod)["resources"]


def test_read_only_root_filesystem() -> None:
    assert (
        container(build(read_only_root_filesystem=True))["securityContext"]["readOnlyRootFilesystem"] is True
    )
    assert container(build(hardened=False, read_only_root_filesystem=True))["securityContext"] == {
        "readOnlyRootFilesystem": True
    }


def test_optional_spec_fields() -> None:
    pod = build(
        runtime_class_name="gvisor", service_account_name="runner", owner_references=[{"kind": "Pod"}]
    )
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["spec"]["serviceAccountName"] == "runner"
    assert pod["metadata"]["ownerReferences"] == [{"kind": "Pod"}]


# -- labels and annotations -------------------------------------------------------------------------------


def test_ownership_labels() -> None:
    pod = build(image="python:3.12-slim", work_dir="/work")
    labels = pod["metadata"]["labels"]
    assert labels[MANAGED_BY_LABEL] == MANAGED_BY == "kubectl-executor"
    assert labels[OWNER_ID_LABEL] == "0123456789abcdef"
    assert labels[OWNER_HOST_LABEL] == "build-host-1"
    assert labels[OWNER_PID_LABEL] == "4242"
    assert labels[CREATED_AT_LABEL] == "1767225600"
    assert labels[SPEC_LABEL] == spec_hash("python:3.12-slim", "/work")
    assert pod["metadata"]["annotations"] == {
        IMAGE_ANNOTATION: "python:3.12-slim",
        WORK_DIR_ANNOTATION: "/work",
    }


def test_spec_hash_separates_image_and_work_dir() -> None:
    assert spec_hash("a", "/w") != spec_hash("b", "/w")
    assert spec_hash("a", "/w") != spec_hash("a", "/x")
    assert len(spec_hash("a", "/w")) <= 63


def test_owner_host_is_made_label_safe() -> None:
    labels = ownership_labels("s", 1, 2, host="My Laptop (work).local")
    assert labels[OWNER_HOST_LABEL] == "My-Laptop--work-.local"
    assert label_safe("-" * 10) == "unknown"
    long = label_safe("h" * 100)
    assert len(long) == 63


def test_all_label_values_are_valid() -> None:
    import re

    for value in build()["metadata"]["labels"].values():
        assert len(value) <= 63
        assert re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", value), value


def test_user_labels_merge_and_are_validated() -> None:
    pod = build(labels={"team": "ml", "cost-center": "42"})
    assert pod["metadata"]["labels"]["team"] == "ml"
    assert pod["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    with pytest.raises(InvalidInputError, match="label value"):
        build(labels={"team": "x" * 64})
    with pytest.raises(InvalidInputError):
        build(labels={"team": "bad value"})
    with pytest.raises(InvalidInputError):
        ownership_labels("s" * 64, 1, 2)


# -- env, volumes, node ------------------------------------------------------------------------------------


def test_env_vars_become_container_env() -> None:
    env = container(build(env={"API_URL": "https://x", "EMPTY": ""}))["env"]
    assert {"name": "API_URL", "value": "https://x"} in env
    assert {"name": "EMPTY", "value": ""} in env
    assert {"name": "HOME", "value": "/home/kx"} in env


def test_user_env_overrides_a_default_once() -> None:
    env = container(build(env={"HOME": "/custom"}))["env"]
    assert [e for e in env if e["name"] == "HOME"] == [{"name": "HOME", "value": "/custom"}]


@pytest.mark.parametrize(("key", "value"), [("1BAD", "x"), ("A-B", "x"), ("OK", "a\nb"), ("OK", "a\x00b")])
def test_env_is_validated(key: str, value: str) -> None:
    with pytest.raises(InvalidInputError):
        build(env={key: value})


def test_shared_pvc_replaces_the_emptydir() -> None:
    pod = build(shared_pvc_name="team-data")
    assert volume(pod, "workspace") == {
        "name": "workspace",
        "persistentVolumeClaim": {"claimName": "team-data"},
    }


def test_node_pins_with_hostname_selector() -> None:
    assert build(node="worker-7")["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "worker-7"}


# -- pod_overrides ---------------------------------------------------------------------------------------------


def test_pod_overrides_deep_merge_containers_by_name() -> None:
    overrides = {
        "metadata": {"annotations": {"note": "x"}},
        "spec": {
            "containers": [
                {
                    "name": CONTAINER,
                    "resources": {"limits": {"cpu": "4"}},
                    "env": [{"name": "EXTRA", "value": "1"}],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
            "tolerations": [{"key": "gpu", "operator": "Exists"}],
        },
    }
    pod = build(pod_overrides=overrides)
    main = container(pod)
    assert main["image"] == "python:3-slim"  # kept
    assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}  # kept
    assert main["resources"]["limits"] == {"cpu": "4", "memory": "2Gi", "ephemeral-storage": "4Gi"}
    env_names = [e["name"] for e in main["env"]]
    assert "HOME" in env_names and "EXTRA" in env_names
    assert container(pod, "sidecar") == {"name": "sidecar", "image": "busybox"}
    assert [c["name"] for c in pod["spec"]["containers"]] == [CONTAINER, "sidecar"]
    assert pod["spec"]["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert pod["metadata"]["annotations"]["note"] == "x"
    assert pod["metadata"]["annotations"][IMAGE_ANNOTATION] == "python:3-slim"


def test_pod_overrides_scalars_replace() -> None:
    pod = build(pod_overrides={"spec": {"terminationGracePeriodSeconds": 30, "dnsPolicy": "None"}})
    assert pod["spec"]["terminationGracePeriodSeconds"] == 30
    assert pod["spec"]["dnsPolicy"] == "None"  # only when the user asks


def test_deep_merge_does_not_mutate_inputs() -> None:
    base = {"a": {"b": [{"name": "x", "v": 1}]}, "c": 1}
    override = {"a": {"b": [{"name": "x", "v": 2}, {"name": "y"}]}}
    base_copy, override_copy = copy.deepcopy(base), copy.deepcopy(override)
    merged = deep_merge(base, override)
    assert merged == {"a": {"b": [{"name": "x", "v": 2}, {"name": "y"}]}, "c": 1}
    assert base == base_copy and override == override_copy
    merged["a"]["b"][1]["name"] = "changed"
    assert override == override_copy


# -- names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "kx-1", "a" * 63, "0abc", "a-b-c"])
def test_valid_names(name: str) -> None:
    assert validate_dns_label(name) == name
    assert build(name=name)["metadata"]["name"] == name


@pytest.mark.parametrize("name", ["", "a" * 64, "Kx-1", "kx_1", "-kx", "kx-", "kx.1", "kx 1", "kx\n1", "ké"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(InvalidInputError, match="RFC 1123"):
        build(name=name)


def test_generated_names_are_valid_and_distinct() -> None:
    names = {generate_pod_name() for _ in range(50)}
    assert len(names) == 50
    for name in names:
        validate_dns_label(name)


def test_manifest_does_not_share_objects_with_pod_overrides() -> None:
    """A caller that edits one built manifest (a pool, a restart) must not change the next one."""
    opts = PodOptions(
        name="kx-1", pod_overrides={"spec": {"containers": [{"name": "sidecar", "image": "busybox"}]}}
    )
    first = build_pod_manifest(opts, LABELS)
    container(first, "sidecar")["image"] = "evil"
    second = build_pod_manifest(opts, LABELS)
    assert container(second, "sidecar")["image"] == "busybox"
