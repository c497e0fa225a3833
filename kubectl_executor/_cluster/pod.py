"""Pod lifecycle through kubectl: create, wait (failing fast), find for reuse, delete.

The decisions (is it ready? will it never start? who is the caller's own pod?) are pure
functions; the kubectl calls around them are thin.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import (
    InvalidInputError,
    KubectlError,
    NotFoundError,
    PodStartError,
    StartupTimeoutError,
    TransientError,
)
from . import netpol
from .kubectl import Kubectl, classify_failure
from .labels import (
    IMAGE_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_ID_LABEL,
    SPEC_LABEL,
    WORK_DIR_ANNOTATION,
)
from .manifest import spec_hash

if TYPE_CHECKING:
    from .models import Pod

logger = logging.getLogger(__name__)

# Waiting reasons that will not resolve by themselves.
FATAL_WAITING = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}


SHELLS = ("/bin/sh", "sh", "/bin/bash", "bash")

# runc's words when the container's command does not exist in the image (Docker and CRI-O say the same).
_NO_EXECUTABLE = re.compile(
    r'exec: "([^"]+)": (?:stat \S+: no such file or directory|executable file not found)'
)


def _exited(name: str, terminated: dict[str, Any]) -> tuple[str, str]:
    """What a terminated container says: the runtime's message too (a StartError names its cause)."""
    code = terminated.get("exitCode")
    reason = terminated.get("reason") or "Terminated"
    message = f"container {name} exited ({reason}, exit code {code})"
    detail = str(terminated.get("message") or "").strip()
    missing = _NO_EXECUTABLE.search(detail)
    if missing and missing.group(1) in SHELLS:
        return (
            "NoShell",
            f"{message}: the image has no {missing.group(1)}; the executor's pod runs its idle "
            "command and every block through a POSIX sh, so use an image with one (distroless "
            f"images have none): {detail}",
        )
    return ("ContainerExited", f"{message}: {detail}" if detail else message)


def start_failure(pod: Pod) -> tuple[str, str] | None:
    """(reason, message) if this pod will never become ready, else None."""
    status = pod.status
    if status.phase in ("Failed", "Succeeded"):
        if not status.message:  # the kubelet's reason is then on the container, not the pod
            for cs in status.container_statuses:
                if cs.state.terminated:
                    return _exited(cs.name, cs.state.terminated)
        return (status.reason or status.phase, status.message or f"pod phase is {status.phase}")
    scheduled = pod.condition("PodScheduled")
    if scheduled and scheduled.status == "False" and scheduled.reason == "Unschedulable":
        return ("Unschedulable", scheduled.message or "no node can run this pod")
    for cs in status.container_statuses:
        waiting = cs.state.waiting
        if waiting and waiting.get("reason") in FATAL_WAITING:
            return (str(waiting["reason"]), str(waiting.get("message") or ""))
        if cs.state.terminated:
            return _exited(cs.name, cs.state.terminated)
    if pod.metadata.deletion_timestamp:
        return ("Terminating", "pod is being deleted")
    return None


def apply_pod(kubectl: Kubectl, manifest: dict[str, Any]) -> Pod:
    """Create (or converge) the pod; the manifest travels on stdin."""
    data = kubectl.json(["apply", "-f", "-"], stdin=json.dumps(manifest).encode())
    from .models import Pod

    return Pod.model_validate(data)


def create_pod(kubectl: Kubectl, manifest: dict[str, Any], *, network_policy: bool = False) -> Pod:
    """Apply the pod; with ``network_policy``, its default-deny egress policy first (so the pod
    never runs unguarded), then again with an ownerReference to the pod so that the cluster
    collects the policy with the pod."""
    if not network_policy:
        return apply_pod(kubectl, manifest)
    name = manifest["metadata"]["name"]
    owner_id = manifest["metadata"]["labels"][OWNER_ID_LABEL]
    policy = netpol.build_egress_deny_policy(name, owner_id)
    kubectl.run(["apply", "-f", "-"], stdin=json.dumps(policy).encode())
    pod = apply_pod(kubectl, manifest)
    owned = netpol.build_egress_deny_policy(name, owner_id, owner_pod={"name": name, "uid": pod.metadata.uid})
    kubectl.run(["apply", "-f", "-"], stdin=json.dumps(owned).encode())
    return pod


def get_pod(kubectl: Kubectl, name: str) -> Pod | None:
    try:
        from .models import Pod

        return Pod.model_validate(kubectl.json(["get", "pod", name]))
    except NotFoundError:
        return None


def list_pods(kubectl: Kubectl, selector: str, *, all_namespaces: bool = False) -> list[Pod]:
    args = ["get", "pods", "-l", selector]
    if all_namespaces:
        args.append("--all-namespaces")
    from .models import PodList

    return PodList.model_validate(kubectl.json(args)).items


