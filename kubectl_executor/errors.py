"""One exception tree for everything kubectl-executor raises.

A non-zero exit of the user's code is *data* (``CommandLineCodeResult.exit_code``), never an
exception. Exceptions mean that we could not do what was asked, and say why::

    KubectlExecutorError
    ├── InvalidInputError (also ValueError)      bad option, name, path, language argument
    │   └── UnsafePathError                      a path that escapes its root, or a hostile archive member
    ├── KubectlNotFoundError                     no kubectl binary to run
    ├── KubectlError                             kubectl ran and failed (redacted argv, exit code, stderr)
    │   ├── NotFoundError                        the object does not exist
    │   ├── ForbiddenError                       RBAC said no (carries verb and resource to grant)
    │   ├── ConflictError                        already exists / resourceVersion precondition failed
    │   ├── TransientError                       429, 5xx, connection refused/reset, backend not reachable
    │   └── ExecNotStartedError                  an exec that provably never reached the pod
    ├── PodStartError                            the pod will never become ready (cluster reason+message)
    ├── StartupTimeoutError                      the pod did not become ready in time
    │   └── ClaimNotBoundError                   no provisioner bound a workspace claim
    ├── OutcomeUnknownError                      a block may have run but its result was lost
    └── TransferError                            an upload/download failed its checks
        └── RemoteNotFoundError (also FileNotFoundError)  the pod path to download does not exist

The kubectl errors keep the underlying failure as ``__cause__`` where there is one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


class KubectlExecutorError(Exception):
    """Base of every error raised by this package."""


class InvalidInputError(KubectlExecutorError, ValueError):
    """Input that we refuse before touching the cluster."""


class UnsafePathError(InvalidInputError):
    """A path (user-given or from the pod) that would land outside its root."""


class KubectlNotFoundError(KubectlExecutorError, FileNotFoundError):
    """No kubectl binary could be found."""


class KubectlError(KubectlExecutorError):
    """kubectl ran and failed. ``argv`` is redacted; ``stderr`` is kubectl's own text."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str, message: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.message = message or _first_line(stderr) or f"kubectl exited with {returncode}"
        super().__init__(
            f"{self.message}\n  command: {' '.join(self.argv)}\n  exit code: {returncode}"
            + (f"\n  stderr: {stderr.strip()}" if stderr.strip() else "")
        )


class NotFoundError(KubectlError):
    """The object (pod, namespace, ...) does not exist."""


class ForbiddenError(KubectlError):
    """RBAC refused the call; ``verb`` and ``resource`` say what to grant."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stderr: str,
        message: str = "",
        *,
        verb: str | None = None,
        resource: str | None = None,
    ) -> None:
        self.verb = verb
        self.resource = resource
        hint = f" (grant verb {verb!r} on {resource!r})" if verb and resource else ""
        super().__init__(argv, returncode, stderr, (message or _first_line(stderr)) + hint)


class ConflictError(KubectlError):
    """AlreadyExists, or a resourceVersion precondition that no longer holds."""


class TransientError(KubectlError):
    """A failure worth retrying where retrying is safe. ``retry_after`` in seconds, if known."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stderr: str,
        message: str = "",
        *,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(argv, returncode, stderr, message)


class ExecNotStartedError(TransientError):
    """The exec was refused before any stream opened, so the code provably did not run."""


class PodStartError(KubectlExecutorError):
    """The pod will never become ready: ImagePullBackOff, Unschedulable, a crashed container..."""

    def __init__(self, pod: str, reason: str, message: str) -> None:
        self.pod = pod
        self.reason = reason
        self.message = message
        super().__init__(f"pod {pod} cannot start: {reason}: {message}")


class StartupTimeoutError(KubectlExecutorError, TimeoutError):
    """The pod did not become ready within ``startup_timeout``."""


class OutcomeUnknownError(KubectlExecutorError):
    """The block may have run, but its completion marker never arrived. It is never re-run."""

    def __init__(self, message: str, *, stdout: bytes = b"", stderr: bytes = b"") -> None:
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(message)


class TransferError(KubectlExecutorError):
    """An upload or download failed (checksum, size cap, unexpected content)."""


_KLOG = re.compile(r"^[IWEF]\d{4} ")  # client-go's log lines (E1127 12:00:00 ... memcache.go)


def _first_line(text: str) -> str:
    """The first line that is kubectl's own message, not client-go's log noise."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if not _KLOG.match(line):
            return line
    return lines[0] if lines else ""


class RemoteNotFoundError(TransferError, FileNotFoundError):
    """The path to download does not exist in the pod."""


class ClaimNotBoundError(StartupTimeoutError):
    """No provisioner (or static volume) bound the claim: in time, or at all (its class is missing).

    ``storage_class`` is the claim's class as the cluster set it (None: no class); ``events`` are
    the claim's Events (``"Warning ProvisioningFailed: ..."``), the cluster's own explanation.
    """

    def __init__(
        self,
        claim: str,
        *,
        storage_class: str | None,
        phase: str,
        waited: float,
        events: Sequence[str] = (),
        why: str = "",
    ) -> None:
        self.claim = claim
        self.storage_class = storage_class
        self.phase = phase
        self.waited = waited
        self.events = list(events)
        super().__init__(claim_not_bound_message(claim, storage_class, phase, waited, self.events, why))


def claim_not_bound_message(
    claim: str, storage_class: str | None, phase: str, waited: float, events: Sequence[str], why: str = ""
) -> str:
    """The text of :class:`ClaimNotBoundError`. Pure."""
    if storage_class:
        cls = f'storage class "{storage_class}"'
    elif storage_class == "":
        cls = 'storage class "" (none: only a matching pre-created PersistentVolume can bind it)'
    else:
        cls = "no storage class and no default class (only a matching PersistentVolume can bind it)"
    head = why or f"no provisioner bound it within {waited:g}s"
    text = f"PersistentVolumeClaim {claim} is {phase or 'not bound'}: {head} ({cls})"
    if events:
        text += "\n  events:\n" + "\n".join(f"    {e}" for e in events)
    else:
        text += "\n  events: none (no controller has looked at the claim, or events are not readable)"
    return (
        text
        + "\n  hint: `kubectl get storageclass` lists the classes; pass storage_class= (or host_path= for a static volume)"
    )
