"""A saga's overall deadline (``SagaDefinition.deadline``): it compensates, shows in `saga show` and metrics (#13)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
import structlog
from prometheus_client import REGISTRY

import saga
from outboxkit.cli._saga_cmd import show
from tests._cli import run_cli
from tests._saga import (
    INVENTORY,
    PAYMENT,
    answer,
    deliver,
    instance,
    kinds,
    last,
    make_engine,
    order_saga,
    order_status,
    start,
    timer,
    timers,
)

DEADLINE = dt.timedelta(minutes=10)


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    # SQLite only: the deadline is an ordinary saga timer, whose SQL test_saga_timers.py runs on both.
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


def _orchestrator() -> saga.Orchestrator:
    definition = dataclasses.replace(order_saga(), deadline=DEADLINE)
    return saga.Orchestrator(
        [definition], reply_topic="orders.saga.replies", timer_topic="orders.saga.timers"
    )


def test_deadline_must_be_positive() -> None:
    with pytest.raises(saga.SagaDefinitionError, match="deadline must be a positive timedelta"):
        dataclasses.replace(order_saga(), deadline=dt.timedelta(0))


def test_deadline_timer_survives_step_transitions_and_compensates_when_it_fires(engine: sa.Engine) -> None:
    orch = _orchestrator()
    saga_id = start(engine, orch, order_id="o-d1")
    with engine.connect() as conn:
        pending = saga.select_saga_deadline(conn, saga_id)
    assert pending is not None
    assert abs(pending - instance(engine, saga_id).created_at - DEADLINE) < dt.timedelta(seconds=1)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))  # a transition: the step timer is replaced
    assert sorted(name for sid, name in timers(engine) if sid == saga_id) == ["deadline", "timeout"]
    with structlog.testing.capture_logs() as logs:
        outcome = deliver(engine, orch, timer(engine, saga_id, saga.DEADLINE_TIMER))
    assert outcome.state is saga.SagaState.COMPENSATING
    reason = "saga deadline of 600s passed at step 'charge_payment'"
    assert [e["reason"] for e in logs if e["event"] == "saga.deadline_passed"] == [reason]
    refund = last(engine, PAYMENT)  # the unanswered charge is compensated too: its outcome is unknown
    assert refund.type == "RefundPayment"
    deliver(engine, orch, answer(engine, refund))
    deliver(engine, orch, answer(engine, last(engine, INVENTORY, "ReleaseStock")))
    inst = instance(engine, saga_id)
    assert inst.state is saga.SagaState.COMPENSATED
    assert inst.error == reason
    assert order_status(engine, "o-d1") == "cancelled"
    assert ("timed_out", None) in kinds(engine, saga_id)
    assert [sid for sid, _ in timers(engine) if sid == saga_id] == []


def test_a_late_deadline_is_a_no_op_for_a_saga_already_compensating(engine: sa.Engine) -> None:
    orch = _orchestrator()
    saga_id = start(engine, orch)
    deadline = timer(engine, saga_id, saga.DEADLINE_TIMER)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY), ok=False, reason="no stock"))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED  # nothing to undo but the order
    outcome = deliver(engine, orch, deadline)
    assert not outcome.applied
    assert outcome.reason == "saga already compensated"


def _finished(outcome: str) -> float:
    labels = {"type": "order", "outcome": outcome}
    return REGISTRY.get_sample_value("outboxkit_saga_duration_seconds_count", labels) or 0.0


def test_a_completed_saga_withdraws_its_deadline_and_observes_its_duration(engine: sa.Engine) -> None:
    orch = _orchestrator()
    saga_id = start(engine, orch)
    deadline = timer(engine, saga_id, saga.DEADLINE_TIMER)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    before = _finished("completed")
    deliver(engine, orch, answer(engine, last(engine, PAYMENT), data={"payment_id": "p-1"}))
    assert instance(engine, saga_id).state is saga.SagaState.COMPLETED
    assert _finished("completed") == before + 1  # observed once, after the commit that ended it
    assert timers(engine) == []
    with engine.connect() as conn:
        assert saga.select_saga_deadline(conn, saga_id) is None
    assert not deliver(engine, orch, deadline).applied  # a copy the relay had already taken


def test_saga_show_prints_the_pending_deadline(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    engine = make_engine(sqlite_url)
    try:
        saga_id = start(engine, _orchestrator())
    finally:
        engine.dispose()
    text = run_cli("saga", "show", str(saga_id), "--db", sqlite_url)
    assert text.returncode == 0, text.stderr
    assert "saga deadline at " in text.stdout
    (line,) = [x for x in text.stdout.splitlines() if x.startswith("saga deadline at ")]
    left = int(re.search(r"\(in (\d+)s\)$", line)[1])  # type: ignore[index]
    assert 500 < left <= 600
    # The command function for --json: one process is enough.
    show(str(saga_id), db=sqlite_url, schema=None, as_json=True)
    out = capsys.readouterr().out
    doc = json.loads(out[out.index('{\n  "saga"') :])  # after the log lines of the start
    assert doc["saga"]["saga_deadline_at"] is not None


def test_deadline_missed_gauge_counts_running_sagas_past_their_deadline(engine: sa.Engine) -> None:
    orch = _orchestrator()
    late, on_time = start(engine, orch), start(engine, orch)
    t = saga.tables.saga_timer
    with engine.begin() as conn:  # the deadline message of `late` never got through
        conn.execute(sa.update(t).where(t.c.saga_id == late, t.c.name == "deadline")
                     .values(fires_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)))  # fmt: skip
    families = {f.name: f for f in saga.SagaGauges(engine).collect()}
    (sample,) = families["outboxkit_saga_deadline_missed"].samples
    assert sample.labels == {"type": "order"}
    assert sample.value == 1
    assert on_time != late
