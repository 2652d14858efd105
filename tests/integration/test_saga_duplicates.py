"""Duplicate, out-of-order and concurrent replies change nothing; an abandoned transition resumes."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session

import saga
import saga._orchestrator
from saga import Command, SagaDefinition, Step
from tests._saga import (
    INVENTORY,
    PAYMENT,
    answer,
    deliver,
    instance,
    kinds,
    last,
    make_engine,
    messages,
    orchestrator,
    order_status,
    start,
    timer,
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _snapshot(engine: sa.Engine, saga_id: object) -> tuple[object, ...]:
    return (instance(engine, saga_id), [m.id for m in messages(engine)], kinds(engine, saga_id))  # type: ignore[arg-type]


def test_saga_duplicate_reply_changes_nothing(engine: sa.Engine) -> None:
    """The same reply delivered twice moves the saga once; the second is logged as ignored."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    reply = answer(engine, last(engine, INVENTORY))
    assert deliver(engine, orch, reply).applied is True
    before = _snapshot(engine, saga_id)
    with structlog.testing.capture_logs() as logs:
        outcome = deliver(engine, orch, reply)
    assert outcome == saga.HandlingResult(
        saga_id=saga_id,
        applied=False,
        state=saga.SagaState.RUNNING,
        reason="saga is at step 2, message is for step 1",
    )
    assert [(e["event"], e["saga_id"], e["step"]) for e in logs] == [("saga.reply_ignored", str(saga_id), 1)]
    assert _snapshot(engine, saga_id) == before
    assert [m.type for m in messages(engine, PAYMENT)] == ["ChargePayment"]


def test_saga_duplicate_failure_reply_does_not_compensate_twice(engine: sa.Engine) -> None:
    """A failure reply delivered again during or after compensation sends no second compensation."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    declined = answer(engine, last(engine, PAYMENT), ok=False, reason="declined")
    deliver(engine, orch, declined)
    assert deliver(engine, orch, declined).applied is False
    release = last(engine, INVENTORY)
    released = answer(engine, release)
    deliver(engine, orch, released)
    assert deliver(engine, orch, released).applied is False
    assert deliver(engine, orch, declined).applied is False
    assert [m.type for m in messages(engine, INVENTORY)] == ["ReserveStock", "ReleaseStock"]
    assert [k for k in kinds(engine, saga_id) if k[0] == "compensated"] == [
        ("compensated", 1),
        ("compensated", 0),
    ]
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED


def test_saga_out_of_order_reply_for_a_later_step_is_ignored(engine: sa.Engine) -> None:
    """A reply naming a step the saga has not reached, or the wrong phase, changes nothing."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    reply = answer(engine, last(engine, INVENTORY))
    ahead = dataclasses.replace(reply, headers={**reply.headers, "saga_step": "2"})
    wrong_phase = dataclasses.replace(reply, headers={**reply.headers, "saga_phase": "compensation"})
    before = _snapshot(engine, saga_id)
    assert deliver(engine, orch, ahead).reason == "saga is at step 1, message is for step 2"
    assert deliver(engine, orch, wrong_phase).reason == "saga is running, message is for the compensation"
    assert _snapshot(engine, saga_id) == before


def test_saga_late_reply_after_timeout_is_ignored(engine: sa.Engine) -> None:
    """A success reply arriving after the step timed out and compensation began changes nothing."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-late")
    charge = None
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    charge = last(engine, PAYMENT)
    deliver(engine, orch, timer(engine, saga_id))
    late = answer(engine, charge, data={"payment_id": "p-late"})
    before = _snapshot(engine, saga_id)
    assert deliver(engine, orch, late).reason == "saga is compensating, message is for the action"
    assert _snapshot(engine, saga_id) == before
    assert "payment_id" not in instance(engine, saga_id).data
    assert [m.type for m in messages(engine, PAYMENT)] == ["ChargePayment", "RefundPayment"]


def test_saga_abandoned_transition_leaves_state_as_before_and_resumes(engine: sa.Engine) -> None:
    """A crash mid-transition (no commit) leaves no trace; handling the redelivered reply completes the saga."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-crash")
    reserve_reply = answer(engine, last(engine, INVENTORY))
    before = _snapshot(engine, saga_id)
    session = Session(engine)
    session.begin()
    assert orch.handle_reply(session, reserve_reply).applied is True
    session.close()  # the process dies before COMMIT
    assert _snapshot(engine, saga_id) == before
    deliver(engine, orch, reserve_reply)  # the inbox redelivers it
    charge_reply = answer(engine, last(engine, PAYMENT))
    with Session(engine) as crashed, crashed.begin():
        orch.handle_reply(crashed, charge_reply)
        crashed.rollback()
    assert instance(engine, saga_id).step == 2
    assert order_status(engine, "o-crash") == "pending"
    assert deliver(engine, orch, charge_reply).state is saga.SagaState.COMPLETED
    assert order_status(engine, "o-crash") == "approved"
    assert [m.type for m in messages(engine, PAYMENT)] == ["ChargePayment"]


