"""The one backoff (outbox.RetryWait over tenacity), as the relay, consumers and sagas use it (#10)."""

from __future__ import annotations

import datetime as dt

import pytest

from outbox import FailureBackoff, RetryWait
from relay import RelayConfig
from saga import RetryPolicy

S = dt.timedelta(seconds=1)


def test_jittered_delays_double_stay_within_half_and_whole_nominal_and_never_pass_the_cap() -> None:
    wait = RetryWait(base=0.5 * S, cap=30 * S)
    for attempt in range(1, 12):
        nominal = min(30.0, 0.5 * 2 ** (attempt - 1))
        draws = [wait.delay(attempt).total_seconds() for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in draws), attempt
        assert max(draws) - min(draws) > nominal / 10  # jitter: not one figure
    assert wait.delay(10_000) <= 30 * S
    assert wait.delay(0) <= 0.5 * S  # below 1 counts as the first try


def test_without_jitter_the_delay_is_exact() -> None:
    wait = RetryWait(base=1 * S, cap=5 * S, jitter=False)
    assert [wait.delay(n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert RetryWait(base=S, cap=60 * S, multiplier=3, jitter=False).delay(3) == 9 * S
    assert RetryWait(base=dt.timedelta(0), cap=S, jitter=False).delay(7) == dt.timedelta(0)


def test_a_rejected_rows_schedule_keeps_the_relays_semantics() -> None:
    """retry_base doubling per attempt, equal jitter, capped at retry_max (docs/relay.md)."""
    config = RelayConfig(database_url="sqlite://", broker_url="memory://")
    wait = RetryWait(base=config.retry_base, cap=config.retry_max)
    for attempts in range(1, 30):
        nominal = min(config.retry_max, config.retry_base * 2 ** (attempts - 1))
        delay = wait.delay(attempts)
        assert nominal / 2 <= delay <= nominal


def test_a_sagas_retry_policy_is_the_same_formula_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=S, multiplier=2, max_backoff=5 * S)
    assert [policy.delay(n).total_seconds() for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert policy.delay(10_000) == 5 * S


@pytest.mark.parametrize("failures", [5, 8])
def test_an_outage_counter_grows_and_starts_over_after_reset(failures: int) -> None:
    backoff = FailureBackoff(wait=RetryWait(base=S, cap=60 * S))
    delays = [backoff.next_delay() for _ in range(failures)]
    assert backoff.failures == failures
    assert delays[-1] >= min(60, 2 ** (failures - 1)) / 2
    backoff.reset()
    assert backoff.next_delay() <= 1
