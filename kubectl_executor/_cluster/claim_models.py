"""Claims, volumes and their events as kubectl prints them, and the pure decisions read from them
(what a wait concludes, what ``workspace list`` shows)."""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from .labels import (
    CREATED_AT_LABEL,
    LIFETIME_LABEL,
    LONG_LIVED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_HOST_LABEL,
    OWNER_ID_LABEL,
    OWNER_PID_LABEL,
    VOLUME_ANNOTATION,
)
from .models import ObjectMeta

_SHORT_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


# -- models of what kubectl prints ----------------------------------------------------------------


class _K8s(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)


class ClaimSpec(_K8s):
    access_modes: list[str] = Field(default_factory=list, alias="accessModes")
    storage_class_name: str | None = Field(None, alias="storageClassName")
    volume_name: str | None = Field(None, alias="volumeName")
    resources: dict[str, Any] = Field(default_factory=dict)


class ClaimStatus(_K8s):
    phase: str = "Pending"
    access_modes: list[str] = Field(default_factory=list, alias="accessModes")
    capacity: dict[str, str] = Field(default_factory=dict)


class PersistentVolumeClaim(_K8s):
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta())
    spec: ClaimSpec = Field(default_factory=lambda: ClaimSpec())
    status: ClaimStatus = Field(default_factory=lambda: ClaimStatus())

    @property
    def requested_storage(self) -> str | None:
        value = (self.spec.resources.get("requests") or {}).get("storage")
        return str(value) if value is not None else None

    @property
    def bound(self) -> bool:
        return self.status.phase == "Bound" and bool(self.spec.volume_name)


class VolumeSpec(_K8s):
    access_modes: list[str] = Field(default_factory=list, alias="accessModes")
    capacity: dict[str, str] = Field(default_factory=dict)
    storage_class_name: str | None = Field(None, alias="storageClassName")
    claim_ref: dict[str, Any] | None = Field(None, alias="claimRef")


class VolumeStatus(_K8s):
    phase: str = "Pending"
    message: str | None = None


class PersistentVolume(_K8s):
    metadata: ObjectMeta = Field(default_factory=lambda: ObjectMeta())
    spec: VolumeSpec = Field(default_factory=lambda: VolumeSpec())
    status: VolumeStatus = Field(default_factory=lambda: VolumeStatus())


class ClaimEvent(_K8s):
    type: str = "Normal"
    reason: str = ""
    message: str = ""
    count: int | None = None
    last_timestamp: str | None = Field(None, alias="lastTimestamp")
    event_time: str | None = Field(None, alias="eventTime")

    def describe(self) -> str:
        times = f" (x{self.count})" if self.count and self.count > 1 else ""
        return f"{self.type} {self.reason}: {self.message}{times}"


class PVCValidationResult(BaseModel):
    """The claim and the volume bound to it, as the seed's volume manager reported them.

    ``volume_status`` is None when the volume could not be read (cluster-scoped RBAC), in which
    case name, capacity and access modes come from the claim's own status. ``binding_deferred``:
    the class binds only when the first pod mounts the claim (WaitForFirstConsumer).
    """

    model_config = ConfigDict(frozen=True, defer_build=True)

    claim_name: str
    namespace: str
    claim_status: str
    storage_class: str | None
    claim_access_modes: list[str]
    requested_storage: str | None
    volume_name: str | None
    volume_status: str | None
    volume_capacity: str | None
    volume_access_modes: list[str]
    binding_deferred: bool = False

    @property
    def bound(self) -> bool:
        return self.claim_status == "Bound" and self.volume_name is not None

    @classmethod
    def from_objects(
        cls,
        claim: Mapping[str, Any] | PersistentVolumeClaim,
        volume: Mapping[str, Any] | PersistentVolume | None = None,
        *,
        binding_deferred: bool = False,
    ) -> PVCValidationResult:
        """From ``kubectl get pvc -o json`` (and ``get pv -o json`` of its volume, if readable)."""
        pvc = (
            claim if isinstance(claim, PersistentVolumeClaim) else PersistentVolumeClaim.model_validate(claim)
        )
        pv = (
            volume
            if volume is None or isinstance(volume, PersistentVolume)
            else PersistentVolume.model_validate(volume)
        )
        if pv is not None and pv.metadata.name != pvc.spec.volume_name:
            pv = None  # not this claim's volume (it was rebound or the name is stale)
        if pv is not None:
            capacity = pv.spec.capacity.get("storage")
            modes = list(pv.spec.access_modes)
            status: str | None = pv.status.phase
        else:
            capacity = pvc.status.capacity.get("storage")
            modes = list(pvc.status.access_modes)
            status = None
        return cls(
            claim_name=pvc.metadata.name,
            namespace=pvc.metadata.namespace,
            claim_status="Terminating" if pvc.metadata.deletion_timestamp else pvc.status.phase,
            storage_class=pvc.spec.storage_class_name,
            claim_access_modes=list(pvc.spec.access_modes),
            requested_storage=pvc.requested_storage,
            volume_name=pvc.spec.volume_name or None,
            volume_status=status,
            volume_capacity=str(capacity) if capacity is not None else None,
            volume_access_modes=modes,
            binding_deferred=binding_deferred and not pvc.bound,
        )


