"""Pure: executor options -> the pod manifest (hardened by default) and its labels.

Nothing here talks to the cluster, so every rule of the pod is unit-tested on plain dicts.
"""

from __future__ import annotations

import copy
import hashlib
import re
import secrets
import socket
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError
from .labels import (
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

if TYPE_CHECKING:
    from ..boundary import PodOptions

CONTAINER = "executor"
HOME_DIR = "/home/kx"

# The container's main process: idles, and exits at once on SIGTERM so deletion is quick.
IDLE_COMMAND = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def validate_dns_label(value: str, what: str = "name") -> str:
    """RFC 1123 label: lower-case alphanumerics and '-', at most 63 characters."""
    if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
        raise InvalidInputError(
            f"invalid {what} {value!r}: must be an RFC 1123 label (lower-case letters, digits "
            "and '-', starting and ending with an alphanumeric, at most 63 characters)"
        )
    return value


def validate_label_value(value: str) -> str:
    if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
        raise InvalidInputError(f"invalid label value {value!r} (at most 63 characters)")
    return value


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def validate_label_key(key: str) -> str:
    """``[prefix/]name``: a DNS-subdomain prefix, a name of at most 63 characters."""
    prefix, _, name = key.rpartition("/") if isinstance(key, str) else ("", "", "")
    if not _LABEL_NAME.match(name) or ("/" in key and not _DNS_SUBDOMAIN.match(prefix)):
        raise InvalidInputError(
            f"invalid label key {key!r}: [DNS-subdomain prefix/]name, the name at most 63 characters of "
            "alphanumerics, '-', '_' and '.', starting and ending with an alphanumeric"
        )
    return key


def validate_env_name(name: str) -> str:
    if not _ENV_NAME.match(name):
        raise InvalidInputError(f"invalid environment variable name {name!r}")
    return name


def validate_env_value(name: str, value: str) -> str:
    if "\x00" in value or "\n" in value:
        raise InvalidInputError(f"environment variable {name} contains NUL or a line break")
    return value


def label_safe(value: str) -> str:
    """Squash free text (a host name) into a valid label value."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")
    return cleaned or "unknown"


def generate_pod_name() -> str:
    return f"kx-{secrets.token_hex(5)}"


def spec_hash(image: str, work_dir: str) -> str:
    """Label value that lets a reusing executor find pods of the same image and work_dir."""
    return hashlib.sha256(f"{image}\n{work_dir}".encode()).hexdigest()[:16]


def ownership_labels(owner_id: str, created_at: int, pid: int, host: str | None = None) -> dict[str, str]:
    """managed-by, owner id, owner host/pid, created-at: what ``gc`` and reuse select on."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        OWNER_ID_LABEL: validate_label_value(owner_id),
        OWNER_HOST_LABEL: label_safe(host or socket.gethostname()),
        OWNER_PID_LABEL: str(pid),
        CREATED_AT_LABEL: str(created_at),
    }


def build_pod_manifest(opts: PodOptions, labels: dict[str, str]) -> dict[str, Any]:
    """The pod. ``labels`` are the ownership labels; user labels and overrides merge on top."""
    validate_dns_label(opts.name, "pod name")
    all_labels = {**labels, SPEC_LABEL: spec_hash(opts.image, opts.work_dir)}
    for key, value in opts.labels.items():
        if key in all_labels:
            # gc, reuse and the NetworkPolicy select on these: a user value would hide the pod.
            raise InvalidInputError(f"label {key!r} is set by kubectl-executor and cannot be overridden")
        all_labels[validate_label_key(key)] = validate_label_value(value)

    env = [{"name": "HOME", "value": HOME_DIR}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
    for key, value in opts.env.items():
        env = [e for e in env if e["name"] != key]
        env.append({"name": validate_env_name(key), "value": validate_env_value(key, value)})

    workspace: dict[str, Any]
    if opts.shared_pvc_name:
        workspace = {"persistentVolumeClaim": {"claimName": opts.shared_pvc_name}}
    else:
        workspace = {"emptyDir": {"sizeLimit": opts.workspace_size_limit}}
        if not opts.workspace_size_limit:
            workspace = {"emptyDir": {}}
    volumes = [
        {"name": "workspace", **workspace},
        {"name": "home", "emptyDir": {"sizeLimit": "1Gi"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    mounts = [
        {"name": "workspace", "mountPath": opts.work_dir},
        {"name": "home", "mountPath": HOME_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]

    resources: dict[str, Any] = {
        "requests": {"cpu": opts.resources.cpu_request, "memory": opts.resources.memory_request},
    }
    limits = {
        k: v
        for k, v in (
            ("cpu", opts.resources.cpu_limit),
            ("memory", opts.resources.memory_limit),
            ("ephemeral-storage", opts.resources.ephemeral_storage_limit),
        )
        if v
    }
    if limits:
        resources["limits"] = limits

    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "command": IDLE_COMMAND,
        "workingDir": opts.work_dir,
        "env": env,
        "resources": resources,
        "volumeMounts": mounts,
    }
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 2,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": volumes,
    }
    if opts.hardened:
        spec["securityContext"] = {
            "runAsNonRoot": True,
            "runAsUser": opts.run_as_user,
            "runAsGroup": opts.group,
            "fsGroup": opts.group,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": opts.read_only_root_filesystem,
        }
    elif opts.read_only_root_filesystem:
        container["securityContext"] = {"readOnlyRootFilesystem": True}
    if opts.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = opts.active_deadline_seconds
    if opts.node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": opts.node}
    if opts.runtime_class_name:
        spec["runtimeClassName"] = opts.runtime_class_name
    if opts.service_account_name:
        spec["serviceAccountName"] = opts.service_account_name

    metadata: dict[str, Any] = {
        "name": opts.name,
        "labels": all_labels,
        "annotations": {IMAGE_ANNOTATION: opts.image, WORK_DIR_ANNOTATION: opts.work_dir},
    }
    if opts.owner_references:
        metadata["ownerReferences"] = opts.owner_references
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return deep_merge(pod, opts.pod_overrides)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Dicts merge recursively, lists of named dicts (containers, volumes) merge by name, as a
    strategic merge patch would; anything else in ``override`` replaces. Inputs are not mutated."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = deep_merge(current, value)
        elif value and _named_list(value) and isinstance(current, list) and _named_list(current):
            by_name = {item["name"]: item for item in current}
            for item in value:
                name = item["name"]
                by_name[name] = deep_merge(by_name[name], item) if name in by_name else copy.deepcopy(item)
            merged[key] = list(by_name.values())
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)
