"""Operator actions on a saga (issue 14): retry now and abort, recorded in the step log, refused where they break the rules."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import saga
from tests._saga import (
    INVENTORY,
    PAYMENT,
    TIMERS,
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


def _retry(engine: sa.Engine, saga_id: object, by: str = "alice@ops") -> None:
    with Session(engine) as session, session.begin():
        saga.request_retry(session, saga_id, by=by, timer_topic=TIMERS)  # type: ignore[arg-type]


def _abort(engine: sa.Engine, saga_id: object, by: str = "alice@ops") -> None:
    with Session(engine) as session, session.begin():
        saga.request_abort(session, saga_id, by=by, timer_topic=TIMERS)  # type: ignore[arg-type]


def _step_log(engine: sa.Engine, saga_id: object) -> list[saga.StepLogEntry]:
    with engine.connect() as conn:
        return saga.select_step_log(conn, saga_id)  # type: ignore[arg-type]


def test_saga_operator_retry_resends_the_waiting_command_and_records_who(engine: sa.Engine) -> None:
    """Retry on a saga waiting for a reply sends the command again (next attempt); the log says who asked."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    first = last(engine, INVENTORY)
    _retry(engine, saga_id)
    requested = _step_log(engine, saga_id)[-1]
    assert requested.kind is saga.StepLogKind.RETRY_REQUESTED
    assert requested.detail == "by alice@ops"
    outcome = deliver(engine, orch, timer(engine, saga_id, saga.OPERATOR_RETRY_TIMER))
    assert outcome.applied
    resent = last(engine, INVENTORY)
    assert resent.id != first.id
    assert resent.headers["saga_attempt"] == "2"
    inst = instance(engine, saga_id)
    assert (inst.state, inst.step, inst.attempt) == (saga.SagaState.RUNNING, 1, 2)
    retried = [e for e in _step_log(engine, saga_id) if e.kind is saga.StepLogKind.RETRIED]
    assert [e.detail for e in retried] == ["requested by alice@ops"]
    # The first attempt's timeout timer is cancelled: only the new attempt's one is pending.
    assert timer(engine, saga_id).headers["saga_attempt"] == "2"


def test_saga_operator_abort_compensates_the_unanswered_step_and_earlier_ones(engine: sa.Engine) -> None:
    """Abort while the payment is awaited refunds it (outcome unknown), releases the stock, cancels the order."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-abort")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    _abort(engine, saga_id, by="bob@ops")
    deliver(engine, orch, timer(engine, saga_id, saga.OPERATOR_ABORT_TIMER))
    inst = instance(engine, saga_id)
    assert inst.state is saga.SagaState.COMPENSATING
    assert inst.error == "aborted by bob@ops"
    assert last(engine, PAYMENT).type == "RefundPayment"
    deliver(engine, orch, answer(engine, last(engine, PAYMENT, "RefundPayment")))
    deliver(engine, orch, answer(engine, last(engine, INVENTORY, "ReleaseStock")))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED
    assert order_status(engine, "o-abort") == "cancelled"
    assert ("abort_requested", 2) in kinds(engine, saga_id)


def test_saga_operator_actions_refused_where_they_break_the_rules(engine: sa.Engine) -> None:
    """Abort of a compensating saga and any action on a final one are refused; nothing is written."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    deliver(engine, orch, answer(engine, last(engine, PAYMENT), ok=False, reason="card declined"))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATING
    before = (len(messages(engine)), kinds(engine, saga_id), instance(engine, saga_id).version)
    with pytest.raises(saga.SagaActionRefusedError, match="compensating already"):
        _abort(engine, saga_id)
    assert (len(messages(engine)), kinds(engine, saga_id), instance(engine, saga_id).version) == before
    _retry(engine, saga_id)  # retrying the compensation is allowed: ReleaseStock goes out again
    deliver(engine, orch, timer(engine, saga_id, saga.OPERATOR_RETRY_TIMER))
    release = last(engine, INVENTORY, "ReleaseStock")
    assert release.headers["saga_attempt"] == "2"
    deliver(engine, orch, answer(engine, release))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED
    before = (len(messages(engine)), kinds(engine, saga_id))
    for action in (_retry, _abort):
        with pytest.raises(saga.SagaActionRefusedError, match="compensated"):
            action(engine, saga_id)
    assert (len(messages(engine)), kinds(engine, saga_id)) == before


def test_saga_operator_request_overtaken_by_a_reply_is_ignored(engine: sa.Engine) -> None:
    """A reply that arrives between the request and its timer wins; the stale request changes nothing."""
    orch = orchestrator()
    saga_id = start(engine, orch)
    command = last(engine, INVENTORY)
    _abort(engine, saga_id)
    request = timer(engine, saga_id, saga.OPERATOR_ABORT_TIMER)
    deliver(engine, orch, answer(engine, command))
    moved = instance(engine, saga_id)
    assert (moved.state, moved.step) == (saga.SagaState.RUNNING, 2)
    outcome = deliver(engine, orch, request)
    assert not outcome.applied
    assert instance(engine, saga_id).version == moved.version


def test_saga_operator_unknown_saga_is_not_found(engine: sa.Engine) -> None:
    """A saga id that does not exist raises SagaNotFoundError and writes nothing."""
    with pytest.raises(saga.SagaNotFoundError):
        _retry(engine, uuid.uuid4())
    assert messages(engine) == []


def test_saga_list_filters_by_type_state_and_age(engine: sa.Engine) -> None:
    """select_sagas lists newest first and filters by type, state and age."""
    orch = orchestrator()
    first = start(engine, orch)
    second = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY), ok=False, reason="no"))
    with engine.connect() as conn:
        assert [s.id for s in saga.select_sagas(conn)] == [second, first]
        assert [s.id for s in saga.select_sagas(conn, saga_type="order", limit=1)] == [second]
        assert saga.select_sagas(conn, saga_type="other") == []
        compensated = saga.select_sagas(conn, state=saga.SagaState.COMPENSATED)
        assert [s.id for s in compensated] == [second]
        assert saga.select_sagas(conn, older_than=dt.timedelta(hours=1)) == []
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
        assert len(saga.select_sagas(conn, older_than=dt.timedelta(hours=1), now=later)) == 2
