"""Saga timers are delayed outbox messages: timeouts retry or compensate, stale timers do nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import structlog
import uuid_utils.compat as uuid_utils
from sqlalchemy.orm import Session

import outbox
import saga
from saga import RetryPolicy
from tests._saga import (
    INVENTORY,
    PAYMENT,
    TIMEOUT,
    TIMERS,
    answer,
    available_at,
    deliver,
    instance,
    kinds,
    last,
    make_engine,
    messages,
    orchestrator,
    order_saga,
    order_status,
    start,
    timer,
    timers,
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _mark_published(engine: sa.Engine, message_id: object) -> None:
    table = outbox.outbox_tables().outbox
    with engine.begin() as conn:
        conn.execute(
            sa.update(table)
            .where(table.c.message_id == message_id)
            .values(published_at=dt.datetime.now(dt.UTC))
        )


def test_saga_timer_is_a_delayed_outbox_message_with_a_unique_row(engine: sa.Engine) -> None:
    """Sending a command with a timeout writes one timer row and one message due after the timeout."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    fire = timer(engine, saga_id)
    assert fire.topic == TIMERS
    assert fire.key == str(saga_id)
    assert fire.payload == {"timer": "timeout"}
    assert fire.headers["saga_step"] == "1"
    assert available_at(engine, fire.id) >= fire.time + TIMEOUT - dt.timedelta(seconds=1)
    inst = instance(engine, saga_id)
    assert inst.deadline_at is not None
    assert inst.deadline_at >= fire.time + TIMEOUT - dt.timedelta(seconds=1)


def test_saga_timeout_compensates_including_the_unanswered_step(engine: sa.Engine) -> None:
    """A payment that never answers times out; the payment (outcome unknown), stock and order are undone."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-t1")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    with structlog.testing.capture_logs() as logs:
        outcome = deliver(engine, orch, timer(engine, saga_id))
    assert outcome.state is saga.SagaState.COMPENSATING
    timed_out = [e for e in logs if e["event"] == "saga.timed_out"]
    assert timed_out == [
        {
            "event": "saga.timed_out",
            "log_level": "warning",
            "saga_id": str(saga_id),
            "correlation_id": str(saga_id),
            "step": 2,
            "attempt": 1,
            "phase": "action",
        }
    ]
    refund = last(engine, PAYMENT)
    assert refund.type == "RefundPayment"
    assert refund.headers["saga_phase"] == "compensation"
    deliver(engine, orch, answer(engine, refund))
    deliver(engine, orch, answer(engine, last(engine, INVENTORY, "ReleaseStock")))
    inst = instance(engine, saga_id)
    assert inst.state is saga.SagaState.COMPENSATED
    assert inst.error == "step 'charge_payment' timed out after 1 attempt(s)"
    assert order_status(engine, "o-t1") == "cancelled"
    assert ("timed_out", 2) in kinds(engine, saga_id)


def test_saga_timeout_retries_the_command_before_compensating(engine: sa.Engine) -> None:
    """With max_attempts=2 the first timeout resends the command after the backoff; the second compensates."""
    policy = RetryPolicy(max_attempts=2, backoff=dt.timedelta(seconds=10))
    orch = orchestrator(order_saga(charge_retry=policy))
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    deliver(engine, orch, timer(engine, saga_id))
    resent = last(engine, PAYMENT)
    assert (resent.type, resent.headers["saga_attempt"]) == ("ChargePayment", "2")
    assert available_at(engine, resent.id) >= resent.time + dt.timedelta(seconds=9.9)
    second_timer = timer(engine, saga_id)
    assert second_timer.headers["saga_attempt"] == "2"
    assert available_at(engine, second_timer.id) >= second_timer.time + TIMEOUT + dt.timedelta(seconds=9.9)
    deliver(engine, orch, second_timer)
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATING
    assert last(engine, PAYMENT).type == "RefundPayment"


def test_saga_retried_command_reply_completes_the_step(engine: sa.Engine) -> None:
    """The reply to the resent command moves the saga on; the first attempt's late reply is then ignored."""
    orch = orchestrator(order_saga(charge_retry=RetryPolicy(max_attempts=2)))
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    first = last(engine, PAYMENT)
    deliver(engine, orch, timer(engine, saga_id))
    second = last(engine, PAYMENT)
    late_first = answer(engine, first)
    assert deliver(engine, orch, late_first).reason == "saga is at attempt 2, message is for attempt 1"
    assert deliver(engine, orch, answer(engine, second)).state is saga.SagaState.COMPLETED


