"""A pod whose container has ended (killed, OOM) is replaced on the next block, also in the second
or more before the kubelet reports it: kubectl then says "container not found", not "completed"."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from kx_fakes import ExecReply, FakeRunner, ParsedRequest, RunCall, reply_with

from kubectl_executor import KubernetesCommandLineCodeExecutor
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.errors import ExecNotStartedError
from kubectl_executor.executor import ENDED_POLLS

Make = Callable[..., KubernetesCommandLineCodeExecutor]
GONE = b'error: Internal error occurred: unable to upgrade connection: container not found ("executor")\n'


def refused(req: ParsedRequest) -> ExecReply:
    return ExecReply(stderr=GONE, returncode=1, ran=False)


def report_failed_after(fake_runner: FakeRunner, pod: str, polls: int) -> list[int]:
    """The kubelet reports the pod Failed after ``polls`` gets of it."""
    seen = [0]

    def on_run(call: RunCall) -> Completed | None:
        if call.args[:3] == ["get", "pod", pod]:
            seen[0] += 1
            if seen[0] > polls and pod in fake_runner.pods:
                fake_runner.pods[pod]["status"]["phase"] = "Failed"
        return None

    fake_runner.on_run = on_run
    return seen


def test_container_not_found_then_failed_gets_a_fresh_pod(
    make_executor: Make, fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    ex = make_executor()
    first = ex.pod_name
    fake_runner.exec_replies.extend([refused] * 4 + [reply_with(b"ok\n")])  # 4: the policy's attempts
    report_failed_after(fake_runner, first, polls=2)
    sleeps.clear()

    result = ex.run("print('ok')", "python")

    assert (result.exit_code, result.stdout, result.state_lost) == (0, "ok\n", True)
    assert "ran in a fresh pod" in result.stderr and ex.pod_name != first
    assert sleeps.count(1.0) == 2  # two polls found it Running, the third Failed


def test_container_not_found_on_a_pod_that_stays_running_is_raised(
    make_executor: Make, fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    ex = make_executor()
    first = ex.pod_name
    fake_runner.exec_replies.extend([refused] * 4)
    polls = report_failed_after(fake_runner, first, polls=10**6)

    with pytest.raises(ExecNotStartedError, match="container not found"):
        ex.run("print('ok')", "python")
    assert polls[0] == ENDED_POLLS and ex.pod_name == first  # bounded, and nothing replaced


def test_keep_pod_never_replaces(make_executor: Make, fake_runner: FakeRunner) -> None:
    ex = make_executor(keep_pod=True)
    fake_runner.exec_replies.extend([refused] * 4)
    report_failed_after(fake_runner, ex.pod_name, polls=0)

    with pytest.raises(ExecNotStartedError):
        ex.run("print('ok')", "python")
