"""Workspace options and the claim and static-volume manifests they make (pure: unit-tested on dicts)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import (
    InvalidInputError,
)
from .labels import (
    CLAIM_LABEL,
    CLAIM_NAMESPACE_LABEL,
    LIFETIME_LABEL,
    LONG_LIVED,
    VOLUME_ANNOTATION,
)
from .manifest import validate_dns_label, validate_label_key, validate_label_value

AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"]


_QUANTITY = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")

# -- options and pure manifests -------------------------------------------------------------------


class WorkspaceOptions(BaseModel):
    """What shapes the claim (and the static volume, when ``host_path`` asks for one)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    name: str | None = None
    size: str = "1Gi"
    storage_class: str | None = Field(None, description="None: the cluster's default class; '': no class")
    access_mode: AccessMode = "ReadWriteMany"
    fallback_access_mode: AccessMode | None = Field(
        None, description="used when the provisioner refuses access_mode (e.g. RWO-only block storage)"
    )
    host_path: str | None = Field(None, description="make a static PersistentVolume on this node path")
    local: bool = Field(False, description="the static volume is a `local` volume (needs node) not hostPath")
    node: str | None = Field(None, description="pin the static volume (and the executors) to this node")
    labels: dict[str, str] = Field(default_factory=dict)
    bind_timeout: float = Field(120.0, gt=0)
    long_lived: bool = Field(False, description="gc leaves it alone (made by `workspace create`)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return validate_dns_label(value, "claim name") if value is not None else None

    @field_validator("size")
    @classmethod
    def _size(cls, value: str) -> str:
        if not _QUANTITY.match(value) or float(re.sub(r"[A-Za-z]+$", "", value) or 0) <= 0:
            raise ValueError(f"size {value!r} is not a positive Kubernetes quantity like 1Gi or 500Mi")
        return value

    @field_validator("storage_class")
    @classmethod
    def _storage_class(cls, value: str | None) -> str | None:
        if value and (len(value) > 253 or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", value)):
            raise ValueError(f"storage_class {value!r} is not a valid object name")
        return value

    @field_validator("host_path")
    @classmethod
    def _host_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if (
            not value.startswith("/")
            or ".." in PurePosixPath(value).parts
            or "\x00" in value
            or "\n" in value
        ):
            raise ValueError(f"host_path must be an absolute node path without '..', got {value!r}")
        return value

    @field_validator("node")
    @classmethod
    def _node(cls, value: str | None) -> str | None:
        return validate_label_value(value) if value else None

    @model_validator(mode="after")
    def _consistent(self) -> WorkspaceOptions:
        if self.local and (not self.host_path or not self.node):
            raise ValueError("local=True needs host_path and node (a local volume lives on one node)")
        if self.fallback_access_mode == self.access_mode:
            raise ValueError("fallback_access_mode must differ from access_mode")
        if self.host_path and self.fallback_access_mode:
            raise ValueError(
                "fallback_access_mode applies to provisioned volumes, not to a static host_path one"
            )
        for key, value in self.labels.items():
            validate_label_key(key)
            validate_label_value(value)
        return self

    @property
    def static(self) -> bool:
        return self.host_path is not None


def generate_claim_name() -> str:
    return f"kx-ws-{secrets.token_hex(5)}"


def generate_volume_name() -> str:
    return f"kx-pv-{secrets.token_hex(5)}"


def workspace_labels(opts: WorkspaceOptions, ownership: Mapping[str, str]) -> dict[str, str]:
    """Ownership labels (as on pods, so gc finds orphans), long-lived mark, then the user's."""
    labels = dict(ownership)
    if opts.long_lived:
        labels[LIFETIME_LABEL] = LONG_LIVED
    for key, value in opts.labels.items():
        if key in labels or key in (CLAIM_LABEL, CLAIM_NAMESPACE_LABEL):
            raise InvalidInputError(f"label {key!r} is set by kubectl-executor and cannot be overridden")
        labels[key] = value
    return labels


def build_claim_manifest(
    opts: WorkspaceOptions,
    name: str,
    labels: Mapping[str, str],
    *,
    access_mode: str | None = None,
    volume_name: str | None = None,
) -> dict[str, Any]:
    """The PersistentVolumeClaim. With ``volume_name`` (a static volume we make) it names that
    volume and its class ("" unless given), so no provisioner takes it first."""
    validate_dns_label(name, "claim name")
    spec: dict[str, Any] = {
        "accessModes": [access_mode or opts.access_mode],
        "resources": {"requests": {"storage": opts.size}},
        "volumeMode": "Filesystem",
    }
    metadata: dict[str, Any] = {"name": name, "labels": dict(labels)}
    if volume_name is not None:
        spec["storageClassName"] = opts.storage_class or ""
        spec["volumeName"] = volume_name
        metadata["annotations"] = {VOLUME_ANNOTATION: volume_name}
    elif opts.storage_class is not None:
        spec["storageClassName"] = opts.storage_class
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def build_volume_manifest(
    opts: WorkspaceOptions, name: str, claim: str, namespace: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The static PersistentVolume for ``opts.host_path``, reserved for our claim (claimRef) and,
    with ``node``, pinned to that node. Retain: we delete it ourselves, data stays on the node."""
    if opts.host_path is None:
        raise InvalidInputError("a static volume needs host_path")
    validate_dns_label(namespace, "namespace")
    source: dict[str, Any] = (
        {"local": {"path": opts.host_path}}
        if opts.local
        else {"hostPath": {"path": opts.host_path, "type": "DirectoryOrCreate"}}
    )
    spec: dict[str, Any] = {
        "capacity": {"storage": opts.size},
        "accessModes": [opts.access_mode],
        "persistentVolumeReclaimPolicy": "Retain",
        "storageClassName": opts.storage_class or "",
        "volumeMode": "Filesystem",
        "claimRef": {"namespace": namespace, "name": claim},
        **source,
    }
    if opts.node:
        term = {
            "matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [opts.node]}]
        }
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [term]}}
    all_labels = {**labels, CLAIM_LABEL: claim, CLAIM_NAMESPACE_LABEL: namespace}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": all_labels},
        "spec": spec,
    }
