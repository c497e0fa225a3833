"""Retry policies, named for what they protect. Only repeatable work is ever retried.

* :func:`call_with_retry` with the default ``retry_on`` (:class:`~kubectl_executor.errors.TransientError`)
  -- reads, apply, delete, wait: the call can be repeated without harm.
* The exec path retries only :class:`~kubectl_executor.errors.ExecNotStartedError` (the code
  provably never reached the pod): the same function and policy with that narrower ``retry_on``.

Both are bounded in attempts and total time, jittered, honour a server's Retry-After, and take
their ``sleep`` from the policy so tests run instantly.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import tenacity


from ..errors import TransientError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. ``sleep`` is injectable so that unit tests do not wait."""

    attempts: int = 5
    max_total_seconds: float = 60.0
    initial_wait: float = 0.2
    max_wait: float = 8.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def wait_for(self, attempt: int, error: BaseException | None) -> float:
        """Exponential backoff with full jitter, but never less than the server's Retry-After."""
        ceiling = min(self.max_wait, self.initial_wait * (2 ** (attempt - 1)))
        delay = random.uniform(ceiling / 2, ceiling)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), self.max_total_seconds))
        return delay


NO_RETRY = RetryPolicy(attempts=1)


def call_with_retry(
    policy: RetryPolicy,
    fn: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...] = (TransientError,),
    what: str = "kubectl",
) -> T:
    """Run ``fn``; on an exception in ``retry_on`` wait and try again within the policy's bounds."""
    if policy.attempts <= 1:
        return fn()
    import tenacity  # imported on first retryable call: keeps `import kubectl_executor` fast

    def _wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return policy.wait_for(state.attempt_number, error)

    def _log(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        logger.warning(
            "%s failed (attempt %d/%d), retrying: %s",
            what,
            state.attempt_number,
            policy.attempts,
            getattr(error, "message", error),
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts)
        | tenacity.stop_after_delay(policy.max_total_seconds),
        wait=_wait,
        retry=tenacity.retry_if_exception_type(retry_on),
        sleep=policy.sleep,
        before_sleep=_log,
        reraise=True,
    )
    return retrying(fn)