def delete_pod(kubectl: Kubectl, name: str, *, wait: bool = False, network_policy: bool = False) -> None:
    """Delete (then its network policy, if it has one); NotFound is fine (idempotent)."""
    kubectl.run(["delete", "pod", name, "--ignore-not-found", f"--wait={'true' if wait else 'false'}"])
    if network_policy:
        kubectl.run(["delete", netpol.RESOURCE, name, "--ignore-not-found", "--wait=false"])


def find_reusable(kubectl: Kubectl, image: str, work_dir: str) -> Pod | None:
    """A Running, Ready pod that THIS library made, with the same image and work_dir."""
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY},{SPEC_LABEL}={spec_hash(image, work_dir)}"
    for pod in list_pods(kubectl, selector):
        ann = pod.metadata.annotations
        if (
            pod.ready
            and not pod.metadata.deletion_timestamp
            and ann.get(IMAGE_ANNOTATION) == image
            and ann.get(WORK_DIR_ANNOTATION) == work_dir
        ):
            return pod
    return None


class _JsonStream:
    """Splits kubectl's ``-o json --watch`` output (objects back to back) into objects."""

    def __init__(self) -> None:
        self._buf = ""
        self._decoder = json.JSONDecoder()

    def feed(self, chunk: bytes) -> list[Any]:
        self._buf += chunk.decode(errors="replace")
        objs = []
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                break
            try:
                obj, end = self._decoder.raw_decode(text)
            except json.JSONDecodeError:
                self._buf = text
                break
            objs.append(obj)
            self._buf = text[end:]
        return objs


class ObjectWatch:
    """One ``kubectl get RESOURCE NAME -o json --watch`` until ``accept`` decides or time is up.

    Subclasses say which resource and what "decided" means (the pod start, the claim bind)."""

    resource = ""

    def __init__(self) -> None:
        self.stream = _JsonStream()
        self.decided = threading.Event()
        self.stderr: list[bytes] = []

    def accept(self, obj: dict[str, Any]) -> bool:
        """Look at one version of the object; True when the wait is decided."""
        raise NotImplementedError

    def on_stdout(self, chunk: bytes) -> None:
        for obj in self.stream.feed(chunk):
            if self.accept(obj.get("object", obj)):
                self.decided.set()

    def run(self, kubectl: Kubectl, name: str, deadline: float) -> int | None:
        proc = kubectl.spawn(
            ["get", self.resource, name, "-o", "json", "--watch"],
            on_stdout=self.on_stdout,
            on_stderr=self.stderr.append,
        )
        try:
            while True:
                # A watch that ended (the server closed it, or kubectl failed) is seen at once:
                # wait() drains its output first, so a decision in its last lines counts.
                code = proc.wait(0)
                if self.decided.is_set():
                    return 0
                if code is not None or time.monotonic() >= deadline:
                    return code
                self.decided.wait(min(max(deadline - time.monotonic(), 0), 0.5))
        finally:
            proc.kill()


class _Watch(ObjectWatch):
    """Watches a pod until it is ready or cannot start."""

    resource = "pod"

    def __init__(self) -> None:
        super().__init__()
        self.last: Pod | None = None
        self.failure: tuple[str, str] | None = None

    def accept(self, obj: dict[str, Any]) -> bool:
        from .models import Pod

        pod = Pod.model_validate(obj)
        self.last = pod
        if pod.ready:
            return True
        failure = start_failure(pod)
        if failure is not None:
            self.failure = failure
        return failure is not None


# ``kubectl get pod NAME --watch`` GETs the pod, prints it, then watches from resourceVersion 0 and
# drops the first event as a duplicate of what it printed. A change between its GET and the watch
# start is that first event, so it is lost and the watch waits forever on a stale state (seen on
# the emulator about one start in four). Each watch therefore lives one round only; the next
# round's fresh GET sees any change the last one missed. Rounds grow so long starts stay cheap.
WATCH_ROUND_FIRST = 1.0
WATCH_ROUND_MAX = 8.0


def wait_ready(kubectl: Kubectl, name: str, timeout: float) -> Pod:
    """Watch the pod until Ready; raise PodStartError as soon as it cannot start."""
    deadline = time.monotonic() + timeout
    last: Pod | None = None
    round_seconds = WATCH_ROUND_FIRST
    while time.monotonic() < deadline:
        watch = _Watch()
        code = watch.run(kubectl, name, min(deadline, time.monotonic() + round_seconds))
        round_seconds = min(round_seconds * 2, WATCH_ROUND_MAX)
        last = watch.last or last
        if watch.failure is not None:
            raise PodStartError(name, *watch.failure)
        if watch.decided.is_set() and watch.last is not None:
            return watch.last
        if code is None:
            continue  # the round is over and kubectl still watching: start a fresh one at once
        if code:  # the watch itself failed: a real error (NotFound, Forbidden) is raised as such
            stderr = b"".join(watch.stderr).decode(errors="replace")
            error = classify_failure(kubectl.argv(["get", "pod", name, "--watch"]), code, stderr)
            if isinstance(error, NotFoundError):
                raise PodStartError(name, "NotFound", "the pod disappeared while starting") from error
            if not isinstance(error, TransientError):
                raise error
            logger.debug("watch on pod %s failed, watching again: %s", name, error.message)
        time.sleep(0.2)  # pause between watches that ended undecided, not a synchronisation
    phase = last.status.phase if last else "unknown"
    raise StartupTimeoutError(f"pod {name} was not ready after {timeout:g}s (phase {phase})")


