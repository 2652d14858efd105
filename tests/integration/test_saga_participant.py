"""saga.participate makes a participant idempotent per saga step, by construction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import uuid_utils.compat as uuid_utils
from sqlalchemy.orm import Session

import saga
from outbox import Envelope
from tests._saga import (
    INVENTORY,
    PAYMENT,
    REPLIES,
    deliver,
    instance,
    last,
    make_engine,
    messages,
    orchestrator,
    start,
)

ledger = sa.MetaData()
charges = sa.Table(
    "test_charges",
    ledger,
    sa.Column("saga_id", sa.String(64), primary_key=True),
    sa.Column("amount", sa.String(32), nullable=False),
)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    ledger.create_all(eng)
    yield eng
    eng.dispose()


calls: list[str] = []


def charge(session: Session, command: Envelope) -> dict[str, str]:
    calls.append("charge")
    session.execute(sa.insert(charges).values(saga_id=command.headers["saga_id"], amount="9.90"))
    return {"payment_id": f"p-{command.headers['saga_id'][:8]}"}


def decline(session: Session, command: Envelope) -> None:
    calls.append("decline")
    session.execute(sa.insert(charges).values(saga_id=command.headers["saga_id"], amount="0"))
    raise saga.StepFailed("card declined")


def refund(session: Session, command: Envelope) -> None:
    calls.append("refund")
    session.execute(sa.delete(charges).where(charges.c.saga_id == command.headers["saga_id"]))


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


def _participate(engine: sa.Engine, command: Envelope, handler: saga.StepHandler) -> saga.Decision:
    with Session(engine) as session, session.begin():
        return saga.participate(session, command, handler)


def _charged(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(charges)).scalar_one())


def _reply(engine: sa.Engine, decision: saga.Decision) -> Envelope:
    (found,) = [m for m in messages(engine, REPLIES) if m.id == decision.reply_id]
    return found


def _resent(command: Envelope, attempt: int) -> Envelope:
    """The orchestrator's resend after a timeout: a new message id, the next attempt."""
    return dataclasses.replace(
        command, id=uuid_utils.uuid7(), headers={**command.headers, "saga_attempt": str(attempt)}
    )


def _to_charge(engine: sa.Engine, orch: saga.Orchestrator) -> Envelope:
    start(engine, orch)
    reserve = last(engine, INVENTORY)
    deliver(engine, orch, _reply(engine, _participate(engine, reserve, lambda s, c: None)))
    return last(engine, PAYMENT)


def test_saga_participate_applies_an_action_once_and_repeats_its_reply(engine: sa.Engine) -> None:
    """A duplicate or resent command replays the first reply without running the handler again."""
    orch = orchestrator()
    command = _to_charge(engine, orch)
    first = _participate(engine, command, charge)
    again = _participate(engine, command, charge)
    resent = _participate(engine, _resent(command, 2), charge)
    assert (first.ok, first.ran, again.ran, resent.ran) == (True, True, False, False)
    assert first.data == again.data == resent.data
    assert calls == ["charge"]
    assert _charged(engine) == 1
    assert _reply(engine, resent).headers["saga_attempt"] == "2"
    outcome = deliver(engine, orch, _reply(engine, first))
    assert outcome.state is saga.SagaState.COMPLETED
    assert instance(engine, outcome.saga_id).data["payment_id"] == first.data["payment_id"]  # type: ignore[index]


def test_saga_participate_refusal_is_final_and_leaves_no_effect(engine: sa.Engine) -> None:
    """StepFailed rolls the handler back, replies ok=false, and a resent command is refused again."""
    orch = orchestrator()
    command = _to_charge(engine, orch)
    first = _participate(engine, command, decline)
    later = _participate(engine, _resent(command, 2), charge)
    assert (first.ok, first.reason, later.ok, later.reason, later.ran) == (
        False,
        "card declined",
        False,
        "card declined",
        False,
    )
    assert calls == ["decline"]
    assert _charged(engine) == 0
    assert deliver(engine, orch, _reply(engine, first)).state is saga.SagaState.COMPENSATING


