"""Garbage collection, the public entry point: this library's orphaned pods and (opt-in) the claims
of shared workspaces. The rules are in :mod:`kubectl_executor._cluster.gc`; the claims' part in
:mod:`kubectl_executor._cluster.claim`. ``kubectl-executor gc`` is this function on the command line."""

from __future__ import annotations

import warnings

from ._cluster.claim import collect_volume_garbage
from ._cluster.gc import GcCandidate, ProcessStart, collect_pod_garbage, local_process_start, make_policy
from ._cluster.kubectl import Kubectl
from .errors import InvalidInputError

__all__ = ["GcCandidate", "collect_garbage"]


def collect_garbage(
    kubectl: Kubectl,
    *,
    older_than: float | None = None,
    owner_id: str | None = None,
    owner_host: str | None = None,
    include_live_owners: bool = False,
    include_long_lived: bool = False,
    dry_run: bool = False,
    all_namespaces: bool = False,
    host: str | None = None,
    process_start: ProcessStart = local_process_start,
    include_volumes: bool = False,
    session: str | None = None,
) -> list[GcCandidate]:
    """Delete this library's orphaned pods (see :mod:`kubectl_executor._cluster.gc`); return what was
    (or, with ``dry_run``, would be) deleted. The namespace is kubectl's (or ``all_namespaces``).

    ``include_volumes``: also the claims of shared workspaces (``kind="pvc"``, by the same rules;
    a claim never "finishes"), with the static volumes made for them. Opt-in: it deletes data.

    ``owner_id``: only the objects of this owner (an executor's or workspace's ``owner_id``).
    ``session`` is its deprecated former name."""
    if session is not None:
        warnings.warn(
            "collect_garbage(session=) is deprecated: use owner_id=", DeprecationWarning, stacklevel=2
        )
        if owner_id is not None and owner_id != session:
            raise InvalidInputError(
                "collect_garbage: give owner_id or its deprecated alias session, not both"
            )
        owner_id = session
    policy = make_policy(
        older_than=older_than,
        owner_id=owner_id,
        owner_host=owner_host,
        include_live_owners=include_live_owners,
        include_long_lived=include_long_lived,
        host=host,
        process_start=process_start,
    )
    candidates = collect_pod_garbage(kubectl, policy, dry_run=dry_run, all_namespaces=all_namespaces)
    if include_volumes:
        candidates += collect_volume_garbage(kubectl, policy, dry_run=dry_run, all_namespaces=all_namespaces)
    return candidates