# -- in-cluster: an ownerReference to the caller's own pod ---------------------------------------

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_OWNER_KEYS = ("apiVersion", "kind", "name", "uid")


@dataclass(frozen=True)
class CallerPod:
    """The pod this process runs in, as far as its environment tells."""

    name: str
    namespace: str | None
    uid: str | None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def detect_caller_pod(
    env: Mapping[str, str], read_file: Callable[[str], str | None] = _read_text
) -> CallerPod | None:
    """Pure (given ``read_file``): the downward API's POD_NAME/POD_NAMESPACE/POD_UID, else, when the
    service-account namespace file or KUBERNETES_SERVICE_HOST says we are in a pod, the host
    name (a pod's host name is its name). None outside a cluster."""
    name = env.get("POD_NAME") or None
    namespace = env.get("POD_NAMESPACE") or None
    uid = env.get("POD_UID") or None
    sa_namespace = None if name and namespace else read_file(SA_NAMESPACE_FILE)
    if name is None:
        if sa_namespace is None and not env.get("KUBERNETES_SERVICE_HOST"):
            return None
        name = env.get("HOSTNAME") or socket.gethostname()
    if not _POD_NAME.match(name):
        return None  # not a pod name (a host name set by hand): nothing we could own through
    return CallerPod(name=name, namespace=namespace or sa_namespace, uid=uid)


def owner_reference(name: str, uid: str) -> dict[str, Any]:
    """A non-controller reference that needs no extra RBAC (blockOwnerDeletion false)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": name,
        "uid": uid,
        "controller": False,
        "blockOwnerDeletion": False,
    }


def validate_owner_reference(ref: Mapping[str, Any]) -> dict[str, Any]:
    """A user-given reference: the four identifying keys must be non-empty strings."""
    for key in _OWNER_KEYS:
        if not isinstance(ref.get(key), str) or not ref[key]:
            raise InvalidInputError(f"owner_reference needs a non-empty string {key!r}, got {ref.get(key)!r}")
    for key in ("controller", "blockOwnerDeletion"):
        if key in ref and not isinstance(ref[key], bool):
            raise InvalidInputError(f"owner_reference {key!r} must be a bool")
    return dict(ref)


def resolve_owner_references(
    kubectl: Kubectl,
    option: bool | Mapping[str, Any] | None,
    namespace: str | None,
    *,
    env: Mapping[str, str] | None = None,
    read_file: Callable[[str], str | None] = _read_text,
) -> list[dict[str, Any]]:
    """The ownerReferences for a new pod.

    ``False``: none. A dict: that reference, as given. ``None`` (auto): a reference to the caller's
    own pod when this process runs in one and that pod is in the namespace ours goes to; otherwise
    none (logged). ``True``: the same, but an error when it cannot be done.

    Owner references cannot cross namespaces (the cluster would take ours for an orphan and delete
    it), so the caller's pod is looked up with *our* kubectl flags: found means same namespace.
    The downward API (POD_NAME, POD_NAMESPACE, POD_UID) spares that lookup when the namespace
    was given and matches.
    """
    if option is False:
        return []
    if isinstance(option, Mapping):
        return [validate_owner_reference(option)]
    required = option is True

    def give_up(why: str) -> list[dict[str, Any]]:
        if required:
            raise InvalidInputError(f"owner_reference=True: {why}")
        logger.debug("no ownerReference to the caller's pod: %s", why)
        return []

    caller = detect_caller_pod(os.environ if env is None else env, read_file)
    if caller is None:
        return give_up("this process does not run in a Kubernetes pod (no POD_NAME, no service account)")
    if caller.uid and caller.namespace and namespace == caller.namespace:
        return [owner_reference(caller.name, caller.uid)]
    try:
        found = get_pod(kubectl, caller.name)
    except KubectlError as exc:
        if required:
            raise
        return give_up(f"cannot read pod {caller.name}: {exc.message}")
    if found is None or not found.metadata.uid:
        return give_up(
            f"pod {caller.name} is not in the namespace of the executor's pod "
            "(owner references cannot cross namespaces)"
        )
    if caller.uid and found.metadata.uid != caller.uid:
        return give_up(f"pod {caller.name} has uid {found.metadata.uid}, not POD_UID {caller.uid}")
    return [owner_reference(found.metadata.name, found.metadata.uid)]