def test_saga_start_failing_midway_leaves_nothing(engine: sa.Engine) -> None:
    """An exception while building a command rolls back the whole start: no saga, no row, no message."""

    def broken(ctx: saga.SagaContext) -> None:
        raise KeyError("missing")

    definition = SagaDefinition(
        name="broken", steps=[Step(name="only", action=Command(topic="x.commands", type="X", payload=broken))]
    )
    orch = saga.Orchestrator([definition])
    with Session(engine) as session, pytest.raises(KeyError):
        with session.begin():
            orch.start(session, "broken", {})
    with engine.connect() as conn:
        assert saga.count_sagas(conn) == []
    assert messages(engine) == []


def test_saga_version_check_refuses_a_stale_transition(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transition computed from an outdated version raises SagaConflictError and writes nothing."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    reply = answer(engine, last(engine, INVENTORY))
    real_select = saga._orchestrator.select_instance

    def stale(session: Session, sid: object, *, lock: bool) -> saga.SagaInstance | None:
        found = real_select(session, sid, lock=lock)  # type: ignore[arg-type]
        return None if found is None else dataclasses.replace(found, version=found.version - 1)

    monkeypatch.setattr(saga._orchestrator, "select_instance", stale)
    before = _snapshot(engine, saga_id)
    with Session(engine) as session, pytest.raises(saga.SagaConflictError):
        with session.begin():
            orch.handle_reply(session, reply)
    assert _snapshot(engine, saga_id) == before


def test_saga_concurrent_duplicate_replies_one_wins_on_postgresql(pg_url: str) -> None:
    """Two sessions handle the same reply at once: one moves the saga, the other waits and changes nothing."""
    engine = make_engine(pg_url)
    try:
        orch = orchestrator()
        saga_id = start(engine, orch)
        reply = answer(engine, last(engine, INVENTORY))
        results: list[saga.HandlingResult] = []
        first = Session(engine)
        first.begin()
        results.append(orch.handle_reply(first, reply))

        def second() -> None:
            with Session(engine) as session, session.begin():
                results.append(orch.handle_reply(session, reply))

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)  # the second session now waits for the first one's row lock
        assert thread.is_alive()
        first.commit()
        first.close()
        thread.join(timeout=10)
        assert [r.applied for r in results] == [True, False]
        assert results[1].reason == "saga is at step 2, message is for step 1"
        assert [m.type for m in messages(engine, PAYMENT)] == ["ChargePayment"]
        assert kinds(engine, saga_id).count(("reply_received", 1)) == 1
        assert instance(engine, saga_id).version == 2
    finally:
        engine.dispose()


def test_saga_concurrent_reply_and_timer_one_wins_on_postgresql(pg_url: str) -> None:
    """A reply and the step's timeout racing: whichever commits first decides, the other is a no-op."""
    engine = make_engine(pg_url)
    try:
        orch = orchestrator()
        saga_id = start(engine, orch)
        deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
        reply = answer(engine, last(engine, PAYMENT))
        fire = timer(engine, saga_id)
        outcomes: list[saga.HandlingResult] = []
        first = Session(engine)
        first.begin()
        outcomes.append(orch.handle_timer(first, fire))

        def late_reply() -> None:
            with Session(engine) as session, session.begin():
                outcomes.append(orch.handle_reply(session, reply))

        thread = threading.Thread(target=late_reply)
        thread.start()
        time.sleep(0.5)
        first.commit()
        first.close()
        thread.join(timeout=10)
        assert [o.applied for o in outcomes] == [True, False]
        assert instance(engine, saga_id).state is saga.SagaState.COMPENSATING
        assert [m.type for m in messages(engine, PAYMENT)] == ["ChargePayment", "RefundPayment"]
    finally:
        engine.dispose()


def test_saga_concurrent_duplicate_replies_on_sqlite_version_check_wins(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite (no row locks) the loser's version check fails: SagaConflictError, nothing written, redelivery ignored."""
    engine = make_engine(sqlite_url)
    try:
        orch = orchestrator()
        saga_id = start(engine, orch)
        reply = answer(engine, last(engine, INVENTORY))
        errors: list[BaseException] = []
        read_done = threading.Event()
        real_select = saga._orchestrator.select_instance

        def select_then_signal(session: Session, sid: uuid.UUID, *, lock: bool) -> saga.SagaInstance | None:
            found = real_select(session, sid, lock=lock)
            if threading.current_thread() is not threading.main_thread():
                read_done.set()
            return found

        monkeypatch.setattr(saga._orchestrator, "select_instance", select_then_signal)
        first = Session(engine)
        first.begin()
        assert orch.handle_reply(first, reply).applied is True

        def second() -> None:
            try:
                with Session(engine) as session, session.begin():
                    orch.handle_reply(session, reply)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        assert read_done.wait(timeout=10)  # the second has read the old version
        first.commit()
        first.close()
        thread.join(timeout=10)
        assert [type(e) for e in errors] == [saga.SagaConflictError]
        assert [m.type for m in messages(engine, PAYMENT)] == ["ChargePayment"]
        assert deliver(engine, orch, reply).applied is False  # the inbox redelivers it: now a duplicate
        assert kinds(engine, saga_id).count(("reply_received", 1)) == 1
    finally:
        engine.dispose()
