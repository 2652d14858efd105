"""The saga orchestrator on real databases: forward, compensation, retries, start and bad messages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

import saga
from outbox import Envelope
from saga import RetryPolicy, StepFailed
from tests._saga import (
    INVENTORY,
    PAYMENT,
    REPLIES,
    TIMERS,
    answer,
    available_at,
    deliver,
    fail_always,
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


def test_saga_happy_path_completes_with_one_command_per_step(engine: sa.Engine) -> None:
    """Each command leaves through the outbox with the saga headers; ok replies run the saga to completion."""
    orch = orchestrator()
    with structlog.testing.capture_logs() as logs:
        saga_id = start(engine, orch, order_id="o-1")
    inst = instance(engine, saga_id)
    assert (inst.state, inst.step, inst.attempt) == (saga.SagaState.RUNNING, 1, 1)
    assert order_status(engine, "o-1") == "pending"
    reserve = last(engine, INVENTORY)
    assert reserve.type == "ReserveStock"
    assert reserve.key == str(saga_id)
    assert reserve.payload == {"sku": "sku-1"}
    assert dict(reserve.headers) == {
        "saga_id": str(saga_id),
        "saga_type": "order",
        "saga_step": "1",
        "saga_attempt": "1",
        "saga_phase": "action",
        "reply_to": REPLIES,
        "correlation_id": str(saga_id),
    }
    assert [e["event"] for e in logs] == ["saga.started", "saga.step_command_sent"]
    assert timers(engine) == [(saga_id, saga.TIMEOUT_TIMER)]

    reply = answer(engine, reserve, data={"reservation": "r-9"})
    outcome = deliver(engine, orch, reply)
    assert outcome == saga.HandlingResult(saga_id=saga_id, applied=True, state=saga.SagaState.RUNNING)
    charge = last(engine, PAYMENT)
    assert charge.type == "ChargePayment"
    assert charge.headers["causation_id"] == str(reply.id)
    assert charge.headers["correlation_id"] == str(saga_id)

    with structlog.testing.capture_logs() as logs:
        deliver(engine, orch, answer(engine, charge, data={"payment_id": "p-7"}))
    assert "saga.completed" in [e["event"] for e in logs]
    inst = instance(engine, saga_id)
    assert inst.state is saga.SagaState.COMPLETED
    assert inst.data["payment_id"] == "p-7"
    assert inst.data["reservation"] == "r-9"
    assert inst.data["order_status"] == "approved"
    assert inst.deadline_at is None
    assert order_status(engine, "o-1") == "approved"
    assert [m.type for m in messages(engine, INVENTORY) + messages(engine, PAYMENT)] == [
        "ReserveStock",
        "ChargePayment",
    ]
    assert timers(engine) == []
    assert messages(engine, TIMERS) == []  # cancelled timers never reach the broker
    assert kinds(engine, saga_id) == [
        ("started", None),
        ("local_done", 0),
        ("command_sent", 1),
        ("reply_received", 1),
        ("command_sent", 2),
        ("reply_received", 2),
        ("local_done", 3),
        ("completed", None),
    ]


def test_saga_failure_reply_compensates_completed_steps_in_reverse(engine: sa.Engine) -> None:
    """A declined payment compensates stock then the order, never the payment, and ends compensated."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-2")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    with structlog.testing.capture_logs() as logs:
        outcome = deliver(
            engine, orch, answer(engine, last(engine, PAYMENT), ok=False, reason="card declined")
        )
    assert outcome.state is saga.SagaState.COMPENSATING
    assert [e["event"] for e in logs] == ["saga.compensating", "saga.step_command_sent"]
    assert logs[0]["saga_id"] == str(saga_id)
    release = last(engine, INVENTORY)
    assert release.type == "ReleaseStock"
    assert release.headers["saga_phase"] == "compensation"
    assert release.headers["saga_step"] == "1"
    assert order_status(engine, "o-2") == "pending"

    deliver(engine, orch, answer(engine, release))
    inst = instance(engine, saga_id)
    assert inst.state is saga.SagaState.COMPENSATED
    assert inst.error == "step 'charge_payment' failed: card declined"
    assert order_status(engine, "o-2") == "cancelled"
    assert [m.type for m in messages(engine, PAYMENT)] == ["ChargePayment"]  # no refund for a declined charge
    assert kinds(engine, saga_id)[5:] == [
        ("reply_received", 2),
        ("compensating", None),
        ("compensation_sent", 1),
        ("compensated", 1),
        ("compensated", 0),
        ("saga_compensated", None),
    ]


