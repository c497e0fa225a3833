"""Garbage collection: find and delete this library's pods that nobody will ever stop.

A pod is garbage when one of these holds (checked in this order):

* it finished (phase ``Failed`` or ``Succeeded``, e.g. ``DeadlineExceeded``): it can run nothing;
* its owner process was on this host and is gone (SIGKILLed, crashed before ``stop()``). A pid
  that is alive but started after the pod was created is a reused pid, so the owner is gone too;
* it is older than ``older_than`` seconds.

Pods are kept when they are being deleted already, when they are long-lived (made by
``kubectl-executor up``, label ``kubectl-executor.io/lifetime=long-lived``) unless
``include_long_lived``, and when their owner is alive on this host unless ``include_live_owners``.
A pod whose owner is on another host can only be collected by phase or age: its pid means
nothing here. With ``include_volumes``, the claims of shared workspaces (workspace.py) are judged
by the same rules (owner gone, age; a claim never finishes).

:func:`decide` is pure (a table of pods -> decisions in the unit tests); :func:`collect_pod_garbage`
is the thin kubectl layer around it. The public entry point, which adds the workspace claims, is
:func:`kubectl_executor.gc.collect_garbage`: this module judges labels and creation time of any
object's metadata and knows nothing of workspaces.
"""

from __future__ import annotations

import calendar
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from ..errors import InvalidInputError
from .kubectl import Kubectl
from .labels import (
    CREATED_AT_LABEL,
    LIFETIME_LABEL,
    LONG_LIVED,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_HOST_LABEL,
    OWNER_ID_LABEL,
    OWNER_PID_LABEL,
)
from .manifest import label_safe, validate_label_value
from .models import Pod
from .pod import list_pods

logger = logging.getLogger(__name__)


# A process that started this long after the pod's created-at label cannot have created it.
PID_REUSE_SLACK = 5.0

REASON_FINISHED = "finished"
REASON_OWNER_GONE = "owner-gone"
REASON_EXPIRED = "expired"

ProcessStart = Callable[[int], float | None]
"""pid -> the process's start time (epoch seconds), or None when no such process runs."""


@dataclass(frozen=True)
class GcCandidate:
    """A pod that gc deletes (or would, with ``dry_run``), and why."""

    name: str
    namespace: str
    reason: str
    detail: str
    age_seconds: float | None
    owner_id: str | None
    owner_host: str | None
    owner_pid: int | None
    phase: str
    long_lived: bool
    deleted: bool = False
    kind: str = "pod"  # or "pvc": a workspace's claim (``include_volumes``)

    @property
    def session(self) -> str | None:
        """Deprecated alias of :attr:`owner_id`, its former name ("session" now means only the
        persistent exec channel)."""
        warnings.warn("GcCandidate.session is deprecated: use owner_id", DeprecationWarning, stacklevel=2)
        return self.owner_id


@dataclass(frozen=True)
class GcPolicy:
    """What :func:`decide` needs besides the pod: filters, and the facts about this host."""

    now: float
    host: str
    process_start: ProcessStart
    older_than: float | None = None
    owner_id: str | None = None
    owner_host: str | None = None
    include_live_owners: bool = False
    include_long_lived: bool = False


def pod_created_at(pod: Pod) -> float | None:
    """The created-at label (epoch seconds), else the API server's creationTimestamp."""
    raw = pod.metadata.labels.get(CREATED_AT_LABEL)
    if raw and raw.isdigit():
        return float(raw)
    stamp = pod.metadata.creation_timestamp
    if stamp:
        try:
            return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))
        except ValueError:
            return None
    return None


def _owner_pid(pod: Pod) -> int | None:
    raw = pod.metadata.labels.get(OWNER_PID_LABEL, "")
    return int(raw) if raw.isdigit() else None


def owner_state(pod: Pod, policy: GcPolicy) -> str:
    """``"alive"``, ``"gone"``, or ``"unknown"`` (another host, or no pid label)."""
    host = pod.metadata.labels.get(OWNER_HOST_LABEL)
    pid = _owner_pid(pod)
    if host != label_safe(policy.host) or pid is None:
        return "unknown"
    started = policy.process_start(pid)
    if started is None:
        return "gone"
    created = pod_created_at(pod)
    if created is not None and started > created + PID_REUSE_SLACK:
        return "gone"  # the pid was reused by a process younger than the pod
    return "alive"


