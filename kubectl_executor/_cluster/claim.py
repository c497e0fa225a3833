"""The kubectl calls on claims and volumes: read, watch, list, delete, and gc for claims."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..errors import (
    ForbiddenError,
    InvalidInputError,
    KubectlError,
    NotFoundError,
)
from .claim_models import (
    ClaimEvent,
    PersistentVolume,
    PersistentVolumeClaim,
    PVCValidationResult,
    WorkspaceInfo,
    events_selector,
    sorted_events,
    workspace_info,
    workspace_selector,
)
from .gc import GcCandidate, GcPolicy, plan, selector
from .kubectl import Kubectl
from .labels import (
    CLAIM_LABEL,
    CLAIM_NAMESPACE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    VOLUME_ANNOTATION,
)
from .manifest import validate_dns_label
from .models import Pod, PodStatus
from .pod import ObjectWatch

logger = logging.getLogger(__name__)

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


class ClaimWatch(ObjectWatch):
    """Watches a claim until it is bound (or lost, or being deleted)."""

    resource = "pvc"

    def __init__(self) -> None:
        super().__init__()
        self.last: PersistentVolumeClaim | None = None

    def accept(self, obj: dict[str, Any]) -> bool:
        claim = PersistentVolumeClaim.model_validate(obj)
        self.last = claim
        return bool(claim.bound or claim.status.phase == "Lost" or claim.metadata.deletion_timestamp)


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
    claims = list_claims(kubectl, selector(policy.owner_id, policy.owner_host), all_namespaces=all_namespaces)
    by_key = {(c.metadata.namespace, c.metadata.name): c for c in claims}
    found = [replace(c, kind="pvc") for c in plan((_judged_as_pod(c) for c in claims), policy)]
    if dry_run or not found:
        return found
    delete_claims(kubectl, [by_key[(c.namespace, c.name)] for c in found])
    logger.info("gc deleted %d workspace claim(s): %s", len(found), " ".join(c.name for c in found))
    return [replace(c, deleted=True) for c in found]
