"""``KubernetesCommandLineCodeExecutor``: the seed-compatible facade over pod + exec.

A user migrates by changing one import line. Behind the same names: exact exit codes from a
completion marker, timeouts enforced inside the pod, code on stdin, hardened pods that are
deleted on stop, and typed errors for everything that is not the user's code's own exit.

Longer than the ~600 lines other modules keep to, for one reason: this is the one class the seed's
users import, so its constructor keeps the seed's keyword arguments and every public method is
documented here (the file and tool methods hand over to the :class:`PodFiles` and :class:`PodTools`
it holds); the work itself is in :mod:`kubectl_executor._exec` and ``_cluster``.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import shlex
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePath, PurePosixPath
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from ._cluster.kubectl import Kubectl
from ._cluster.manifest import (
    CONTAINER,
    build_pod_manifest,
    generate_pod_name,
    ownership_labels,
    validate_dns_label,
    validate_env_name,
    validate_env_value,
)
from ._cluster.pod import create_pod, delete_pod, find_reusable, get_pod, resolve_owner_references, wait_ready
from ._cluster.retry import RetryPolicy
from ._cluster.runner import Runner
from ._exec.dispatcher import PodTools
from ._exec.languages import (
    DEFAULT_EXECUTION_POLICIES,
    LANGUAGES,
    code_filename,
    filename_hint,
    quiet_pip,
    resolve_language,
    seed_language,
    should_execute,
    silence_pip,
    validate_relative_path,
)
from ._exec.outputs import EMPTY, RichResults, parse_report
from ._exec.protocol import (
    RICH_ENV,
    TIMEOUT_NOTE,
    ExecResult,
    OutputCallback,
    RichLimits,
    RunRequest,
    kill_args,
    new_nonce,
)
from ._exec.results import CodeBlock, MarkdownCodeExtractor
from ._exec.stateless import run_stateless
from ._exec.tar import DEFAULT_EXCLUDES, TransferLimits
from ._exec.transfer import PodFiles
from .defaults import (
    ACTIVE_DEADLINE_SECONDS,
    IMAGE,
    MAX_OUTPUT_BYTES,
    MAX_RICH_BYTES,
    MAX_RICH_OUTPUT_BYTES,
    RUN_AS_USER,
    RUN_TIMEOUT,
    STARTUP_TIMEOUT,
    WORK_DIR,
)
from .errors import (
    InvalidInputError,
    KubectlError,
    KubectlExecutorError,
    NotFoundError,
    PodStartError,
    UnsafePathError,
)

if TYPE_CHECKING:
    from ._cluster.models import Pod
    from ._exec.session import Session
    from .boundary import (
        ChangedFile,
        ClusterAccess,
        CommandLineCodeResult,
        PodShape,
        Resources,
        RichOutput,
        RunOptions,
        ToolCommandLineCodeResult,
    )
    from .pool import WarmPool

logger = logging.getLogger(__name__)

# kubectl's words (it checks the phase before it execs) for a pod whose main process has exited.
COMPLETED_POD = "cannot exec into a container in a completed pod"
# The kubelet's words for an exec into a container that has gone, before it has reported the pod
# Failed (a second on an idle node, longer under load): the API server still says Running.
CONTAINER_GONE = "container not found"
ENDED_POLLS = 30  # polls of the pod, a second apart, for the kubelet's report of an ended container
POD_REPLACED_NOTE = (
    "\n[kubectl-executor] The pod's main process had exited (the pod was no longer running): this "
    "block ran in a fresh pod; files, variables and sessions from earlier blocks are lost.\n"
)

# After the seed's "Unsupported language <lang>": what is supported.
UNSUPPORTED_DETAIL = (
    f" (runs {', '.join(n for n, lang in LANGUAGES.items() if lang.runner)};"
    f" saves only {', '.join(n for n, lang in LANGUAGES.items() if not lang.runner)})"
)
BASHRC_BEGIN = "# >>> kubectl-executor env >>>"
BASHRC_END = "# <<< kubectl-executor env <<<"


SCRATCH_STEM = ".kx-run"
"""The file a :meth:`KubernetesCommandLineCodeExecutor.run` block runs from when none was asked
for: hidden, in work_dir (so imports of the workspace's modules work), replaced by the next run."""


@dataclass(frozen=True)
class BlockResult:
    """One block's outcome, from :meth:`KubernetesCommandLineCodeExecutor.run`; a non-zero exit is data."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool = False
    truncated: bool = False
    log_files: tuple[str, ...] = ()
    file: str | None = None  # the kept file in the pod (named by the code, or saved by policy)
    executed: bool = True  # False: saved only, by the execution policy
    state_lost: bool = False  # a stateful interpreter was restarted before this block
    outputs: tuple[RichOutput, ...] = ()  # display(), last expression, open matplotlib figures
    files: tuple[ChangedFile, ...] = ()  # created or changed under work_dir by the block
    files_truncated: bool = False  # the scan was cut (file count or bytes hashed): maybe more


class KubernetesCommandLineCodeExecutor:
    """Runs code blocks in a Kubernetes pod, through kubectl only.

    The seed's positional parameters come first and keep their meaning; everything after ``*``
    is ours. The pod is created by the constructor (``start=False`` defers it to
    :meth:`start`), and deleted by :meth:`stop`, the ``with`` exit, or (best effort) at exit.
    Files and tool functions are done by the :class:`PodFiles` and :class:`PodTools` it holds.
    """

    transfer_limits: TransferLimits = TransferLimits()
    """Caps for downloads; set on an executor to change its defaults."""

    def __init__(
        self,
        image: str = IMAGE,
        pod_name: str | None = None,
        namespace: str | None = None,
        timeout: int = RUN_TIMEOUT,
        work_dir: Path | str = Path(WORK_DIR),
        execution_policies: dict[str, bool] | None = None,
        remote_control_plane: str | None = None,
        kube_token: str | None = None,
        shared_pvc_name: str | None = None,
        node: str = "",
        shared_resources: bool = False,
        env_vars: list[dict[str, str]] | None = None,
        *,
        kubectl: str | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        certificate_authority: str | None = None,
        insecure_skip_tls_verify: bool = False,
        startup_timeout: float = STARTUP_TIMEOUT,
        max_output_bytes: int = MAX_OUTPUT_BYTES,
        max_rich_output_bytes: int = MAX_RICH_OUTPUT_BYTES,
        max_rich_bytes: int = MAX_RICH_BYTES,
        list_files: bool = True,
        keep_pod: bool = False,
        start: bool = True,
        attach: bool = False,
        resources: Resources | None = None,
        hardened: bool = True,
        run_as_user: int = RUN_AS_USER,
        read_only_root_filesystem: bool = False,
        runtime_class_name: str | None = None,
        network_policy: bool = False,
        owner_reference: bool | dict[str, Any] | None = None,
        active_deadline_seconds: int | None = ACTIVE_DEADLINE_SECONDS,
        labels: dict[str, str] | None = None,
        pod_overrides: dict[str, Any] | None = None,
        on_output: OutputCallback | None = None,
        runner: Runner | None = None,
        retry: RetryPolicy | None = None,
        session: bool = False,
        stateful: bool = False,
        pool: WarmPool | None = None,
        access: ClusterAccess | None = None,
        pod: PodShape | None = None,
        run_options: RunOptions | None = None,
    ) -> None:
        from .boundary import ClusterAccess, PodShape, RunOptions  # pydantic: loaded on first use

        # The three option models; the separate keywords (the seed's among them) map onto them.
        run = RunOptions.of(
            run_options,
            timeout=timeout,
            startup_timeout=startup_timeout,
            max_output_bytes=max_output_bytes,
            max_rich_output_bytes=max_rich_output_bytes,
            max_rich_bytes=max_rich_bytes,
            list_files=list_files,
        )
        shape = PodShape.of(
            pod,
            image=image,
            work_dir=str(PurePosixPath(str(work_dir))),
            env=_env_dict(env_vars),
            labels=labels,
            resources=resources,
            hardened=hardened,
            run_as_user=run_as_user,
            read_only_root_filesystem=read_only_root_filesystem,
            runtime_class_name=runtime_class_name,
            active_deadline_seconds=active_deadline_seconds,
            shared_pvc_name=shared_pvc_name or None,
            node=node or None,
            pod_overrides=pod_overrides,
        )
        access = ClusterAccess.of(
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
        work = PurePosixPath(shape.work_dir)  # absolute and normalised (PodShape)
        for key, value in shape.env.items():
            validate_env_value(validate_env_name(key), value)
        namespace = access.namespace
        if namespace is not None:
            validate_dns_label(namespace, "namespace")
        if pod_name is not None:
            validate_dns_label(pod_name, "pod name")
        self._shape = shape
        self._run_options = run
        # Rich outputs over a budget stay in the pod (named by kept_path); 0 keeps every one there.
        self._rich = RichLimits(run.max_rich_output_bytes, run.max_rich_bytes, list_files=run.list_files)
        self._timeout = run.timeout
        self._work_dir = Path(str(work))
        self._execution_policies = {**DEFAULT_EXECUTION_POLICIES, **(execution_policies or {})}
        self._fixed_name = pod_name
        self._pod_name = pod_name or generate_pod_name()
        self._shared_resources = shared_resources
        if attach and pod_name is None:
            raise InvalidInputError("attach=True needs the pod_name of a running pod")
        self._attach = attach
        self._startup_timeout = run.startup_timeout
        self._max_output_bytes = run.max_output_bytes
        self._keep_pod = keep_pod
        self._on_output = on_output
        self._code_extractor = MarkdownCodeExtractor()
        self._owner_id = new_nonce()[:16]
        self._cancel_lock = threading.Lock()
        self._running: str | None = None  # nonce of the run in flight
        self._cancelled = False
        self._extra_env: dict[str, str] = {}
        self._bashrc_env: dict[str, str] = {}  # from add_env_vars_to_bashrc: kept across restart()
        self._created = False  # True while a pod that WE created exists
        self._pod: Pod | None = None
        self._owner_references: list[dict[str, Any]] = []
        self._kubectl = Kubectl(access, runner=runner, retry=retry)
        self._namespace = namespace
        # Default-deny egress NetworkPolicy with the pod (kubectl_executor._cluster.netpol says how to relax it).
        self._network_policy = network_policy
        # In-cluster: None = an ownerReference to the caller's own pod when detectable (pod.py).
        self._owner_reference = owner_reference
        self._owner_resolved = False
        # Persistent session (one kubectl exec for all blocks); stateful implies it.
        self._use_session = session or stateful
        self._stateful = stateful
        self._session: Session | None = None
        if pool is not None and (pool.work_dir != str(work) or pool.namespace != namespace):
            raise InvalidInputError("pool= must have the executor's work_dir and namespace")
        self._pool = pool
        self._from_pool = False  # the pod was claimed from self._pool
        self._files = PodFiles(self)
        self._tools = PodTools(
            self._files, lambda request, callback: self._execute(request, callback, stateless=True)
        )
        _live.add(self)
        if start:
            self.start()

    # -- properties (the seed's) ------------------------------------------------------------

    @property
    def timeout(self) -> int | float:
        return self._timeout

    @property
    def work_dir(self) -> Path:
        return self._work_dir

    @property
    def code_extractor(self) -> MarkdownCodeExtractor:
        return self._code_extractor

    @property
    def execution_policies(self) -> dict[str, bool]:
        """The live mapping (as in the seed): ``ex.execution_policies["python"] = False`` makes
        the next Python block be saved only. A False under any alias of a language applies."""
        return self._execution_policies

    @execution_policies.setter
    def execution_policies(self, policies: dict[str, bool]) -> None:
        if not isinstance(policies, dict):
            raise InvalidInputError(f"execution_policies must be a dict, not {type(policies).__name__}")
        self._execution_policies = policies  # the caller's own dict stays live, as in the seed

    @property
    def pod_name(self) -> str:
        return self._pod_name

    @property
    def namespace(self) -> str | None:
        """The namespace asked for, else the one the cluster put the pod in."""
        if self._namespace:
            return self._namespace
        return self._pod.metadata.namespace if self._pod else None

    @property
    def image(self) -> str:
        return self._shape.image

    @property
    def kubectl(self) -> Kubectl:
        """The kubectl this executor runs (flags, runner); for the library's other modules."""
        return self._kubectl

    @property
    def owner_id(self) -> str:
        """This executor's id on its objects (label ``kubectl-executor.io/session``): what ``gc``
        (``owner_id=``) and a NetworkPolicy of your own select on."""
        return self._owner_id

    @property
    def session_id(self) -> str:
        """Deprecated alias of :attr:`owner_id` ("session" now means the persistent exec channel)."""
        warnings.warn(
            "KubernetesCommandLineCodeExecutor.session_id is deprecated: use owner_id",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._owner_id

    @property
    def pod_shape(self) -> PodShape:
        """What shapes this executor's pod (``pod=``, or its separate keywords mapped onto it)."""
        return self._shape

    @property
    def run_options(self) -> RunOptions:
        """How its runs go (``run_options=``, or its separate keywords mapped onto it)."""
        return self._run_options

    def manifest(self) -> dict[str, Any]:
        """The pod this executor creates (or created)."""
        labels = ownership_labels(self._owner_id, int(time.time()), os.getpid())
        from .boundary import PodOptions

        options = PodOptions.of_shape(self._shape, self._pod_name, owner_references=self._owner_references)
        return build_pod_manifest(options, labels)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the pod and wait until it is ready (or reuse one, with shared_resources)."""
        if self._pod is not None:
            return
        if self._attach:
            pod = get_pod(self._kubectl, self._pod_name)
            if pod is None or not pod.ready:
                state = pod.status.phase if pod else "not found"
                raise PodStartError(self._pod_name, "NotReady", f"cannot attach: pod is {state}")
            self._pod = pod
            self._extra_env = {**self._shape.env, **self._extra_env}
            return
        if self._pool is not None:
            pod = self._pool.claim(self._owner_id, timeout=self._startup_timeout)
            self._pod, self._pod_name, self._from_pool = pod, pod.metadata.name, True
            self._extra_env = {**self._shape.env, **self._extra_env}
            return
        if self._shared_resources:
            found = find_reusable(self._kubectl, self._shape.image, str(self._work_dir))
            if found is not None:
                self._pod = found
                self._pod_name = found.metadata.name
                # Container env of a reused pod is not ours: send ours with every run.
                self._extra_env = {**self._shape.env, **self._extra_env}
                logger.info("reusing pod %s", self._pod_name)
                return
        if not self._owner_resolved:
            self._owner_references = resolve_owner_references(
                self._kubectl, self._owner_reference, self._namespace
            )
            self._owner_resolved = True
        manifest = self.manifest()
        self._created = True
        try:
            create_pod(self._kubectl, manifest, network_policy=self._network_policy)
            self._pod = wait_ready(self._kubectl, self._pod_name, self._startup_timeout)
        except BaseException:
            self._delete_quietly()
            raise
        logger.info("pod %s is ready", self._pod_name)

    create_resources = start

    def stop(self) -> None:
        """Delete the pod we created (not a reused one); idempotent; NotFound is fine."""
        self._close_session()
        self._release_pool_pod()
        if self._created and not self._keep_pod:
            # If the delete fails, stay "created" and registered: stop() again (or the atexit
            # backstop) retries it instead of forgetting the pod.
            delete_pod(self._kubectl, self._pod_name, network_policy=self._network_policy)
        elif self._created:
            logger.warning("keep_pod=True: leaving pod %s running", self._pod_name)
        self._created = False
        self._pod = None
        self._kubectl.close()
        _live.discard(self)

    def cleanup(self) -> None:
        """The seed's name for :meth:`stop`."""
        self.stop()

    def restart(self) -> None:
        """Stop, then create a fresh pod with the same options."""
        self._close_session()
        self._release_pool_pod()
        self._extra_env = dict(self._bashrc_env)
        if self._created and not self._keep_pod:
            delete_pod(
                self._kubectl,
                self._pod_name,
                wait=self._fixed_name is not None,
                network_policy=self._network_policy,
            )
        self._created = False
        self._pod = None
        if self._fixed_name is None:
            self._pod_name = generate_pod_name()
        _live.add(self)
        self.start()
        if self._bashrc_env:  # as in the seed, where they stay in the pod's ~/.bashrc
            self._write_bashrc()

    def _close_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def _release_pool_pod(self) -> None:
        if self._from_pool and self._pool is not None:
            self._from_pool = False
            self._pool.release(self._pod_name)

    def _session_for_pod(self) -> Session:
        """The persistent session to the current pod (made on first use)."""
        from ._exec.session import Session

        if self._session is None or self._session.pod != self._pod_name:
            self._close_session()
            self._session = Session(
                self._kubectl,
                self._pod_name,
                stateful=self._stateful,
                max_output_bytes=self._max_output_bytes,
                session_id=self._owner_id,
            )
        return self._session

    def _delete_quietly(self) -> None:
        try:
            delete_pod(self._kubectl, self._pod_name, network_policy=self._network_policy)
        except KubectlExecutorError as exc:
            logger.warning("could not delete pod %s: %s", self._pod_name, exc)
        self._created = False

    def handle_sigint(self, signum: int, frame: FrameType | None) -> None:
        """For users who opt in with ``signal.signal(SIGINT, ex.handle_sigint)``; never installed by us."""
        self.stop()
        raise KeyboardInterrupt

    def __enter__(self) -> KubernetesCommandLineCodeExecutor:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- running code -------------------------------------------------------------------------

    def execute_code_blocks(
        self, code_blocks: Sequence[CodeBlock], *, on_output: OutputCallback | None = None
    ) -> CommandLineCodeResult:
        """Run blocks in order; stop at the first non-zero exit. Non-zero exits are data."""
        if len(code_blocks) == 0:
            raise InvalidInputError("No code blocks to execute.")  # the seed's error and words
        outputs: list[str] = []
        stdouts: list[str] = []
        stderrs: list[str] = []
        logs: list[str] = []
        code_file: str | None = None
        exit_code = 0
        timed_out = truncated = state_lost = False
        rich: RichResults = EMPTY
        self._cancelled = False
        for block in code_blocks:
            if self._cancelled:
                outputs.append("Cancelled.\n")
                exit_code = exit_code or 130
                break
            lang = resolve_language(block.language)
            if lang is None:
                message = f"Unsupported language {seed_language(block.language)}{UNSUPPORTED_DETAIL}\n"
                outputs.append(message)
                stderrs.append(message)
                exit_code = 1
                break
            code = silence_pip(block.code, block.language)
            try:
                filename = code_filename(code, lang, block.language, str(self._work_dir))
            except UnsafePathError as exc:
                message = f"Filename is not in the workspace: {exc}\n"
                outputs.append(message)
                stderrs.append(message)
                exit_code = 1
                break
            path = str(self._work_dir / filename)
            if code_file is None:
                code_file = path
            execute = should_execute(block.language, self._execution_policies)
            result = self._run(code.encode(), filename, lang.runner if execute else None, on_output=on_output)
            if not execute:
                outputs.append(f"Code saved to {path}\n")
                continue
            out = result.stdout.decode(errors="replace")
            err = result.stderr.decode(errors="replace")
            outputs.append(out + err)
            stdouts.append(out)
            stderrs.append(err)
            logs.extend(result.log_files)
            rich = rich + parse_report(result.rich)
            truncated = truncated or result.truncated
            state_lost = state_lost or result.state_lost
            exit_code = result.exit_code
            if result.timed_out:
                timed_out = True
                outputs.append("\n" + TIMEOUT_NOTE.format(timeout=self._timeout))
            if exit_code != 0:
                break
        from .boundary import CommandLineCodeResult

        return CommandLineCodeResult(
            exit_code=exit_code,
            output="".join(outputs),
            code_file=code_file,
            stdout="".join(stdouts),
            stderr="".join(stderrs),
            timed_out=timed_out,
            truncated=truncated,
            log_files=logs,
            state_lost=state_lost,
            outputs=rich.outputs,
            files=rich.files,
            files_truncated=rich.files_truncated,
        )

    def run(
        self,
        code: str,
        language: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        on_output: OutputCallback | None = None,
        keep_file: bool = False,
    ) -> BlockResult:
        """Run ONE block and return its outcome (the block loop's rules: shell ``pip install`` is
        quietened, the execution policy decides whether it runs or is only saved).

        The code is kept as a file only when asked: a ``# filename:`` first line, ``keep_file``,
        or a save-only language; otherwise it runs from a hidden scratch file that the next run
        replaces. ``env`` adds variables for this run only. With ``session=True`` the block goes
        over the persistent channel; if that channel cannot be opened the block runs as one
        stateless exec instead (a block whose outcome was lost is never re-run)."""
        lang = resolve_language(language)
        if lang is None:
            raise InvalidInputError(
                f"unsupported language {language!r}: use python, bash, sh or pwsh "
                "(javascript, html and css are saved, not run)"
            )
        if timeout is not None and (not math.isfinite(timeout) or timeout < 1):
            raise InvalidInputError("timeout must be a number of seconds >= 1")
        if lang.runner in ("sh", "bash"):
            code = quiet_pip(code)
        execute = should_execute(language, self._execution_policies)
        keep = keep_file or not execute or filename_hint(code) is not None
        filename = code_filename(code, lang) if keep else f"{SCRATCH_STEM}.{lang.extension}"
        request = RunRequest(
            code=code.encode(),
            work_dir=str(self._work_dir),
            path=validate_relative_path(filename),
            runner=lang.runner if execute else None,
            timeout=float(timeout if timeout is not None else self._timeout),
            budget=self._max_output_bytes,
            env={**self._extra_env, **(env or {}), RICH_ENV: self._rich.env_value()},
        )
        path = str(self._work_dir / filename) if keep else None
        done = self._execute(request, on_output or self._on_output, stateless=not self._session_ready())
        if not execute:
            return BlockResult(0, f"Code saved to {path}\n", "", file=path, executed=False)
        rich = parse_report(done.rich)
        return BlockResult(
            exit_code=done.exit_code,
            stdout=done.stdout.decode(errors="replace"),
            stderr=done.stderr.decode(errors="replace"),
            timed_out=done.timed_out,
            truncated=done.truncated,
            log_files=tuple(done.log_files),
            file=path,
            state_lost=done.state_lost,
            outputs=rich.outputs,
            files=rich.files,
            files_truncated=rich.files_truncated,
        )

    @property
    def max_output_bytes(self) -> int:
        """The per-stream output budget of a run (head and tail kept beyond it)."""
        return self._max_output_bytes

    def _session_ready(self) -> bool:
        """Open the persistent channel if this executor uses one; False (stateless fallback) when it
        cannot be opened. Opening runs no code, so falling back cannot run a block twice."""
        if not self._use_session:
            return False
        self._ensure_pod()
        try:
            self._session_for_pod().connect()
        except NotFoundError:
            raise
        except KubectlExecutorError as exc:
            logger.warning(
                "persistent session to pod %s unavailable, running stateless: %s", self._pod_name, exc
            )
            return False
        return True

    def _ensure_pod(self) -> None:
        if self._pod is None:
            self.start()

    def _run(
        self,
        code: bytes,
        relpath: str,
        runner: str | None,
        *,
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        """One block: code on stdin, outcome from the completion marker, never re-run."""
        callback = on_output or self._on_output
        request = RunRequest(
            code=code,
            work_dir=str(self._work_dir),
            path=validate_relative_path(relpath),
            runner=runner,
            timeout=float(timeout or self._timeout),
            budget=self._max_output_bytes,
            env={**self._extra_env, RICH_ENV: self._rich.env_value()},
        )
        return self._execute(request, callback)

    def _execute(
        self, request: RunRequest, callback: OutputCallback | None, *, stateless: bool = False
    ) -> ExecResult:
        """Run a request in the pod (the session's channel, or one exec), cancellable."""
        self._ensure_pod()
        try:
            return self._execute_in_pod(request, callback, stateless)
        except KubectlError as exc:
            # kubectl refused the exec (it provably did not start): the pod's main process has
            # exited, e.g. killed, and with restartPolicy Never the pod stays Failed for ever.
            if self._keep_pod or not self._pod_has_ended(exc.stderr):
                raise
            logger.warning("pod %s has terminated (%s); replacing it", self._pod_name, exc.stderr.strip())
        self.restart()
        result = self._execute_in_pod(request, callback, stateless)
        return replace(result, stderr=result.stderr + POD_REPLACED_NOTE.encode(), state_lost=True)

    def _pod_has_ended(self, refusal: str) -> bool:
        """Whether an exec was refused because the pod's container has ended for good. Said by
        kubectl once the kubelet has reported it; before that the kubelet answers "container not
        found", and the pod's status is polled until it shows the container terminated."""
        if COMPLETED_POD in refusal:
            return True
        if CONTAINER_GONE not in refusal:
            return False
        for _ in range(ENDED_POLLS):
            pod = get_pod(self._kubectl, self._pod_name)
            if pod is None or pod.metadata.deletion_timestamp:
                return False  # deleted, not ended: not ours to replace behind the user's back
            if pod.status.phase in ("Failed", "Succeeded") or any(
                cs.state.terminated for cs in pod.status.container_statuses
            ):
                return True
            self._kubectl.retry.sleep(1.0)
        return False

    def _execute_in_pod(
        self, request: RunRequest, callback: OutputCallback | None, stateless: bool
    ) -> ExecResult:
        with self._cancel_lock:
            self._running = request.nonce
        try:
            if self._use_session and not stateless:
                return self._session_for_pod().run(request, callback)
            return self._run_stateless(request, callback)
        finally:
            with self._cancel_lock:
                self._running = None

    def cancel(self) -> bool:
        """Stop the block in flight (its whole process group in the pod) and skip the blocks
        after it. Thread-safe: meant to be called from another thread. True if one was running."""
        with self._cancel_lock:
            self._cancelled = True
            nonce = self._running
        if nonce is None:
            return False
        session = self._session
        # The session kills its block in flight and keeps the channel (and a stateful kernel).
        if session is None or not session.cancel(nonce):
            self._kill_in_pod(nonce)
        return True

    def _run_stateless(self, request: RunRequest, callback: OutputCallback | None) -> ExecResult:
        return run_stateless(
            self._kubectl,
            self._pod_name,
            request,
            callback,
            max_output_bytes=self._max_output_bytes,
            frame_limit=self._rich.frame_limit(),
            kill=self._kill_in_pod,
        )

    def _kill_in_pod(self, nonce: str) -> None:
        try:
            args = kill_args(self._pod_name, CONTAINER, nonce, str(self._work_dir))
            self._kubectl.run(args, timeout=30, check=False)
        except KubectlExecutorError as exc:
            logger.warning("could not stop the timed-out run in pod %s: %s", self._pod_name, exc)

    # -- files (PodFiles) -------------------------------------------------------------------------

    def upload_file_content(
        self, relative_path: str | PurePath, content: str | bytes, *, timeout: float | None = None
    ) -> str:
        """Write ``content`` (str as UTF-8, or bytes) at ``relative_path`` under work_dir.

        Returns the pod path. The file appears whole or not at all."""
        return self._files.upload_file_content(relative_path, content, timeout=timeout)

    def upload_from_disk(
        self,
        local_path: str | os.PathLike[str],
        *,
        remote_prefix: str = "",
        encoding: str = "utf-8",
        exclude: Sequence[str] = DEFAULT_EXCLUDES,
        timeout: float | None = None,
    ) -> list[str]:
        """Upload a local file, or every file of a tree, into work_dir in ONE exec.

        A file lands at ``<remote_prefix>/<name>``, a tree's files at
        ``<remote_prefix>/<path inside the tree>``. ``exclude`` holds glob patterns matched
        against each path component (default: ``__pycache__`` and dot-names, like the seed).
        Files travel byte for byte (binary included); ``encoding`` is accepted for the seed's
        signature and not needed. Returns the pod paths written.
        """
        return self._files.upload_from_disk(
            local_path, remote_prefix=remote_prefix, encoding=encoding, exclude=exclude, timeout=timeout
        )

    def download_file(
        self,
        remote_path: str | PurePath,
        local_path: str | os.PathLike[str],
        *,
        limits: TransferLimits | None = None,
        timeout: float | None = None,
    ) -> Path:
        """Copy one regular file from the pod (relative to work_dir, or absolute under work_dir or
        the run-log directory) to ``local_path``, replacing it atomically. Returns the local path."""
        return self._files.download_file(remote_path, local_path, limits=limits, timeout=timeout)

    def download_dir(
        self,
        remote_dir: str | PurePath,
        local_dir: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        skip_unsafe: bool = False,
        limits: TransferLimits | None = None,
        timeout: float | None = None,
    ) -> list[Path]:
        """Copy a directory of the pod (``""`` = all of work_dir) to ``local_dir``.

        ``local_dir`` must not exist (or be empty) unless ``overwrite``, which replaces it whole.
        Links, devices and fifos make the download fail, or with ``skip_unsafe`` are left out.
        Returns the local files written."""
        return self._files.download_dir(
            remote_dir,
            local_dir,
            overwrite=overwrite,
            skip_unsafe=skip_unsafe,
            limits=limits,
            timeout=timeout,
        )

    # -- tool functions (PodTools) --------------------------------------------------------------

    def install_pod_dispatcher(
        self, *, default_module: str = "robin_user", runner_filename: str = "executor.py"
    ) -> str:
        """Upload the tool runner to ``runner_filename`` under work_dir; returns its pod path.

        Upload your code first (:meth:`upload_from_disk`); ``default_module`` is imported when a
        call names no module."""
        return self._tools.install(default_module, runner_filename)

    def execute_tool_function(
        self,
        arguments: dict[str, Any] | str,
        func_name: str,
        *,
        module: str | None = None,
        runner_script: str = "executor.py",
        timeout: float | None = None,
        on_output: OutputCallback | None = None,
    ) -> ToolCommandLineCodeResult:
        """Call ``module.func_name(**arguments)`` in the pod through the runner at ``runner_script``.

        Seed semantics: ``arguments`` is a dict or a JSON string (bad JSON -> ValueError, anything
        else -> TypeError, raised here before any kubectl call); ``module`` defaults to the
        runner's default; ``output`` is what the call printed, including a non-None result; an
        exception in the pod (a TypeError for mismatched arguments too) is exit code 1, not an
        exception here. ``tool_result`` carries the structure (None with a runner that writes none).
        Always the stateless path: a session's agent runs code blocks, not tool calls.
        """
        return self._tools.call(
            arguments,
            func_name,
            module=module,
            runner_script=runner_script,
            work_dir=self._work_dir,
            timeout=timeout if timeout is not None else self._timeout,
            budget=self._max_output_bytes,
            env=dict(self._extra_env),
            on_output=on_output or self._on_output,
        )

    # -- the seed's other members -------------------------------------------------------------

    def add_env_vars_to_bashrc(self, env_vars: list[dict[str, str]] | dict[str, str]) -> None:
        """Export variables for later runs and interactive shells. Values are quoted; calling
        again replaces the block instead of appending another."""
        new = _env_dict(env_vars) if isinstance(env_vars, list) else dict(env_vars)
        for key, value in new.items():
            validate_env_name(key)
            validate_env_value(key, value)
        if not new:
            return  # as the seed: nothing to add, no exec
        self._extra_env.update(new)
        self._bashrc_env.update(new)
        self._write_bashrc()

    def _write_bashrc(self) -> None:
        block = "\n".join(
            [BASHRC_BEGIN]
            + [f"export {k}={shlex.quote(v)}" for k, v in self._extra_env.items()]
            + [BASHRC_END, ""]
        )
        script = (
            'f="$HOME/.bashrc"; touch "$f" && '
            f'sed \'/^{BASHRC_BEGIN}$/,/^{BASHRC_END}$/d\' "$f" > "$f.kx" && '
            'cat >> "$f.kx" && mv -f "$f.kx" "$f"'
        )
        self._ensure_pod()
        self._kubectl.run(
            ["exec", "-i", self._pod_name, "-c", CONTAINER, "--", "sh", "-c", script],
            stdin=block.encode(),
        )

    def is_pod_running_with_image(self) -> str | None:
        """This executor's pod name if it is Running with our image, else None. A pod being
        deleted is not running: its phase stays Running until the kubelet has stopped it, which on
        a real cluster is after ``cleanup()`` has returned (the delete does not wait)."""
        pod = get_pod(self._kubectl, self._pod_name)
        if pod is None or pod.status.phase != "Running" or pod.metadata.deletion_timestamp:
            return None
        images = [c.image for c in pod.spec.containers]
        return pod.metadata.name if self._shape.image in images else None

    def get_pod_resource_usage(self) -> dict[str, dict[str, str]] | None:
        """CPU and memory of THIS pod from metrics.k8s.io, in the seed's shape
        ``{container: {"cpu": ..., "memory": ...}}``; None (logged) when unavailable."""
        namespace = self.namespace
        if namespace is None:
            pod = get_pod(self._kubectl, self._pod_name)
            namespace = pod.metadata.namespace if pod else None
        if not namespace:
            logger.info("resource usage unavailable: pod %s not found", self._pod_name)
            return None
        path = f"/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods/{self._pod_name}"
        try:
            data = self._kubectl.json(["get", "--raw", path], idempotent=True)
        except KubectlExecutorError as exc:
            logger.info("resource usage unavailable (metrics API): %s", exc)
            return None
        usage: dict[str, dict[str, str]] = {}
        for container in data.get("containers", []):
            measured = container.get("usage", {})
            if container.get("name") and measured:
                usage[str(container["name"])] = {k: str(v) for k, v in measured.items()}
        return usage or None


def _env_dict(env_vars: list[dict[str, str]] | None) -> dict[str, str]:
    """The seed's ``[{"key": ..., "value": ...}]`` list as :attr:`PodShape.env`, validated."""
    env: dict[str, str] = {}
    for item in env_vars or []:
        if not isinstance(item, dict) or "key" not in item or "value" not in item:
            raise InvalidInputError(f"env_vars items must be {{'key', 'value'}} dicts, got {item!r}")
        key = validate_env_name(str(item["key"]))
        env[key] = validate_env_value(key, str(item["value"]))
    return env


# Best-effort backstop: pods of executors never stopped are deleted at interpreter exit.
# Strong references on purpose: an executor that was dropped without stop() still owns a pod.
_live: set[KubernetesCommandLineCodeExecutor] = set()


@atexit.register
def _stop_all() -> None:
    for executor in list(_live):
        try:
            executor.stop()
        except Exception as exc:
            logger.warning("could not stop executor for pod %s: %s", executor.pod_name, exc)
