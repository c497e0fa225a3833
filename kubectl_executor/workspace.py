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

This module is the facade; the options, manifests and models are pure, in
:mod:`kubectl_executor._cluster.claim_manifest` and :mod:`~kubectl_executor._cluster.claim_models`
(unit-tested on dicts), and the kubectl calls around them are thin, in
:mod:`~kubectl_executor._cluster.claim` (read, watch, list, delete, gc).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import time
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from ._cluster.claim import ClaimWatch, association, claim_events, get_claim, get_volume
from ._cluster.claim_manifest import (
    AccessMode,
    WorkspaceOptions,
    build_claim_manifest,
    build_volume_manifest,
    generate_claim_name,
    generate_volume_name,
    workspace_labels,
)
from ._cluster.claim_models import (
    CLASS_MISSING,
    DEFERRED,
    FALLBACK,
    ClaimEvent,
    PersistentVolumeClaim,
    PVCValidationResult,
    decide_from_events,
)
from ._cluster.kubectl import Kubectl, classify_failure
from ._cluster.labels import (
    OWNER_ID_LABEL,
)
from ._cluster.manifest import ownership_labels, validate_dns_label
from ._cluster.pod import WATCH_ROUND_FIRST, WATCH_ROUND_MAX
from ._cluster.retry import RetryPolicy
from ._cluster.runner import Runner
from ._exec.protocol import new_nonce
from .boundary import ClusterAccess, PodShape
from .errors import (
    ClaimNotBoundError,
    ConflictError,
    InvalidInputError,
    KubectlExecutorError,
    NotFoundError,
    TransientError,
)
from .executor import KubernetesCommandLineCodeExecutor

logger = logging.getLogger(__name__)

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
        access: ClusterAccess | None = None,
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
        self._access = ClusterAccess.of(
            access,
            kubectl=kubectl,
            kubeconfig=kubeconfig,
            context=context,
            namespace=namespace,
            remote_control_plane=remote_control_plane,
            kube_token=kube_token,
            certificate_authority=certificate_authority,
            insecure_skip_tls_verify=insecure_skip_tls_verify,
        )
        namespace = self._access.namespace
        if namespace is not None:
            validate_dns_label(namespace, "namespace")
        self._manage = manage
        self._keep = keep
        self._name = name or generate_claim_name()
        self._namespace = namespace
        self._owner_id = new_nonce()[:16]
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
    def owner_id(self) -> str:
        """This workspace's id on its objects (label ``kubectl-executor.io/session``): what ``gc``
        (``owner_id=``) and a NetworkPolicy of your own select on."""
        return self._owner_id

    @property
    def session_id(self) -> str:
        """Deprecated alias of :attr:`owner_id` ("session" now means the persistent exec channel)."""
        warnings.warn(
            "WorkspaceVolume.session_id is deprecated: use owner_id", DeprecationWarning, stacklevel=2
        )
        return self._owner_id

    def manifests(self, namespace: str = "default") -> list[dict[str, Any]]:
        """What :meth:`start` creates: the claim, and the static volume first when there is one."""
        labels = workspace_labels(
            self._options, ownership_labels(self._owner_id, int(time.time()), os.getpid())
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
            self._options, ownership_labels(self._owner_id, int(time.time()), os.getpid())
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
            if (found.get("metadata", {}).get("labels") or {}).get(OWNER_ID_LABEL) == self._owner_id:
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
            watch = ClaimWatch()
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
        access (and node, for a pinned static volume). Keywords go to the executor and win; a
        ``pod=`` :class:`PodShape` gets the claim (and the node, unless it names one).
        :meth:`stop` stops it too."""
        if not self._started:
            raise InvalidInputError("start() the workspace before making executors on it")
        # The caller's access keywords (namespace=, context=...) win over this workspace's.
        mine = self._access.with_namespace(self.namespace).model_dump()
        theirs = {k: kwargs.pop(k) for k in list(kwargs) if k in ClusterAccess.model_fields}
        access = kwargs.pop("access", None) or ClusterAccess(**{**mine, **theirs})
        options: dict[str, Any] = {
            "access": access,
            "runner": self._kubectl.runner,
            "retry": self._kubectl.retry,
        }
        pod: PodShape | None = kwargs.pop("pod", None)
        if pod is not None:
            claim = pod.shared_pvc_name or self._name
            node = pod.node or self._options.node
            options["pod"] = pod.model_copy(update={"shared_pvc_name": claim, "node": node})
        else:
            options["shared_pvc_name"] = self._name
            if self._options.node:
                options["node"] = self._options.node
        options.update(kwargs)
        if (pod.shared_pvc_name or self._name if pod else options["shared_pvc_name"]) != self._name:
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
