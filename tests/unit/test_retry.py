"""retry.py and Kubectl.run: what is retried, how often, how long it waits. Sleeps are recorded, never slept."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
from kx_fakes import FakeRunner, RunCall

from kubectl_executor._cluster.kubectl import Kubectl
from kubectl_executor._cluster.retry import NO_RETRY, RetryPolicy, call_with_retry
from kubectl_executor._cluster.runner import Completed
from kubectl_executor.errors import (
    ExecNotStartedError,
    KubectlError,
    NotFoundError,
    TransientError,
)

UNAVAILABLE = b"Error from server (ServiceUnavailable): the server is currently unable to handle the request (get pods)\n"
TOO_MANY = b"Error from server (TooManyRequests): too many requests, Retry-After: 9\n"
NOT_FOUND = b'Error from server (NotFound): pods "kx-1" not found\n'


def answers(*replies: tuple[int, bytes]) -> Callable[[RunCall], Completed]:
    """A run() hook answering (returncode, stderr) in order; the last one repeats."""
    queue: Iterator[tuple[int, bytes]] = iter(replies)
    last: list[tuple[int, bytes]] = []

    def hook(call: RunCall) -> Completed:
        reply = next(queue, None)
        if reply is None:
            reply = last[0]
        last[:] = [reply]
        rc, stderr = reply
        return Completed(tuple(call.argv), rc, b"ok" if rc == 0 else b"", stderr)

    return hook


def test_transient_failures_are_retried_until_success(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    fake_runner.on_run = answers((1, UNAVAILABLE), (1, UNAVAILABLE), (0, b""))
    done = make_kubectl().run(["get", "pods"])
    assert done.stdout == b"ok"
    assert len(fake_runner.runs) == 3
    assert len(sleeps) == 2
    assert all(0 < s <= 8.0 for s in sleeps)


def test_retries_are_bounded(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    fake_runner.on_run = answers((1, UNAVAILABLE))
    with pytest.raises(TransientError) as info:
        make_kubectl().run(["get", "pods"])
    assert len(fake_runner.runs) == 4  # the fixture's RetryPolicy(attempts=4)
    assert len(sleeps) == 3
    assert "currently unable" in info.value.stderr


def test_kubectl_timeout_counts_as_transient_and_is_retried(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    calls: list[float | None] = []

    def hook(call: RunCall) -> Completed:
        calls.append(call.timeout)
        if len(calls) == 1:
            return Completed(tuple(call.argv), -9, timed_out=True)
        return Completed(tuple(call.argv), 0, b"ok")

    fake_runner.on_run = hook
    assert make_kubectl().run(["get", "pods"], timeout=12).stdout == b"ok"
    assert calls == [12, 12]


def test_retry_after_is_honoured(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    fake_runner.on_run = answers((1, TOO_MANY), (0, b""))
    make_kubectl().run(["get", "pods"])
    assert len(sleeps) == 1
    assert sleeps[0] >= 9.0


def test_backoff_grows_but_stays_under_max_wait() -> None:
    policy = RetryPolicy(initial_wait=1.0, max_wait=4.0)
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)):
        waits = [policy.wait_for(attempt, None) for _ in range(50)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits), (attempt, waits)
    retry_after = TransientError(["kubectl"], 1, "", retry_after=30)
    assert policy.wait_for(1, retry_after) >= 30
    capped = RetryPolicy(max_total_seconds=5.0)
    assert capped.wait_for(1, TransientError(["kubectl"], 1, "", retry_after=600)) == 5.0


@pytest.mark.parametrize(
    "stderr",
    [
        NOT_FOUND,
        b'Error from server (Forbidden): pods is forbidden: User "u" cannot list resource "pods" in API group ""\n',
        b'Error from server (AlreadyExists): pods "kx-1" already exists\n',
        b"error: unknown flag: --bogus\n",
    ],
)
def test_non_transient_failures_are_not_retried(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float], stderr: bytes
) -> None:
    fake_runner.on_run = answers((1, stderr), (0, b""))
    with pytest.raises(KubectlError) as info:
        make_kubectl().run(["get", "pods"])
    assert not isinstance(info.value, TransientError)
    assert len(fake_runner.runs) == 1
    assert sleeps == []


def test_non_idempotent_calls_are_not_retried(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    fake_runner.on_run = answers((1, UNAVAILABLE), (0, b""))
    with pytest.raises(TransientError):
        make_kubectl().run(["create", "-f", "-"], stdin=b"{}", idempotent=False)
    assert len(fake_runner.runs) == 1
    assert sleeps == []


@pytest.mark.parametrize("stream", [lambda: io.BytesIO(b"payload"), lambda: iter([b"pay", b"load"])])
def test_streamed_stdin_is_not_retried(
    make_kubectl: Callable[..., Kubectl],
    fake_runner: FakeRunner,
    sleeps: list[float],
    stream: Callable[[], object],
) -> None:
    fake_runner.on_run = answers((1, UNAVAILABLE), (0, b""))
    with pytest.raises(TransientError):
        make_kubectl().run(["apply", "-f", "-"], stdin=stream())  # type: ignore[arg-type]
    assert len(fake_runner.runs) == 1
    assert fake_runner.runs[0].stdin == b"payload"
    assert not fake_runner.runs[0].stdin_replayable


def test_bytes_stdin_is_replayed_identically(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    fake_runner.on_run = answers((1, UNAVAILABLE), (0, b""))
    make_kubectl().run(["apply", "-f", "-"], stdin=b'{"kind": "Pod"}')
    assert [c.stdin for c in fake_runner.runs] == [b'{"kind": "Pod"}'] * 2


def test_check_false_returns_the_failure(
    make_kubectl: Callable[..., Kubectl], fake_runner: FakeRunner, sleeps: list[float]
) -> None:
    fake_runner.on_run = answers((1, UNAVAILABLE))
    done = make_kubectl().run(["get", "pods"], check=False)
    assert done.returncode == 1
    assert len(fake_runner.runs) == 1


# -- call_with_retry directly -------------------------------------------------------------------------


def test_call_with_retry_narrow_predicate() -> None:
    """The exec path retries only ExecNotStartedError, not other transient errors."""
    sleeps: list[float] = []
    policy = RetryPolicy(attempts=5, sleep=sleeps.append)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ExecNotStartedError(["kubectl", "exec"], 1, "error dialing backend")
        return "ran"

    assert call_with_retry(policy, flaky, retry_on=(ExecNotStartedError,)) == "ran"
    assert len(calls) == 3 and len(sleeps) == 2

    calls.clear()

    def transient() -> str:
        calls.append(1)
        raise TransientError(["kubectl", "exec"], 1, "Error from server (InternalError)")

    with pytest.raises(TransientError):
        call_with_retry(policy, transient, retry_on=(ExecNotStartedError,))
    assert len(calls) == 1


def test_no_retry_policy_calls_once() -> None:
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise TransientError(["kubectl"], 1, "")

    with pytest.raises(TransientError):
        call_with_retry(NO_RETRY, fail)
    assert calls == [1]


def test_other_exceptions_propagate_unretried() -> None:
    sleeps: list[float] = []
    calls: list[int] = []

    def boom() -> None:
        calls.append(1)
        raise NotFoundError(["kubectl"], 1, "not found")

    with pytest.raises(NotFoundError):
        call_with_retry(RetryPolicy(attempts=5, sleep=sleeps.append), boom)
    assert calls == [1] and sleeps == []


def test_retry_is_logged_without_secrets(
    make_kubectl: Callable[..., Kubectl],
    fake_runner: FakeRunner,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The argv that reaches the runner carries a secret flag (a second fence: we never put one
    # there ourselves); the retry warning, the debug log and the final error must not show it.
    secret = "s3cr3t-token-value"
    fake_runner.on_run = answers((1, UNAVAILABLE), (1, UNAVAILABLE), (1, UNAVAILABLE), (1, UNAVAILABLE))
    caplog.set_level("DEBUG", logger="kubectl_executor")
    with pytest.raises(TransientError) as info:
        make_kubectl().run(["get", "pods", f"--token={secret}", "--password", secret])
    assert any(secret in arg for arg in fake_runner.runs[0].argv)  # it really was on the argv
    assert "kubectl get failed (attempt 1/4), retrying" in caplog.text
    assert "--token=<redacted>" in caplog.text
    assert secret not in caplog.text
    assert secret not in str(info.value)