def test_saga_failure_at_first_command_compensates_only_the_local_step(engine: sa.Engine) -> None:
    """Out of stock at step 1 undoes step 0 (a local compensation) in the same transaction as the reply."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-3")
    outcome = deliver(engine, orch, answer(engine, last(engine, INVENTORY), ok=False, reason="no stock"))
    assert outcome.state is saga.SagaState.COMPENSATED
    assert order_status(engine, "o-3") == "cancelled"
    assert [m.type for m in messages(engine, INVENTORY)] == ["ReserveStock"]
    assert messages(engine, PAYMENT) == []
    assert timers(engine) == []
    assert instance(engine, saga_id).error == "step 'reserve_stock' failed: no stock"


def test_saga_compensation_failure_is_retried_with_backoff_until_it_succeeds(engine: sa.Engine) -> None:
    """A refused compensation is sent again (attempt 2, 3, ...) after a growing backoff, then the saga goes on."""
    orch = orchestrator()  # reserve_stock keeps the default policy: 1 s, then doubling
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    deliver(engine, orch, answer(engine, last(engine, PAYMENT), ok=False, reason="declined"))
    first = last(engine, INVENTORY, "ReleaseStock")
    deliver(engine, orch, answer(engine, first, ok=False, reason="inventory db down"))
    second = last(engine, INVENTORY, "ReleaseStock")
    assert second.headers["saga_attempt"] == "2"
    assert available_at(engine, second.id) >= second.time + dt.timedelta(seconds=0.9)
    deliver(engine, orch, answer(engine, second, ok=False, reason="still down"))
    third = last(engine, INVENTORY, "ReleaseStock")
    assert third.headers["saga_attempt"] == "3"
    assert available_at(engine, third.id) >= third.time + dt.timedelta(seconds=1.9)
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATING
    deliver(engine, orch, answer(engine, third))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED
    assert [k for k in kinds(engine, saga_id) if k[0] in {"retried", "compensated"}] == [
        ("retried", 1),
        ("retried", 1),
        ("compensated", 1),
        ("compensated", 0),
    ]


def test_saga_local_compensation_failure_is_retried_by_a_timer(engine: sa.Engine) -> None:
    """A local compensation that raises is rolled back and tried again when its retry timer fires."""
    calls: list[int] = []

    def flaky_cancel(session: Session, ctx: saga.SagaContext) -> None:
        calls.append(ctx.attempt)
        session.execute(sa.text("UPDATE test_orders SET status = 'half-cancelled'"))
        if ctx.attempt < 2:
            raise RuntimeError("lock timeout")
        session.execute(sa.text("UPDATE test_orders SET status = 'cancelled'"))

    orch = orchestrator(order_saga(cancel=flaky_cancel))
    saga_id = start(engine, orch, order_id="o-4")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY), ok=False, reason="no stock"))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATING
    assert order_status(engine, "o-4") == "pending"  # the failed try left nothing behind
    retry = timer(engine, saga_id, saga.RETRY_TIMER)
    assert deliver(engine, orch, retry).state is saga.SagaState.COMPENSATED
    assert calls == [1, 2]
    assert order_status(engine, "o-4") == "cancelled"
    assert deliver(engine, orch, retry).applied is False  # the same timer again: a no-op


def test_saga_local_action_step_failed_compensates_without_retry(engine: sa.Engine) -> None:
    """StepFailed from a local action compensates every earlier step at once."""
    orch = orchestrator(order_saga(approve=fail_always, approve_retry=RetryPolicy(max_attempts=3)))
    saga_id = start(engine, orch, order_id="o-5")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    deliver(engine, orch, answer(engine, last(engine, PAYMENT), data={"payment_id": "p-1"}))
    inst = instance(engine, saga_id)
    assert inst.state is saga.SagaState.COMPENSATING
    assert inst.error == "step 'approve_order' failed: approval refused"
    refund = last(engine, PAYMENT)
    assert (refund.type, refund.payload) == ("RefundPayment", {"payment_id": "p-1"})
    deliver(engine, orch, answer(engine, refund))
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED
    assert order_status(engine, "o-5") == "cancelled"


def test_saga_local_action_transient_error_is_retried_then_succeeds(engine: sa.Engine) -> None:
    """Any other exception rolls the local action back and retries it under the step's policy."""
    tries: list[int] = []

    def flaky_approve(session: Session, ctx: saga.SagaContext) -> dict[str, str]:
        tries.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("ledger unreachable")
        return {"approved_on_attempt": str(ctx.attempt)}

    policy = RetryPolicy(max_attempts=2, backoff=dt.timedelta(seconds=5))
    orch = orchestrator(order_saga(approve=flaky_approve, approve_retry=policy))
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    deliver(engine, orch, answer(engine, last(engine, PAYMENT)))
    inst = instance(engine, saga_id)
    assert (inst.state, inst.step, inst.attempt) == (saga.SagaState.RUNNING, 3, 1)
    retry = timer(engine, saga_id, saga.RETRY_TIMER)
    assert available_at(engine, retry.id) >= retry.time + dt.timedelta(seconds=4.9)
    assert inst.deadline_at is not None
    assert deliver(engine, orch, retry).state is saga.SagaState.COMPLETED
    assert tries == [1, 2]
    assert instance(engine, saga_id).data["approved_on_attempt"] == "2"


