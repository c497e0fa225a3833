"""Shared workspaces: a PersistentVolumeClaim that several executors mount, through kubectl only.

::

    with WorkspaceVolume(size="1Gi") as ws:               # creates the claim, waits until Bound
        with ws.executor() as a, ws.executor() as b:       # two pods, the claim at /workspace
            a.upload_file_content("data.csv", b"1,2\\n")
            b.execute_code_blocks([CodeBlock("cat data.csv", "sh")])
    # the claim (and the static volume, if it made one) is deleted; nothing else is touched

``WorkspaceVolume.existing("team-data")`` uses a claim someone else made and never deletes it.
A static hostPath/local PersistentVolume is made only when asked for (``host_path=``), for
single-node clusters without a provisioner.

Why it waits the way it does: a claim whose storage class has no working provisioner stays
Pending for ever, silently; the only explanation is in the claim's Events. So the wait reads them
and says which class and why in :class:`ClaimNotBoundError`. ``WaitForFirstConsumer`` classes (the
default on kind and many clouds) bind only once a pod mounts the claim: the wait stops there
(``binding_deferred``) instead of waiting for a binding that cannot come first.

The manifests and the association report are pure (unit-tested on dicts); the kubectl calls
around them are thin.
"""

from __future__ import annotations

import atexit
import calendar
import contextlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import PurePosixPath
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._cluster.gc import GcCandidate, GcPolicy, plan, selector
from ._cluster.kubectl import Kubectl, classify_failure
from ._cluster.labels import (
    CLAIM_LABEL,
    CLAIM_NAMESPACE_LABEL,
    CREATED_AT_LABEL,
    LIFETIME_LABEL,
    LONG_LIVED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_HOST_LABEL,
    OWNER_PID_LABEL,
    SESSION_LABEL,
    VOLUME_ANNOTATION,
)
from ._cluster.manifest import ownership_labels, validate_dns_label, validate_label_key, validate_label_value
from ._cluster.models import ObjectMeta, Pod, PodStatus
from ._cluster.pod import WATCH_ROUND_FIRST, WATCH_ROUND_MAX, ObjectWatch
from ._cluster.retry import RetryPolicy
from ._cluster.runner import Runner
from ._exec.protocol import new_nonce
from .boundary import ClusterAccess
from .errors import (
    ClaimNotBoundError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    KubectlError,
    KubectlExecutorError,
    NotFoundError,
    TransientError,
)
from .executor import KubernetesCommandLineCodeExecutor

logger = logging.getLogger(__name__)

AccessMode = Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"]