def test_saga_stale_timer_after_the_reply_is_a_no_op(engine: sa.Engine) -> None:
    """The reply cancels the timer (row and unpublished message); firing the old message changes nothing."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    old_timer = timer(engine, saga_id)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    assert old_timer.id not in {m.id for m in messages(engine, TIMERS)}  # deleted before the relay saw it
    before = (instance(engine, saga_id), len(messages(engine)), kinds(engine, saga_id))
    with structlog.testing.capture_logs() as logs:
        outcome = deliver(engine, orch, old_timer)
    assert (outcome.applied, outcome.reason) == (False, "saga is at step 2, message is for step 1")
    assert [e["event"] for e in logs] == ["saga.timer_ignored"]
    assert (instance(engine, saga_id), len(messages(engine)), kinds(engine, saga_id)) == before


def test_saga_stale_timer_already_relayed_is_a_no_op(engine: sa.Engine) -> None:
    """A timer message the relay already took stays in the outbox; its row is gone, so it does nothing."""
    orch = orchestrator(order_saga(charge_retry=RetryPolicy(max_attempts=2)))
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    old_timer = timer(engine, saga_id)
    _mark_published(engine, old_timer.id)
    deliver(engine, orch, timer(engine, saga_id))  # attempt 1 times out: attempt 2, new timer
    deliver(engine, orch, answer(engine, last(engine, PAYMENT)))  # attempt 2 succeeds
    assert old_timer.id in {m.id for m in messages(engine, TIMERS)}
    before = instance(engine, saga_id)
    assert deliver(engine, orch, old_timer).applied is False
    assert instance(engine, saga_id) == before


def test_saga_timer_without_its_row_is_ignored_even_if_the_position_matches(engine: sa.Engine) -> None:
    """Only the timer message named in the timer row fires: a forged or superseded one is a no-op."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    real = timer(engine, saga_id)
    forged = dataclasses.replace(real, id=uuid_utils.uuid7())
    outcome = deliver(engine, orch, forged)
    assert (outcome.applied, outcome.reason) == (False, "timer cancelled")
    assert deliver(engine, orch, real).applied is True


def test_saga_compensation_timeout_resends_the_compensation(engine: sa.Engine) -> None:
    """An unanswered compensation times out and is sent again (attempt 2) until it is answered."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    deliver(engine, orch, answer(engine, last(engine, PAYMENT), ok=False, reason="declined"))
    deliver(engine, orch, timer(engine, saga_id))
    resent = last(engine, INVENTORY)
    assert (resent.type, resent.headers["saga_attempt"]) == ("ReleaseStock", "2")
    assert timers(engine) == [(saga_id, saga.TIMEOUT_TIMER)]
    deliver(engine, orch, answer(engine, resent))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED
    assert timers(engine) == []


def test_saga_timer_for_a_finished_saga_is_ignored(engine: sa.Engine) -> None:
    """A timer arriving after the saga finished changes nothing."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    fire = timer(engine, saga_id)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY), ok=False, reason="no stock"))
    outcome = deliver(engine, orch, fire)
    assert (outcome.applied, outcome.state, outcome.reason) == (
        False,
        saga.SagaState.COMPENSATED,
        "saga already compensated",
    )


def test_saga_timer_with_bad_payload_raises_message_error(engine: sa.Engine) -> None:
    """A message on the timer topic that is not a saga timer is refused."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    bogus = dataclasses.replace(timer(engine, saga_id), payload={"timer": "alarm"})
    with Session(engine) as session, pytest.raises(saga.SagaMessageError, match="not a saga timer"):
        orch.handle_timer(session, bogus)