def test_saga_start_with_existing_id_raises_and_writes_nothing(engine: sa.Engine) -> None:
    """Starting a saga under an id in use is refused; the caller's transaction can roll back cleanly."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-6")
    before = len(messages(engine))
    with Session(engine) as session, session.begin():
        with pytest.raises(saga.SagaExistsError):
            orch.start(session, "order", {"order_id": "o-7", "sku": "s", "amount": "1"}, saga_id=saga_id)
    assert len(messages(engine)) == before


def test_saga_start_unknown_type_raises_definition_error(engine: sa.Engine) -> None:
    """An unknown saga type is refused with the known names."""
    with Session(engine) as session, pytest.raises(saga.SagaDefinitionError, match="known: order"):
        orchestrator().start(session, "shipping", {})


def test_saga_start_takes_correlation_and_causation_from_the_cause(engine: sa.Engine) -> None:
    """A saga started by a message carries the cause's correlation id and names it as causation."""
    orch = orchestrator()
    trigger = Envelope(
        id=uuid.uuid4(),
        topic="orders.events",
        type="OrderCreated",
        source="tests",
        key="o-8",
        time=dt.datetime.now(dt.UTC),
        headers={"correlation_id": "flow-1"},
        payload={},
    )
    with Session(engine) as session, session.begin():
        saga_id = orch.start(session, "order", {"order_id": "o-8", "sku": "s", "amount": "1"}, cause=trigger)
    command = last(engine, INVENTORY)
    assert command.headers["correlation_id"] == "flow-1"
    assert command.headers["causation_id"] == str(trigger.id)
    assert instance(engine, saga_id).correlation_id == "flow-1"


def test_saga_reply_without_saga_headers_raises_message_error(engine: sa.Engine) -> None:
    """A message that is not a saga reply is refused (the inbox dead-letters it), changing nothing."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    reply = answer(engine, last(engine, INVENTORY))
    broken = dataclasses.replace(reply, headers={k: v for k, v in reply.headers.items() if k != "saga_step"})
    with Session(engine) as session, session.begin():
        with pytest.raises(saga.SagaMessageError, match="saga_step"):
            orch.handle_reply(session, broken)
    not_a_reply = dataclasses.replace(reply, payload={"status": "fine"})
    with Session(engine) as session, session.begin():
        with pytest.raises(saga.SagaMessageError, match="not a saga reply"):
            orch.handle_reply(session, not_a_reply)
    assert instance(engine, saga_id).step == 1


def test_saga_reply_helper_refuses_a_message_that_is_not_a_command(engine: sa.Engine) -> None:
    """saga.reply needs the command's saga headers and reply_to."""
    orch = orchestrator()
    start(engine, orch)
    command = last(engine, INVENTORY)
    stripped = dataclasses.replace(
        command, headers={k: v for k, v in command.headers.items() if k != "reply_to"}
    )
    with Session(engine) as session, pytest.raises(saga.SagaMessageError, match="reply_to"):
        saga.reply(session, stripped, ok=True)


def test_saga_unknown_saga_reply_is_ignored(engine: sa.Engine) -> None:
    """A reply for a saga this database does not hold changes nothing."""
    orch = orchestrator()
    start(engine, orch)
    reply = answer(engine, last(engine, INVENTORY))
    other = str(uuid.uuid4())
    stray = dataclasses.replace(reply, headers={**reply.headers, "saga_id": other})
    outcome = deliver(engine, orch, stray)
    assert (outcome.applied, outcome.state, outcome.reason) == (False, None, "unknown saga")


def test_saga_step_failed_exception_carries_its_reason() -> None:
    """StepFailed keeps the reason it was given."""
    assert StepFailed("nope").reason == "nope"