def test_saga_participate_compensation_undoes_once(engine: sa.Engine) -> None:
    """A compensation after the action runs its handler once; duplicates answer ok without running it."""
    orch = orchestrator()
    command = _to_charge(engine, orch)
    _participate(engine, command, charge)
    compensation = dataclasses.replace(
        command,
        id=uuid_utils.uuid7(),
        type="RefundPayment",
        headers={**command.headers, "saga_phase": "compensation"},
    )
    first = _participate(engine, compensation, refund)
    again = _participate(engine, compensation, refund)
    assert (first.ok, first.ran, again.ok, again.ran) == (True, True, True, False)
    assert calls == ["charge", "refund"]
    assert _charged(engine) == 0


def test_saga_participate_compensation_before_action_blocks_the_late_action(engine: sa.Engine) -> None:
    """A compensation for an action that never came does nothing, answers ok, and refuses the action later."""
    orch = orchestrator()
    command = _to_charge(engine, orch)
    compensation = dataclasses.replace(
        command,
        id=uuid_utils.uuid7(),
        type="RefundPayment",
        headers={**command.headers, "saga_phase": "compensation"},
    )
    early = _participate(engine, compensation, refund)
    late = _participate(engine, command, charge)
    assert (early.ok, early.ran) == (True, False)
    assert (late.ok, late.ran, late.reason) == (False, False, "compensated before the action arrived")
    assert calls == []
    assert _charged(engine) == 0


def test_saga_participate_failed_compensation_is_not_recorded(engine: sa.Engine) -> None:
    """A compensation handler raising StepFailed replies ok=false and runs again on the next try."""
    orch = orchestrator()
    command = _to_charge(engine, orch)
    _participate(engine, command, charge)
    compensation = dataclasses.replace(
        command,
        id=uuid_utils.uuid7(),
        type="RefundPayment",
        headers={**command.headers, "saga_phase": "compensation"},
    )
    tries: list[int] = []

    def flaky_refund(session: Session, cmd: Envelope) -> None:
        tries.append(1)
        if len(tries) == 1:
            raise saga.StepFailed("bank offline")
        refund(session, cmd)

    assert _participate(engine, compensation, flaky_refund).ok is False
    assert _charged(engine) == 1
    assert _participate(engine, _resent(compensation, 2), flaky_refund).ok is True
    assert _charged(engine) == 0


def test_saga_participate_transient_error_propagates_and_records_nothing(engine: sa.Engine) -> None:
    """Any other exception propagates; after the rollback the step is still undecided."""
    orch = orchestrator()
    command = _to_charge(engine, orch)

    def broken(session: Session, cmd: Envelope) -> None:
        raise ConnectionError("ledger down")

    with pytest.raises(ConnectionError):
        _participate(engine, command, broken)
    assert _participate(engine, command, charge).ran is True
    assert _charged(engine) == 1


def test_saga_participate_concurrent_copies_run_the_handler_once_on_postgresql(pg_url: str) -> None:
    """Two transactions handling copies of one command: the second waits, then replays the first's decision."""
    engine = make_engine(pg_url)
    ledger.create_all(engine)
    try:
        orch = orchestrator()
        command = _to_charge(engine, orch)
        decisions: list[saga.Decision] = []
        first = Session(engine)
        first.begin()
        decisions.append(saga.participate(first, command, charge))

        def second() -> None:
            with Session(engine) as session, session.begin():
                decisions.append(saga.participate(session, _resent(command, 2), charge))

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        first.commit()
        first.close()
        thread.join(timeout=10)
        assert [d.ran for d in decisions] == [True, False]
        assert decisions[0].data == decisions[1].data
        assert calls == ["charge"]
    finally:
        engine.dispose()


def test_saga_purge_participant_decisions_removes_old_rows(engine: sa.Engine) -> None:
    """Decisions older than the cutoff are deleted; newer ones stay."""
    orch = orchestrator()
    command = _to_charge(engine, orch)
    _participate(engine, command, charge)
    now = dt.datetime.now(dt.UTC)
    with Session(engine) as session, session.begin():
        assert saga.purge_participant_decisions(session, older_than=now - dt.timedelta(hours=1)) == 0
    with Session(engine) as session, session.begin():
        assert saga.purge_participant_decisions(session, older_than=now + dt.timedelta(seconds=1)) == 2
    with engine.connect() as conn:
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(saga.tables.saga_participant)).scalar_one()
            == 0
        )
