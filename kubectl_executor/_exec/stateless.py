"""One block as one ``kubectl exec`` (no session): the request on stdin, the output budgeted and
streamed, the frames split off, the outcome from the completion marker (protocol.py), never re-run."""

from __future__ import annotations

from collections.abc import Callable

from .._cluster.klog import KlogFilter
from .._cluster.kubectl import Kubectl, classify_failure
from .._cluster.manifest import CONTAINER
from .._cluster.retry import call_with_retry
from ..errors import ExecNotStartedError, OutcomeUnknownError
from .protocol import (
    ExecResult,
    FrameSplitter,
    MarkerFilter,
    OutputBudget,
    OutputCallback,
    RunRequest,
    exec_args,
    exec_input,
)


def run_stateless(
    kubectl: Kubectl,
    pod_name: str,
    request: RunRequest,
    callback: OutputCallback | None,
    *,
    max_output_bytes: int,
    frame_limit: int,
    kill: Callable[[str], None],
) -> ExecResult:
    """Run ``request`` as one ``kubectl exec`` into ``pod_name``; the outcome comes from the
    completion marker. Retried only while the start marker has not been seen (the code provably
    did not start); ``kill(nonce)`` stops a run whose kubectl timed out."""
    args = exec_args(pod_name, CONTAINER, request.nonce)
    # Beyond the in-pod deadline, a generous margin for kubectl start-up and transfer.
    client_deadline = request.timeout + request.kill_after + 30.0 + len(request.code) / 1e6

    def attempt() -> ExecResult:
        out = OutputBudget(max_output_bytes)
        err = OutputBudget(max_output_bytes)

        def on_stdout(chunk: bytes) -> None:
            out(chunk)
            if callback and chunk:
                callback("stdout", chunk)

        def on_stderr(chunk: bytes) -> None:
            err(chunk)
            if callback and chunk:
                callback("stderr", chunk)

        # The runner's frames (rich results, a tool call's result) come between the program's
        # output and the exit marker.
        limit = max(16 * request.budget + (1 << 20), frame_limit)
        kinds = ("FRAME", "RICH") if request.runner == "call" else ("RICH",)
        frames = FrameSplitter(request.nonce, on_stdout, limit=limit, kinds=kinds)
        marker = MarkerFilter(request.nonce, frames.feed)
        # kubectl's stderr is the program's plus kubectl's own log lines: those go.
        stderr = KlogFilter(on_stderr)
        done = kubectl.stream(
            args,
            stdin=exec_input(request),
            timeout=client_deadline,
            on_stdout=marker.feed,
            on_stderr=stderr.feed,
        )
        stderr.close()
        outcome = marker.close()
        frames.close()
        frame = frames.frames.get("FRAME")
        if outcome is not None:
            logs = []
            if outcome.log_kept:
                base = f"{outcome.log_dir}/{request.nonce}"
                logs = [f"{base}.out", f"{base}.err"]
            note = f"full output in the pod at {outcome.log_dir}/{request.nonce}.*"
            return ExecResult(
                outcome.exit_code,
                out.value(note),
                err.value(note),
                outcome.timed_out,
                out.truncated or err.truncated,
                logs,
                frame,
                rich=frames.frames.get("RICH"),
            )
        if done.timed_out and marker.started:
            kill(request.nonce)
            return ExecResult(124, out.value(), err.value(), True, out.truncated, [])
        if done.timed_out:
            # kubectl hung before or after the start: the run may still be going in the pod.
            kill(request.nonce)
        elif not marker.started and done.returncode != 0:
            stderr_text = err.value().decode(errors="replace")
            raise classify_failure(done.argv, done.returncode, stderr_text, exec_call=True)
        raise OutcomeUnknownError(
            f"the run in pod {pod_name} ended without its completion marker "
            f"(kubectl exit code {done.returncode}); the code may or may not have run "
            "and was not re-run",
            stdout=out.value(),
            stderr=err.value(),
        )

    return call_with_retry(kubectl.retry, attempt, retry_on=(ExecNotStartedError,), what="kubectl exec")