_QUANTITY = re.compile(r"^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
_SHORT_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


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


# -- kubectl calls ---------------------------------------------------------------------------------


def get_claim(kubectl: Kubectl, name: str) -> PersistentVolumeClaim | None:
    try:
        return PersistentVolumeClaim.model_validate(kubectl.json(["get", "pvc", name]))
    except NotFoundError:
        return None


def get_volume(kubectl: Kubectl, name: str) -> PersistentVolume | None:
    """The volume, or None when it does not exist or we may not read volumes (cluster-scoped)."""
    try:
        return PersistentVolume.model_validate(kubectl.json(["get", "pv", name]))
    except (NotFoundError, ForbiddenError) as exc:
        logger.debug("cannot read PersistentVolume %s: %s", name, exc.message)
        return None


def claim_events(kubectl: Kubectl, claim: str, uid: str | None = None) -> list[ClaimEvent]:
    """The claim's events, oldest first; empty when events cannot be read (logged)."""
    try:
        data = kubectl.json(["get", "events", "--field-selector", events_selector(claim, uid)])
    except KubectlError as exc:
        logger.debug("cannot read the events of claim %s: %s", claim, exc.message)
        return []
    return sorted_events(data.get("items") or [])


def association(kubectl: Kubectl, name: str, *, binding_deferred: bool = False) -> PVCValidationResult:
    """The claim and its volume as they are now."""
    claim = get_claim(kubectl, name)
    if claim is None:
        raise NotFoundError(
            kubectl.argv(["get", "pvc", name]), 1, "", f'persistentvolumeclaims "{name}" not found'
        )
    volume = get_volume(kubectl, claim.spec.volume_name) if claim.spec.volume_name else None
    return PVCValidationResult.from_objects(claim, volume, binding_deferred=binding_deferred)


class _ClaimWatch(ObjectWatch):
    """Watches a claim until it is bound (or lost, or being deleted)."""

    resource = "pvc"

    def __init__(self) -> None:
        super().__init__()
        self.last: PersistentVolumeClaim | None = None

    def accept(self, obj: dict[str, Any]) -> bool:
        claim = PersistentVolumeClaim.model_validate(obj)
        self.last = claim
        return bool(claim.bound or claim.status.phase == "Lost" or claim.metadata.deletion_timestamp)


# -- the workspace ---------------------------------------------------------------------------------


class WorkspaceVolume:
    """A PersistentVolumeClaim for executors to share (``shared_pvc_name``), made through kubectl.

    Created (and waited for) by the constructor unless ``start=False``; :meth:`stop` (or the
    ``with`` exit, or best effort at interpreter exit) stops the executors made by
    :meth:`executor` and deletes the claim and static volume it created, and nothing else.
    ``manage=False`` (see :meth:`existing`) uses an existing claim and never deletes it;
    ``keep=True`` creates one and leaves it (``kubectl-executor workspace create``).
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        size: str = "1Gi",
        storage_class: str | None = None,
        access_mode: AccessMode = "ReadWriteMany",
        fallback_access_mode: AccessMode | None = None,
        host_path: str | None = None,
        local: bool = False,
        node: str | None = None,
        labels: dict[str, str] | None = None,
        bind_timeout: float = 120.0,
        long_lived: bool = False,
        manage: bool = True,
        keep: bool = False,
        start: bool = True,
        namespace: str | None = None,
        kubectl: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        remote_control_plane: str | None = None,
        kube_token: str | None = None,
        certificate_authority: str | None = None,
        insecure_skip_tls_verify: bool = False,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        try:
            self._options = WorkspaceOptions(
                name=name,
                size=size,
                storage_class=storage_class,
                access_mode=access_mode,
                fallback_access_mode=fallback_access_mode,
                host_path=host_path,
                local=local,
                node=node,
                labels=labels or {},
                bind_timeout=bind_timeout,
                long_lived=long_lived,
            )
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InvalidInputError(f"invalid workspace option: {exc}") from exc
        if not manage and name is None:
            raise InvalidInputError("manage=False needs the name of an existing claim")
        if not manage and host_path is not None:
            raise InvalidInputError("host_path makes a volume; it cannot go with manage=False")
        if namespace is not None:
            validate_dns_label(namespace, "namespace")
        self._manage = manage
        self._keep = keep
        self._name = name or generate_claim_name()
        self._namespace = namespace
        self._session_id = new_nonce()[:16]
        self._access = ClusterAccess(
            kubectl=kubectl,
            kubeconfig=kubeconfig,
            context=context,
            namespace=namespace,
            remote_control_plane=remote_control_plane,
            kube_token=kube_token,
            certificate_authority=certificate_authority,
            insecure_skip_tls_verify=insecure_skip_tls_verify,
        )
        self._kubectl = Kubectl(self._access, runner=runner, retry=retry)
        self._created_claim = False
        self._volume_name: str | None = None  # the static volume we created
        self._access_mode: str = self._options.access_mode
        self._result: PVCValidationResult | None = None
        self._executors: list[KubernetesCommandLineCodeExecutor] = []
        self._started = False
        _live.add(self)
        if start:
            try:
                self.start()
            except BaseException:
                with contextlib.suppress(KubectlExecutorError):
                    self.stop()  # what it made is gone already; this releases the kubectl state
                raise

    @classmethod
    def existing(cls, name: str, **kwargs: Any) -> WorkspaceVolume:
        """Use the claim ``name`` as it is: wait until it is bound, never delete it."""
        return cls(name, manage=False, **kwargs)

    # -- properties -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The claim's name (pass it as ``shared_pvc_name``)."""
        return self._name

    claim_name = name

    @property
    def namespace(self) -> str | None:
        """The namespace asked for, else the one the claim is in (known once started)."""
        return self._namespace or (self._result.namespace if self._result else None)

    @property
    def options(self) -> WorkspaceOptions:
        return self._options

    @property
    def managed(self) -> bool:
        """Whether this object created (and so deletes) the claim."""
        return self._manage

    @property
    def access_mode(self) -> str:
        """The access mode the claim was made with (the fallback one, if it had to be)."""
        return self._access_mode

    @property
    def volume_name(self) -> str | None:
        """The static volume this workspace created, if any."""
        return self._volume_name

    @property
    def result(self) -> PVCValidationResult | None:
        """The association found when the wait ended (see :meth:`validate` for a fresh one)."""
        return self._result

    @property
    def kubectl(self) -> Kubectl:
        return self._kubectl

    @property
    def session_id(self) -> str:
        return self._session_id

    def manifests(self, namespace: str = "default") -> list[dict[str, Any]]:
        """What :meth:`start` creates: the claim, and the static volume first when there is one."""
        labels = workspace_labels(
            self._options, ownership_labels(self._session_id, int(time.time()), os.getpid())
        )
        volume = self._volume_name or (generate_volume_name() if self._options.static else None)
        claim = build_claim_manifest(self._options, self._name, labels, volume_name=volume)
        if volume is None:
            return [claim]
        return [
            build_volume_manifest(self._options, volume, self._name, self._namespace or namespace, labels),
            claim,
        ]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> PVCValidationResult:
        """Create the claim (and static volume) if managed, and wait until it is bound."""
        if self._started and self._result is not None:
            return self._result
        deadline = time.monotonic() + self._options.bind_timeout
        try:
            if self._manage:
                self._create()
            elif get_claim(self._kubectl, self._name) is None:
                raise NotFoundError(
                    self._kubectl.argv(["get", "pvc", self._name]),
                    1,
                    "",
                    f"PersistentVolumeClaim {self._name} does not exist (manage=False uses an existing claim)",
                )
            self._result = self._wait(deadline)
        except BaseException:
            self._delete_created_quietly()
            raise
        self._started = True
        logger.info(
            "workspace %s: %s%s",
            self._name,
            self._result.claim_status,
            f" (volume {self._result.volume_name})" if self._result.volume_name else "",
        )
        return self._result

    create_resources = start

    def _labels(self) -> dict[str, str]:
        return workspace_labels(
            self._options, ownership_labels(self._session_id, int(time.time()), os.getpid())
        )

    def _create(self) -> None:
        labels = self._labels()
        volume = generate_volume_name() if self._options.static else None
        manifest = build_claim_manifest(
            self._options, self._name, labels, access_mode=self._access_mode, volume_name=volume
        )
        claim = self._create_object("pvc", self._name, manifest)
        self._created_claim = True
        namespace = claim.get("metadata", {}).get("namespace") or self._namespace
        if not self._namespace and namespace:
            self._namespace = str(namespace)
        if volume is not None:
            if not self._namespace:
                raise InvalidInputError("cannot tell the claim's namespace for the static volume")
            pv = build_volume_manifest(self._options, volume, self._name, self._namespace, labels)
            self._create_object("pv", volume, pv)
            self._volume_name = volume

    def _create_object(self, kind: str, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
        """``kubectl create`` (never apply: an object of that name that is not ours must not be
        changed). A retried create whose first attempt went through finds its own object."""
        try:
            data: dict[str, Any] = self._kubectl.json(
                ["create", "-f", "-"], stdin=json.dumps(manifest).encode()
            )
            return data
        except ConflictError as exc:
            found = self._kubectl.json(["get", kind, name])
            if (found.get("metadata", {}).get("labels") or {}).get(SESSION_LABEL) == self._session_id:
                return dict(found)
            what = "PersistentVolumeClaim" if kind == "pvc" else "PersistentVolume"
            hint = (
                f"; to use it without managing it: WorkspaceVolume.existing({name!r})"
                if kind == "pvc"
                else ""
            )
            raise ConflictError(
                exc.argv, exc.returncode, exc.stderr, f"{what} {name} already exists and is not ours{hint}"
            ) from exc

    def _wait(self, deadline: float) -> PVCValidationResult:
        """Watch the claim until Bound; between watch rounds, read its events to fail fast,
        fall back to the other access mode, or stop at WaitForFirstConsumer."""
        started = time.monotonic()
        last: PersistentVolumeClaim | None = None
        events: list[ClaimEvent] = []
        round_seconds = WATCH_ROUND_FIRST
        while time.monotonic() < deadline:
            watch = _ClaimWatch()
            code = watch.run(self._kubectl, self._name, min(deadline, time.monotonic() + round_seconds))
            round_seconds = min(round_seconds * 2, WATCH_ROUND_MAX)
            last = watch.last or last
            if last is not None and last.bound:
                return self._associate(last)
            if last is not None and (last.status.phase == "Lost" or last.metadata.deletion_timestamp):
                state = "Terminating" if last.metadata.deletion_timestamp else last.status.phase
                raise ClaimNotBoundError(
                    self._name,
                    storage_class=last.spec.storage_class_name,
                    phase=state,
                    waited=time.monotonic() - started,
                    why="the claim is being deleted"
                    if last.metadata.deletion_timestamp
                    else "its volume is lost",
                )
            if code:
                stderr = b"".join(watch.stderr).decode(errors="replace")
                error = classify_failure(
                    self._kubectl.argv(["get", "pvc", self._name, "--watch"]), code, stderr
                )
                if isinstance(error, NotFoundError):
                    raise ClaimNotBoundError(
                        self._name,
                        storage_class=None,
                        phase="gone",
                        waited=time.monotonic() - started,
                        why="the claim disappeared while waiting for it to be bound",
                    ) from error
                if not isinstance(error, TransientError):
                    raise error
                logger.debug("watch on claim %s failed, watching again: %s", self._name, error.message)
            if last is None:
                continue
            events = claim_events(self._kubectl, self._name, last.metadata.uid or None)
            can_fall_back = (
                self._manage
                and self._options.fallback_access_mode is not None
                and self._access_mode != self._options.fallback_access_mode
            )
            decision = decide_from_events(events, can_fall_back=can_fall_back)
            if decision == DEFERRED:
                logger.info("workspace %s: its class binds when the first pod mounts it", self._name)
                return self._associate(last, deferred=True)
            if decision == CLASS_MISSING:
                raise ClaimNotBoundError(
                    self._name,
                    storage_class=last.spec.storage_class_name,
                    phase=last.status.phase,
                    waited=time.monotonic() - started,
                    events=[e.describe() for e in events],
                    why=f'storage class "{last.spec.storage_class_name}" does not exist, so no provisioner will bind it',
                )
            if decision == FALLBACK:
                self._fall_back(events, deadline)
                last = None
                round_seconds = WATCH_ROUND_FIRST
        storage_class = last.spec.storage_class_name if last else self._options.storage_class
        raise ClaimNotBoundError(
            self._name,
            storage_class=storage_class,
            phase=last.status.phase if last else "unknown",
            waited=self._options.bind_timeout,
            events=[e.describe() for e in events],
        )

    def _fall_back(self, events: Sequence[ClaimEvent], deadline: float) -> None:
        """The provisioner refused the access mode: make the claim again with the fallback one."""
        fallback = self._options.fallback_access_mode
        assert fallback is not None
        refused = next((e.message for e in reversed(events) if e.reason == "ProvisioningFailed"), "")
        logger.warning(
            "workspace %s: the provisioner refused %s (%s); making the claim again with %s",
            self._name,
            self._access_mode,
            refused,
            fallback,
        )
        wait = max(1.0, deadline - time.monotonic())
        self._kubectl.run(
            ["delete", "pvc", self._name, "--ignore-not-found", "--wait=true", f"--timeout={wait:.0f}s"]
        )
        self._created_claim = False
        self._access_mode = fallback
        self._create()

    def _associate(self, claim: PersistentVolumeClaim, *, deferred: bool = False) -> PVCValidationResult:
        volume = get_volume(self._kubectl, claim.spec.volume_name) if claim.spec.volume_name else None
        result = PVCValidationResult.from_objects(claim, volume, binding_deferred=deferred)
        if not self._namespace and result.namespace:
            self._namespace = result.namespace
        return result

    def validate(self) -> PVCValidationResult:
        """The claim and its volume as they are now (binding_deferred stays until it binds)."""
        deferred = bool(self._result and self._result.binding_deferred)
        self._result = association(self._kubectl, self._name, binding_deferred=deferred)
        return self._result

    def executor(self, **kwargs: Any) -> KubernetesCommandLineCodeExecutor:
        """An executor whose pod mounts this claim at its work_dir, with this workspace's cluster
        access (and node, for a pinned static volume). Keywords go to the executor and win.
        :meth:`stop` stops it too."""
        if not self._started:
            raise InvalidInputError("start() the workspace before making executors on it")
        token = self._access.kube_token.get_secret_value() if self._access.kube_token else None
        options: dict[str, Any] = {
            "namespace": self.namespace,
            "kubectl": self._access.kubectl,
            "kubeconfig": self._access.kubeconfig,
            "context": self._access.context,
            "remote_control_plane": self._access.remote_control_plane,
            "kube_token": token,
            "certificate_authority": self._access.certificate_authority,
            "insecure_skip_tls_verify": self._access.insecure_skip_tls_verify,
            "runner": self._kubectl.runner,
            "retry": self._kubectl.retry,
            "shared_pvc_name": self._name,
        }
        if self._options.node:
            options["node"] = self._options.node
        options.update(kwargs)
        if options["shared_pvc_name"] != self._name:
            raise InvalidInputError(f"an executor of workspace {self._name} mounts that claim, not another")
        executor = KubernetesCommandLineCodeExecutor(**options)
        self._executors.append(executor)
        return executor

    def stop(self) -> None:
        """Stop our executors, then delete the claim and volume we created (unless keep=True).
        Idempotent; an existing claim (manage=False) is never deleted."""
        try:
            executors, self._executors = self._executors, []
            for executor in executors:
                try:
                    executor.stop()
                except KubectlExecutorError as exc:
                    logger.warning("could not stop executor %s: %s", executor.pod_name, exc)
            if self._keep:
                if self._created_claim:
                    logger.info("keep=True: leaving workspace %s", self._name)
                self._created_claim = False
                self._volume_name = None
            else:
                self._delete_created()
        finally:
            self._started = False
            self._kubectl.close()
            _live.discard(self)

    cleanup = stop

    def _delete_created(self) -> None:
        if self._created_claim:
            self._kubectl.run(["delete", "pvc", self._name, "--ignore-not-found", "--wait=false"])
            self._created_claim = False
        if self._volume_name is not None:
            # Bound volumes are kept until their claim is gone (pv-protection); no need to wait.
            self._kubectl.run(["delete", "pv", self._volume_name, "--ignore-not-found", "--wait=false"])
            self._volume_name = None

    def _delete_created_quietly(self) -> None:
        try:
            self._delete_created()
        except KubectlExecutorError as exc:
            logger.warning("could not delete workspace %s: %s", self._name, exc)

    def __enter__(self) -> WorkspaceVolume:
        if not self._started:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- listing and deleting (the CLI's `workspace list/delete`) ---------------------------------------


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
    session: str | None
    owner: str
    age_seconds: int | None

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
        session=labels.get(SESSION_LABEL),
        owner=f"{labels.get(OWNER_HOST_LABEL, '?')}:{labels.get(OWNER_PID_LABEL, '?')}",
        age_seconds=None if created is None else round(now - created),
    )


def list_claims(
    kubectl: Kubectl, selector: str, *, all_namespaces: bool = False
) -> list[PersistentVolumeClaim]:
    args = ["get", "pvc", "-l", selector]
    if all_namespaces:
        args.append("--all-namespaces")
    items = kubectl.json(args).get("items") or []
    return [PersistentVolumeClaim.model_validate(i) for i in items]


def list_workspaces(
    kubectl: Kubectl, *, all_namespaces: bool = False, long_lived: bool = False
) -> list[WorkspaceInfo]:
    """This tool's claims (in kubectl's namespace, or all)."""
    claims = list_claims(kubectl, workspace_selector(long_lived=long_lived), all_namespaces=all_namespaces)
    now = time.time()
    return sorted((workspace_info(c, now) for c in claims), key=lambda i: (i.namespace, i.name))


def delete_claims(kubectl: Kubectl, claims: Sequence[PersistentVolumeClaim], *, wait: bool = False) -> None:
    """Delete these claims (ours: the caller checked) and the static volumes we made for them."""
    by_namespace: dict[str, list[PersistentVolumeClaim]] = {}
    for claim in claims:
        by_namespace.setdefault(claim.metadata.namespace, []).append(claim)
    for namespace, group in sorted(by_namespace.items()):
        names = [c.metadata.name for c in group]
        args = ["delete", "pvc", *names, "--ignore-not-found", f"--wait={'true' if wait else 'false'}"]
        if namespace:
            args.append(f"--namespace={namespace}")
        kubectl.run(args)
        static = [c.metadata.name for c in group if VOLUME_ANNOTATION in c.metadata.annotations]
        if static and namespace:
            selector = (
                f"{MANAGED_BY_LABEL}={MANAGED_BY},{CLAIM_NAMESPACE_LABEL}={namespace},"
                f"{CLAIM_LABEL} in ({','.join(static)})"
            )
            try:
                kubectl.run(["delete", "pv", "-l", selector, "--ignore-not-found", "--wait=false"])
            except ForbiddenError as exc:
                logger.warning(
                    "could not delete the static volumes of %s: %s", ", ".join(static), exc.message
                )


def delete_workspace(kubectl: Kubectl, name: str, *, wait: bool = False) -> bool:
    """Delete one of this tool's workspaces by claim name; False if there is no such claim.
    A claim this tool did not make is refused."""
    claim = get_claim(kubectl, validate_dns_label(name, "claim name"))
    if claim is None:
        return False
    if claim.metadata.labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        raise InvalidInputError(
            f"PersistentVolumeClaim {name} was not made by kubectl-executor; not deleting it"
        )
    delete_claims(kubectl, [claim], wait=wait)
    return True


def _judged_as_pod(claim: PersistentVolumeClaim) -> Pod:
    """What gc's decision reads of an object: its metadata and phase (Pending/Bound/Lost)."""
    return Pod(metadata=claim.metadata, status=PodStatus(phase=claim.status.phase))


def collect_volume_garbage(
    kubectl: Kubectl, policy: GcPolicy, *, dry_run: bool = False, all_namespaces: bool = False
) -> list[GcCandidate]:
    """gc for workspace claims (``collect_garbage(include_volumes=True)``): the same decision as
    for pods; a deleted claim takes the static volume we made for it along."""
    claims = list_claims(kubectl, selector(policy.session, policy.owner_host), all_namespaces=all_namespaces)
    by_key = {(c.metadata.namespace, c.metadata.name): c for c in claims}
    found = [replace(c, kind="pvc") for c in plan((_judged_as_pod(c) for c in claims), policy)]
    if dry_run or not found:
        return found
    delete_claims(kubectl, [by_key[(c.namespace, c.name)] for c in found])
    logger.info("gc deleted %d workspace claim(s): %s", len(found), " ".join(c.name for c in found))
    return [replace(c, deleted=True) for c in found]


# Best-effort backstop: workspaces never stopped are deleted at interpreter exit (after their
# executors: this hook is registered after the executor module's, so it runs before it).
_live: set[WorkspaceVolume] = set()


@atexit.register
def _stop_all() -> None:
    for workspace in list(_live):
        try:
            workspace.stop()
        except Exception as exc:
            logger.warning("could not stop workspace %s: %s", workspace.name, exc)
