"""Tables and the pod summary printed by ``up``, ``ls`` and ``workspace list``."""

from __future__ import annotations

import time
from typing import Any

import click  # a core dependency: the command works on the base install

from .._cluster.gc import pod_created_at
from .._cluster.labels import (
    LIFETIME_LABEL,
    LONG_LIVED,
    OWNER_HOST_LABEL,
    OWNER_ID_LABEL,
    OWNER_PID_LABEL,
)
from .._cluster.models import Pod

EPHEMERAL = "ephemeral"
"""The lifetime kind of a pod or claim that is not long-lived: its executor (or workspace) deletes
it on stop, gc once its owner process is gone. (It was shown as "session" before.)"""


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def pod_info(pod: Pod) -> dict[str, Any]:
    labels = pod.metadata.labels
    created = pod_created_at(pod)
    return {
        "name": pod.metadata.name,
        "namespace": pod.metadata.namespace,
        "kind": "long-lived" if labels.get(LIFETIME_LABEL) == LONG_LIVED else EPHEMERAL,
        "phase": pod.status.phase,
        "ready": pod.ready,
        "age_seconds": None if created is None else round(time.time() - created),
        "owner_id": labels.get(OWNER_ID_LABEL),
        "session": labels.get(OWNER_ID_LABEL),  # deprecated: owner_id under its former name
        "owner": f"{labels.get(OWNER_HOST_LABEL, '?')}:{labels.get(OWNER_PID_LABEL, '?')}",
        "image": pod.spec.containers[0].image if pod.spec.containers else None,
    }


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
