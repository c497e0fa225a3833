"""Warm pods: a pool keeps N Ready pods so that "I need a pod" costs a label call, not a start-up.

Pods of a pool carry this library's ownership labels plus ``kubectl-executor.io/pool=<name>``.
Claiming is ONE kubectl call that is atomic on the server::

    kubectl label pod P kubectl-executor.io/claimed=<id> <owner labels> --overwrite --resource-version=<rv>

If another client claimed P first, its resourceVersion moved on and ours is refused (Conflict), so
we try the next pod: several threads or processes can share a pool without double-claiming.
The claim also moves the ownership labels (owner id, host, pid, created-at) to the claimer, so
``gc`` treats the pod as the claimer's from then on.

A background thread (no signal handlers) tops the pool up to ``size`` unclaimed pods created by
this pool object; claimed pods are deleted on release unless reuse is asked for; ``close()``
deletes the unclaimed pods this object created (each claimed first, so no other client can be
handed a pod that is being deleted).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import warnings
from typing import Any

from ._cluster.kubectl import Kubectl
from ._cluster.labels import (
    CLAIMED_LABEL,
    CREATED_AT_LABEL,
    OWNER_HOST_LABEL,
    OWNER_ID_LABEL,
    OWNER_PID_LABEL,
    POOL_LABEL,
)
from ._cluster.manifest import (
    build_pod_manifest,
    generate_pod_name,
    label_safe,
    ownership_labels,
    validate_dns_label,
    validate_label_value,
)
from ._cluster.models import Pod
from ._cluster.pod import delete_pod, get_pod, list_pods, start_failure, wait_ready
from ._cluster.retry import RetryPolicy
from ._cluster.runner import Runner
from ._exec.protocol import new_nonce
from .boundary import ClusterAccess, PodOptions, PodShape, Resources, RunOptions
from .defaults import ACTIVE_DEADLINE_SECONDS, IMAGE, RUN_AS_USER, STARTUP_TIMEOUT, WORK_DIR
from .errors import (
    ConflictError,
    InvalidInputError,
    KubectlError,
    KubectlExecutorError,
    NotFoundError,
    PodStartError,
    StartupTimeoutError,
)

logger = logging.getLogger(__name__)

CLOSING = "closing"


class WarmPool:
    """Keeps ``size`` Ready pods of one spec; :meth:`claim` hands one out exclusively.

    ``kubectl`` is the kubectl binary (as on the executor); ``access=`` is the cluster access as
    one :class:`ClusterAccess` instead; ``client=`` a :class:`Kubectl` to share (its access, runner
    and retry policy) instead of both.
    ``pod=`` is the pods' :class:`PodShape` (the separate pod keywords map onto it, and mean what
    they mean on the executor); of ``run_options=`` the pool uses ``startup_timeout``.
    """

    def __init__(
        self,
        size: int = 2,
        image: str = IMAGE,
        *,
        name: str = "default",
        namespace: str | None = None,
        kubectl: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        work_dir: str = WORK_DIR,
        env: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        resources: Resources | None = None,
        hardened: bool = True,
        run_as_user: int = RUN_AS_USER,
        read_only_root_filesystem: bool = False,
        runtime_class_name: str | None = None,
        active_deadline_seconds: int | None = ACTIVE_DEADLINE_SECONDS,
        pod_overrides: dict[str, Any] | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
        reuse: bool = False,
        refill_interval: float = 5.0,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
        start: bool = True,
        access: ClusterAccess | None = None,
        client: Kubectl | None = None,
        pod: PodShape | None = None,
        run_options: RunOptions | None = None,
    ) -> None:
        if not isinstance(size, int) or size < 0:
            raise InvalidInputError("size must be an int >= 0")
        validate_dns_label(name, "pool name")
        shape = PodShape.of(
            pod,
            image=image,
            work_dir=work_dir,
            env=env,
            labels=labels,
            resources=resources,
            hardened=hardened,
            run_as_user=run_as_user,
            read_only_root_filesystem=read_only_root_filesystem,
            runtime_class_name=runtime_class_name,
            active_deadline_seconds=active_deadline_seconds,
            pod_overrides=pod_overrides,
        )
        run = RunOptions.of(run_options, startup_timeout=startup_timeout)
        if isinstance(kubectl, Kubectl):  # what client= was called before it had its own name
            warnings.warn(
                "pass a Kubectl to share as client=, not kubectl=", DeprecationWarning, stacklevel=2
            )
            client, kubectl = kubectl, None
        shared = client
        if shared is not None:
            if (
                access is not None
                or any((kubectl, kubeconfig, context))
                or namespace
                not in (
                    None,
                    shared.access.namespace,
                )
            ):
                raise InvalidInputError("pass client= or the cluster access (access=, kubectl=...), not both")
        else:
            access = ClusterAccess.of(
                access, kubectl=kubectl, kubeconfig=kubeconfig, context=context, namespace=namespace
            )
            namespace = access.namespace
        if namespace is not None:
            validate_dns_label(namespace, "namespace")
        self.size = size
        self.name = name
        self.pod_shape = shape
        """What shapes the pool's pods (``pod=``, or the separate keywords mapped onto it)."""
        self.image = shape.image
        self.work_dir = shape.work_dir
        self.reuse = reuse
        self.startup_timeout = run.startup_timeout
        self.refill_interval = refill_interval
        self.pool_id = new_nonce()[:16]
        self._shape = shape.model_copy(update={"labels": {**shape.labels, POOL_LABEL: name}})
        self._owns_kubectl = shared is None
        self._kubectl = shared if shared is not None else Kubectl(access, runner=runner, retry=retry)
        self.namespace = namespace or self._kubectl.access.namespace
        self._cond = threading.Condition()
        # Own pods seen Ready and unclaimed (with their resourceVersion): a claim tries these
        # first, so that it is one kubectl call; a pod another client took meanwhile just conflicts.
        self._warm: dict[str, Pod] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._closed = False
        _live.add(self)
        if start:
            self.start()

    @property
    def kubectl(self) -> Kubectl:
        return self._kubectl

    # -- selectors ----------------------------------------------------------------------------

    @property
    def _free_selector(self) -> str:
        """Unclaimed pods of this pool, whoever made them."""
        return f"{POOL_LABEL}={self.name},!{CLAIMED_LABEL}"

    @property
    def _own_selector(self) -> str:
        """Unclaimed pods of this pool made by this object."""
        return f"{self._free_selector},{OWNER_ID_LABEL}={self.pool_id}"

    # -- the refill thread --------------------------------------------------------------------

    def start(self) -> None:
        """Start topping the pool up in the background (idempotent)."""
        if self._closed:
            raise InvalidInputError("this pool is closed")
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._refill_loop, name=f"kx-pool-{self.name}", daemon=True
            )
            self._thread.start()

    def wait_warm(self, timeout: float | None = None, count: int | None = None) -> bool:
        """Block until ``count`` (default: size) pods made by this pool are Ready and unclaimed."""
        want = self.size if count is None else count
        with self._cond:
            return (
                self._cond.wait_for(lambda: len(self._warm) >= want or self._closed, timeout)
                and not self._closed
            )

    def _refill_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self._refill_once()
                self._failures = 0
            except KubectlExecutorError as exc:
                self._failures += 1
                logger.warning("pool %s: refill failed (%d in a row): %s", self.name, self._failures, exc)
            # Back off after failures (a bad image must not become a pod-creating loop).
            pause = min(self.refill_interval * (2 ** min(self._failures, 6)), 300.0)
            self._wake.wait(pause if self._failures else self.refill_interval)
            self._wake.clear()

    def _refill_once(self) -> None:
        live: list[Pod] = []
        for pod in list_pods(self._kubectl, self._own_selector):
            if pod.metadata.deletion_timestamp:
                continue
            failure = start_failure(pod)
            if failure is not None:
                self._discard(pod.metadata.name, f"{failure[0]}: {failure[1]}")
                continue
            live.append(pod)
        with self._cond:
            self._warm = {p.metadata.name: p for p in live if p.ready}
            self._cond.notify_all()
        missing = self.size - len(live)
        names = self._create(missing) if missing > 0 and not self._stopping.is_set() else []
        waiting = names + [p.metadata.name for p in live if not p.ready]
        failed: str | None = None
        for pod_name in waiting:
            if self._stopping.is_set():
                return
            ready = self._await_ready(pod_name)
            if ready is None:
                failed = pod_name
            else:
                with self._cond:
                    self._warm[pod_name] = ready
                    self._cond.notify_all()
        if failed is not None and not self._stopping.is_set():
            raise PodStartError(failed, "NotReady", "a pool pod did not become ready")

    def _create(self, count: int) -> list[str]:
        """Create ``count`` pods with ONE kubectl apply (JSON objects back to back)."""
        labels = ownership_labels(self.pool_id, int(time.time()), os.getpid())
        items = []
        names = []
        for _ in range(count):
            pod_name = generate_pod_name()
            names.append(pod_name)
            items.append(build_pod_manifest(PodOptions.of_shape(self._shape, pod_name), labels))
        stream = "\n".join(json.dumps(item) for item in items)
        self._kubectl.run(["apply", "-f", "-"], stdin=stream.encode())
        logger.info("pool %s: created %d pod(s)", self.name, count)
        return names

    def _await_ready(self, pod_name: str) -> Pod | None:
        """Wait in short slices so that close() is noticed; a pod that cannot start is deleted."""
        deadline = time.monotonic() + self.startup_timeout
        while not self._stopping.is_set():
            try:
                return wait_ready(self._kubectl, pod_name, max(min(2.0, deadline - time.monotonic()), 0.1))
            except StartupTimeoutError:
                if time.monotonic() >= deadline:
                    self._discard(pod_name, "not ready in time")
                    return None
            except PodStartError as exc:
                self._discard(pod_name, f"{exc.reason}: {exc.message}")
                return None
        return None

    def _discard(self, pod_name: str, why: str) -> None:
        logger.warning("pool %s: deleting pod %s (%s)", self.name, pod_name, why)
        try:
            delete_pod(self._kubectl, pod_name)
        except KubectlExecutorError as exc:
            logger.warning("pool %s: could not delete pod %s: %s", self.name, pod_name, exc)

    # -- claiming -----------------------------------------------------------------------------

    def claim(self, owner: str | None = None, *, timeout: float | None = None) -> Pod:
        """Take a Ready pod for exclusive use; waits (up to ``timeout``, default startup_timeout)
        while the pool refills. ``owner`` (a label value, e.g. an executor's ``owner_id``) becomes
        the pod's owner-id label."""
        if self._closed:
            raise InvalidInputError("this pool is closed")
        claim_id = validate_label_value(owner) if owner else new_nonce()[:16]
        deadline = time.monotonic() + (self.startup_timeout if timeout is None else timeout)
        self.start()
        while True:
            claimed = self._claim_known(claim_id) or self._claim_listed(claim_id)
            if claimed is not None:
                self._wake.set()  # refill now
                logger.info("pool %s: claimed pod %s", self.name, claimed.metadata.name)
                return claimed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StartupTimeoutError(f"pool {self.name} had no Ready pod to claim in time")
            self._wake.set()
            with self._cond:  # woken when one of our pods turns Ready; re-list for others' pods
                self._cond.wait(min(remaining, 1.0))

    def _claim_known(self, claim_id: str) -> Pod | None:
        """Our own pods that the refill thread saw Ready: one label call, no list."""
        while True:
            with self._cond:
                if not self._warm:
                    return None
                pod = self._warm.pop(random.choice(list(self._warm)))
            claimed = self._try_claim(pod, claim_id)
            if claimed is not None:
                return claimed

    def _claim_listed(self, claim_id: str) -> Pod | None:
        """Any Ready, unclaimed pod of the pool, whoever made it."""
        candidates = [
            p
            for p in list_pods(self._kubectl, self._free_selector)
            if p.ready and not p.metadata.deletion_timestamp
        ]
        random.shuffle(candidates)  # spread concurrent claimers over the pods
        for pod in candidates:
            claimed = self._try_claim(pod, claim_id)
            if claimed is not None:
                with self._cond:
                    self._warm.pop(claimed.metadata.name, None)
                return claimed
        return None

    def _try_claim(self, pod: Pod, claim_id: str) -> Pod | None:
        """Label the pod ours if it is still free, at its resourceVersion (optimistic concurrency).

        A conflict means the pod changed, which on a real cluster is mostly the kubelet updating
        its status (a pod just made Ready): then it is read again and, while it is still free,
        claimed at its new version. Someone else's claim, or its deletion, is an answer: None."""
        name = pod.metadata.name
        labels = {
            CLAIMED_LABEL: claim_id,
            OWNER_ID_LABEL: claim_id,
            OWNER_HOST_LABEL: label_safe(_hostname()),
            OWNER_PID_LABEL: str(os.getpid()),
            CREATED_AT_LABEL: str(int(time.time())),
        }
        for _ in range(CLAIM_ATTEMPTS):
            args = [
                "label",
                "pod",
                name,
                *(f"{k}={v}" for k, v in labels.items()),
                "--overwrite",
                f"--resource-version={pod.metadata.resource_version}",
                "-o",
                "json",
            ]
            try:
                return Pod.model_validate(json.loads(self._kubectl.run(args).stdout))
            except NotFoundError:
                return None
            except ConflictError:
                now = get_pod(self._kubectl, name)
                if now is None or now.metadata.labels.get(CLAIMED_LABEL) == claim_id:
                    return now  # gone, or a retried call of ours had already succeeded
                if CLAIMED_LABEL in now.metadata.labels or now.metadata.deletion_timestamp:
                    return None  # someone else's
                pod = now  # changed but still free: again, at its new version
        return None

    def release(self, pod_name: str, *, reuse: bool | None = None) -> None:
        """Done with a claimed pod: delete it (default), or with ``reuse`` hand it back to the
        pool (files and processes of the previous user stay in it)."""
        if self.reuse if reuse is None else reuse:
            labels = ownership_labels(self.pool_id, int(time.time()), os.getpid())
            args = ["label", "pod", pod_name, f"{CLAIMED_LABEL}-", *(f"{k}={v}" for k, v in labels.items())]
            args.append("--overwrite")
            try:
                self._kubectl.run(args)
                self._wake.set()
                return
            except KubectlError as exc:
                logger.warning("pool %s: could not return pod %s, deleting it: %s", self.name, pod_name, exc)
        delete_pod(self._kubectl, pod_name)
        self._wake.set()

    # -- shutdown -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop refilling and delete the unclaimed pods this pool created (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            for pod in list_pods(self._kubectl, self._own_selector):
                # Claim first: a pod being deleted must not be handed to another client.
                if self._try_claim(pod, CLOSING) is not None:
                    delete_pod(self._kubectl, pod.metadata.name)
        finally:
            if self._owns_kubectl:
                self._kubectl.close()
            _live.discard(self)

    close = stop
    """An alias of :meth:`stop` (the name earlier versions documented)."""

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


CLAIM_ATTEMPTS = 5  # labels tried on one free pod whose version keeps changing under us


def _hostname() -> str:
    import socket

    return socket.gethostname()


# Best effort: a pool never closed deletes its unclaimed pods at interpreter exit.
_live: set[WarmPool] = set()


@atexit.register
def _close_all() -> None:
    for pool in list(_live):
        try:
            pool.stop()
        except Exception as exc:
            logger.warning("could not close pool %s: %s", pool.name, exc)