# -- deciding from the events (pure) ---------------------------------------------------------------

DEFERRED = "deferred"
CLASS_MISSING = "class-missing"
FALLBACK = "fallback"


def decide_from_events(events: Sequence[ClaimEvent], *, can_fall_back: bool) -> str | None:
    """What a Pending claim's events mean for the wait: ``deferred`` (binds with its first pod),
    ``class-missing`` (never binds), ``fallback`` (the provisioner refused; try the fallback
    access mode), or None (keep waiting)."""
    if any(e.reason == "WaitForFirstConsumer" for e in events):
        return DEFERRED
    failed = [e for e in events if e.reason == "ProvisioningFailed" and e.type == "Warning"]
    if any('storageclass.storage.k8s.io "' in e.message and "not found" in e.message for e in failed):
        return CLASS_MISSING
    if failed and can_fall_back:
        return FALLBACK
    return None


def events_selector(claim: str, uid: str | None = None) -> str:
    parts = ["involvedObject.kind=PersistentVolumeClaim", f"involvedObject.name={claim}"]
    if uid:
        parts.append(f"involvedObject.uid={uid}")
    return ",".join(parts)


def sorted_events(items: Sequence[Mapping[str, Any]]) -> list[ClaimEvent]:
    events = [ClaimEvent.model_validate(i) for i in items]
    return sorted(events, key=lambda e: e.last_timestamp or e.event_time or "")


class WorkspaceInfo(BaseModel):
    """One of this tool's claims, for ``workspace list``."""

    model_config = ConfigDict(defer_build=True)

    name: str
    namespace: str
    status: str
    volume: str | None
    capacity: str | None
    access_modes: list[str]
    storage_class: str | None
    long_lived: bool
    static_volume: str | None
    owner_id: str | None
    owner: str
    age_seconds: int | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def session(self) -> str | None:
        """Deprecated: :attr:`owner_id` under its former name, kept in ``workspace list --json``."""
        return self.owner_id

    @property
    def short_access_modes(self) -> str:
        return ",".join(_SHORT_MODES.get(m, m) for m in self.access_modes)


def workspace_selector(*, long_lived: bool = False) -> str:
    sel = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    return sel + (f",{LIFETIME_LABEL}={LONG_LIVED}" if long_lived else "")


def created_at(meta: ObjectMeta) -> float | None:
    """The created-at label (epoch seconds), else the API server's creationTimestamp."""
    raw = meta.labels.get(CREATED_AT_LABEL)
    if raw and raw.isdigit():
        return float(raw)
    if meta.creation_timestamp:
        try:
            return float(calendar.timegm(time.strptime(meta.creation_timestamp, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            return None
    return None


def workspace_info(claim: PersistentVolumeClaim, now: float | None = None) -> WorkspaceInfo:
    """Pure: a claim as ``workspace list`` shows it."""
    labels = claim.metadata.labels
    created = created_at(claim.metadata)
    now = time.time() if now is None else now
    return WorkspaceInfo(
        name=claim.metadata.name,
        namespace=claim.metadata.namespace,
        status="Terminating" if claim.metadata.deletion_timestamp else claim.status.phase,
        volume=claim.spec.volume_name,
        capacity=claim.status.capacity.get("storage") or claim.requested_storage,
        access_modes=list(claim.status.access_modes or claim.spec.access_modes),
        storage_class=claim.spec.storage_class_name,
        long_lived=labels.get(LIFETIME_LABEL) == LONG_LIVED,
        static_volume=claim.metadata.annotations.get(VOLUME_ANNOTATION),
        owner_id=labels.get(OWNER_ID_LABEL),
        owner=f"{labels.get(OWNER_HOST_LABEL, '?')}:{labels.get(OWNER_PID_LABEL, '?')}",
        age_seconds=None if created is None else round(now - created),
    )