def decide(pod: Pod, policy: GcPolicy) -> GcCandidate | None:
    """The candidate this pod is, or None to keep it. Pure."""
    labels = pod.metadata.labels
    if labels.get(MANAGED_BY_LABEL) != MANAGED_BY or pod.metadata.deletion_timestamp:
        return None
    owner_id = labels.get(OWNER_ID_LABEL)
    if policy.owner_id is not None and owner_id != policy.owner_id:
        return None
    host = labels.get(OWNER_HOST_LABEL)
    if policy.owner_host is not None and host != label_safe(policy.owner_host):
        return None
    long_lived = labels.get(LIFETIME_LABEL) == LONG_LIVED
    if long_lived and not policy.include_long_lived:
        return None
    owner = "unknown" if long_lived else owner_state(pod, policy)
    if owner == "alive" and not policy.include_live_owners:
        return None

    created = pod_created_at(pod)
    age = policy.now - created if created is not None else None
    phase = pod.status.phase
    if phase in ("Failed", "Succeeded"):
        reason, detail = (
            REASON_FINISHED,
            f"phase {phase}" + (f" ({pod.status.reason})" if pod.status.reason else ""),
        )
    elif owner == "gone":
        reason, detail = REASON_OWNER_GONE, f"owner pid {_owner_pid(pod)} on {host} is gone"
    elif policy.older_than is not None and age is not None and age > policy.older_than:
        reason, detail = REASON_EXPIRED, f"{age:.0f}s old, more than {policy.older_than:g}s"
    else:
        return None
    return GcCandidate(
        name=pod.metadata.name,
        namespace=pod.metadata.namespace,
        reason=reason,
        detail=detail,
        age_seconds=age,
        owner_id=owner_id,
        owner_host=host,
        owner_pid=_owner_pid(pod),
        phase=phase,
        long_lived=long_lived,
    )


def plan(pods: Iterable[Pod], policy: GcPolicy) -> list[GcCandidate]:
    """The candidates among ``pods``, oldest first. Pure."""
    found = [c for pod in pods if (c := decide(pod, policy)) is not None]
    return sorted(found, key=lambda c: (-(c.age_seconds or 0.0), c.namespace, c.name))


def selector(owner_id: str | None = None, owner_host: str | None = None) -> str:
    """Label selector for the server side of the filtering (:func:`decide` checks again)."""
    terms = [f"{MANAGED_BY_LABEL}={MANAGED_BY}"]
    if owner_id is not None:
        terms.append(f"{OWNER_ID_LABEL}={validate_label_value(owner_id)}")
    if owner_host is not None:
        terms.append(f"{OWNER_HOST_LABEL}={label_safe(owner_host)}")
    return ",".join(terms)


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as fh:
            for line in fh:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def local_process_start(pid: int) -> float | None:
    """Start time of a local process (epoch seconds), or None when there is no such process.
    Zombies count as gone: their work is over. Without /proc, an existing pid reports 0.0
    ("started long ago"), so it counts as alive and pid reuse cannot be detected."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if stat:
        # The command name may hold spaces and parentheses: fields count from the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields and fields[0] in ("Z", "X"):
            return None
        boot = _boot_time()
        if boot is not None and len(fields) > 19 and fields[19].isdigit():
            return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, owned by someone else
    return 0.0


def make_policy(
    *,
    older_than: float | None = None,
    owner_id: str | None = None,
    owner_host: str | None = None,
    include_live_owners: bool = False,
    include_long_lived: bool = False,
    host: str | None = None,
    process_start: ProcessStart = local_process_start,
) -> GcPolicy:
    """The policy of one gc run, judged against the clock and host of now."""
    if older_than is not None and older_than < 0:
        raise InvalidInputError(f"older_than must be >= 0 seconds, got {older_than!r}")
    return GcPolicy(
        now=time.time(),
        host=host or socket.gethostname(),
        process_start=process_start,
        older_than=older_than,
        owner_id=owner_id,
        owner_host=owner_host,
        include_live_owners=include_live_owners,
        include_long_lived=include_long_lived,
    )


def collect_pod_garbage(
    kubectl: Kubectl, policy: GcPolicy, *, dry_run: bool = False, all_namespaces: bool = False
) -> list[GcCandidate]:
    """Delete the pods ``policy`` judges garbage; return what was (or would be) deleted."""
    pods = list_pods(kubectl, selector(policy.owner_id, policy.owner_host), all_namespaces=all_namespaces)
    candidates = plan(pods, policy)
    if not dry_run and candidates:
        candidates = _delete_pods(kubectl, candidates)
    return candidates


def _delete_pods(kubectl: Kubectl, candidates: list[GcCandidate]) -> list[GcCandidate]:
    by_namespace: dict[str, list[str]] = {}
    for c in candidates:
        by_namespace.setdefault(c.namespace, []).append(c.name)
    deleted: set[tuple[str, str]] = set()
    for namespace, names in sorted(by_namespace.items()):
        args = ["delete", "pod", *names, "--ignore-not-found", "--wait=false"]
        if namespace:
            args.append(f"--namespace={namespace}")
        kubectl.run(args)
        deleted.update((namespace, n) for n in names)
        logger.info("gc deleted %d pod(s) in %s: %s", len(names), namespace or "-", " ".join(names))
    return [replace(c, deleted=(c.namespace, c.name) in deleted) for c in candidates]
