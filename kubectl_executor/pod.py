"""Pod lifecycle through kubectl: create, wait (failing fast), find for reuse, delete.

The decisions (is it ready? will it never start?) are pure functions on :class:`Pod`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from .errors import NotFoundError, PodStartError, StartupTimeoutError, TransientError
from .kubectl import Kubectl, classify_failure
from .manifest import (
    IMAGE_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SPEC_LABEL,
    WORK_DIR_ANNOTATION,
    spec_hash,
)
from .models import Pod, PodList

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


def start_failure(pod: Pod) -> tuple[str, str] | None:
    """(reason, message) if this pod will never become ready, else None."""
    status = pod.status
    if status.phase in ("Failed", "Succeeded"):
        return (status.reason or status.phase, status.message or f"pod phase is {status.phase}")
    scheduled = pod.condition("PodScheduled")
    if scheduled and scheduled.status == "False" and scheduled.reason == "Unschedulable":
        return ("Unschedulable", scheduled.message or "no node can run this pod")
    for cs in status.container_statuses:
        waiting = cs.state.waiting
        if waiting and waiting.get("reason") in FATAL_WAITING:
            return (str(waiting["reason"]), str(waiting.get("message") or ""))
        terminated = cs.state.terminated
        if terminated:
            code = terminated.get("exitCode")
            reason = terminated.get("reason") or "Terminated"
            return ("ContainerExited", f"container {cs.name} exited ({reason}, exit code {code})")
    if pod.metadata.deletion_timestamp:
        return ("Terminating", "pod is being deleted")
    return None


def apply_pod(kubectl: Kubectl, manifest: dict[str, Any]) -> Pod:
    """Create (or converge) the pod; the manifest travels on stdin."""
    data = kubectl.json(["apply", "-f", "-"], stdin=json.dumps(manifest).encode())
    return Pod.model_validate(data)


def get_pod(kubectl: Kubectl, name: str) -> Pod | None:
    try:
        return Pod.model_validate(kubectl.json(["get", "pod", name]))
    except NotFoundError:
        return None


def list_pods(kubectl: Kubectl, selector: str, *, all_namespaces: bool = False) -> list[Pod]:
    args = ["get", "pods", "-l", selector]
    if all_namespaces:
        args.append("--all-namespaces")
    return PodList.model_validate(kubectl.json(args)).items


def delete_pod(kubectl: Kubectl, name: str, *, wait: bool = False) -> None:
    """Delete; NotFound is fine (idempotent)."""
    kubectl.run(["delete", "pod", name, "--ignore-not-found", f"--wait={'true' if wait else 'false'}"])


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


class _Watch:
    """One ``kubectl get pod -o json --watch`` until the pod is ready, cannot start, or time is up."""

    def __init__(self) -> None:
        self.stream = _JsonStream()
        self.decided = threading.Event()
        self.last: Pod | None = None
        self.failure: tuple[str, str] | None = None
        self.stderr: list[bytes] = []

    def on_stdout(self, chunk: bytes) -> None:
        for obj in self.stream.feed(chunk):
            pod = Pod.model_validate(obj.get("object", obj))
            self.last = pod
            if pod.ready:
                self.decided.set()
            elif (failure := start_failure(pod)) is not None:
                self.failure = failure
                self.decided.set()

    def run(self, kubectl: Kubectl, name: str, deadline: float) -> int | None:
        proc = kubectl.spawn(
            ["get", "pod", name, "-o", "json", "--watch"],
            on_stdout=self.on_stdout,
            on_stderr=self.stderr.append,
        )
        try:
            while not self.decided.wait(min(max(deadline - time.monotonic(), 0), 0.5)):
                code = proc.wait(0)
                if code is not None or time.monotonic() >= deadline:
                    return code
            return 0
        finally:
            proc.kill()


def wait_ready(kubectl: Kubectl, name: str, timeout: float) -> Pod:
    """Watch the pod until Ready; raise PodStartError as soon as it cannot start."""
    deadline = time.monotonic() + timeout
    last: Pod | None = None
    while time.monotonic() < deadline:
        watch = _Watch()
        code = watch.run(kubectl, name, deadline)
        last = watch.last or last
        if watch.failure is not None:
            raise PodStartError(name, *watch.failure)
        if watch.decided.is_set() and watch.last is not None:
            return watch.last
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
