"""Model-based test: any interleaving of duplicate, late, stale and lost messages leaves the saga consistent.

Hypothesis plays an adversarial network and flaky participants against the
orchestrator: commands are processed in any order and any number of times,
replies are lost or delivered again, every timer ever created may fire (as if
the relay had taken it before it was cancelled). The participants follow the
documented rules (idempotent per saga step, compensation accepts "never
happened" and is remembered). Then the network heals and the saga is driven
to its end. Invariant: a completed saga holds every effect exactly once; a
compensated saga holds none; no step is compensated twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

import saga
from outbox import Envelope
from saga import RetryPolicy
from tests._saga import (
    INVENTORY,
    PAYMENT,
    REPLIES,
    TIMERS,
    answer,
    deliver,
    instance,
    kinds,
    make_engine,
    messages,
    orchestrator,
    order_saga,
    order_status,
    start,
)

ACTION_OUTCOMES = ["ok", "fail", "lost_after_apply", "lost"]
COMPENSATION_OUTCOMES = ["ok", "refuse", "lost_after_apply", "lost"]


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(sqlite_url)
    yield eng
    eng.dispose()


@dataclass
class Participants:
    """Inventory and payment of one saga: which steps are in effect, refused, compensated.

    Each decision is recorded per saga step and repeated for a duplicate or
    retried command (docs/sagas.md, "what participants must guarantee").
    """

    applied: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    compensated: set[int] = field(default_factory=set)

    def process(self, engine: sa.Engine, command: Envelope, outcome: str) -> None:
        step = int(command.headers["saga_step"])
        if command.headers["saga_phase"] == "action":
            self._act(engine, command, step, outcome)
        else:
            self._compensate(engine, command, step, outcome)

    def _act(self, engine: sa.Engine, command: Envelope, step: int, outcome: str) -> None:
        if step in self.compensated or step in self.refused:  # a decision is final
            answer(engine, command, ok=False, reason="refused before")
        elif step in self.applied:  # idempotent per saga step
            answer(engine, command, ok=True)
        elif outcome == "fail":
            self.refused.add(step)
            answer(engine, command, ok=False, reason="refused")
        elif outcome != "lost":
            self.applied.add(step)
            if outcome == "ok":
                answer(engine, command, ok=True)

    def _compensate(self, engine: sa.Engine, command: Envelope, step: int, outcome: str) -> None:
        if outcome == "refuse":
            answer(engine, command, ok=False, reason="try later")
        elif outcome != "lost":
            self.applied.discard(step)  # "never happened" is fine
            self.compensated.add(step)
            if outcome == "ok":
                answer(engine, command, ok=True)


def _of(engine: sa.Engine, saga_id: uuid.UUID, *topics: str) -> list[Envelope]:
    return [m for m in messages(engine) if m.key == str(saga_id) and m.topic in topics]


def _pending_timer(engine: sa.Engine, saga_id: uuid.UUID) -> Envelope | None:
    t = saga.tables.saga_timer
    with engine.connect() as conn:
        ids = set(conn.execute(sa.select(t.c.message_id).where(t.c.saga_id == saga_id)).scalars())
    found = [m for m in _of(engine, saga_id, TIMERS) if m.id in ids]
    return found[0] if found else None


def _heal(engine: sa.Engine, orch: saga.Orchestrator, saga_id: uuid.UUID, people: Participants) -> None:
    """The network heals: every command is answered, every reply delivered, due timers fire."""
    seen: set[uuid.UUID] = set()
    for _ in range(60):
        if instance(engine, saga_id).state.final:
            return
        progressed = False
        for command in _of(engine, saga_id, INVENTORY, PAYMENT):
            if command.id not in seen:
                seen.add(command.id)
                people.process(engine, command, "ok")
                progressed = True
        for reply in _of(engine, saga_id, REPLIES):
            if reply.id not in seen:
                seen.add(reply.id)
                deliver(engine, orch, reply)
                progressed = True
        if not progressed and (fire := _pending_timer(engine, saga_id)) is not None:
            deliver(engine, orch, fire)
    pytest.fail(f"saga {saga_id} did not finish: {instance(engine, saga_id)}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_saga_any_message_interleaving_ends_consistent(engine: sa.Engine, data: st.DataObject) -> None:
    """Random duplicates, losses, reorderings and stale timers never break all-or-nothing."""
    orch = orchestrator(order_saga(charge_retry=RetryPolicy(max_attempts=2)))
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    saga_id = start(engine, orch, order_id=order_id)
    people = Participants()
    # Every round draws the same three values whatever the state, so Hypothesis
    # can replay and shrink: what they pick is chosen modulo the current lists.
    rounds = data.draw(
        st.lists(st.tuples(st.booleans(), st.integers(0, 255), st.integers(0, 3)), max_size=16)
    )
    relayed: dict[uuid.UUID, Envelope] = {}  # the relay took every timer before it could be cancelled
    for to_participant, pick, outcome in rounds:
        commands = _of(engine, saga_id, INVENTORY, PAYMENT)
        relayed.update((m.id, m) for m in _of(engine, saga_id, TIMERS))
        deliverable = _of(engine, saga_id, REPLIES) + list(relayed.values())
        if to_participant and commands:
            command = commands[pick % len(commands)]
            choices = ACTION_OUTCOMES if command.headers["saga_phase"] == "action" else COMPENSATION_OUTCOMES
            people.process(engine, command, choices[outcome])
        elif deliverable:
            deliver(engine, orch, deliverable[pick % len(deliverable)])
    _heal(engine, orch, saga_id, people)

    final = instance(engine, saga_id)
    log = kinds(engine, saga_id)
    for step in range(4):
        assert log.count(("compensated", step)) <= 1, log
    if final.state is saga.SagaState.COMPLETED:
        assert people.applied == {1, 2}
        assert people.compensated == set()
        assert order_status(engine, order_id) == "approved"
    else:
        assert final.state is saga.SagaState.COMPENSATED
        assert people.applied == set(), (people, log)
        assert order_status(engine, order_id) == "cancelled"


effects_meta = sa.MetaData()
effects = sa.Table(
    "test_participant_effects",
    effects_meta,
    sa.Column("saga_id", sa.String(64), primary_key=True),
    sa.Column("step", sa.Integer(), primary_key=True),
)
PARTICIPANT_OUTCOMES = ["ok", "refuse", "crash"]


def _participant_handler(outcome: str) -> saga.StepHandler:
    def handle(session: Session, command: Envelope) -> None:
        key = {"saga_id": command.headers["saga_id"], "step": int(command.headers["saga_step"])}
        if command.headers["saga_phase"] == "action":
            session.execute(sa.insert(effects).values(**key))
        else:
            session.execute(
                sa.delete(effects).where(effects.c.saga_id == key["saga_id"], effects.c.step == key["step"])
            )
        if outcome == "refuse":
            raise saga.StepFailed("refused")
        if outcome == "crash":
            raise RuntimeError("participant crashed")

    return handle


def _run_participant(engine: sa.Engine, command: Envelope, outcome: str) -> None:
    try:
        with Session(engine) as session, session.begin():
            saga.participate(session, command, _participant_handler(outcome))
    except RuntimeError:
        pass  # rolled back; the inbox would deliver the command again


def _effects(engine: sa.Engine, saga_id: uuid.UUID) -> set[int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(effects.c.step).where(effects.c.saga_id == str(saga_id)))
        return {int(r[0]) for r in rows}


def _heal_with_participate(engine: sa.Engine, orch: saga.Orchestrator, saga_id: uuid.UUID) -> None:
    seen: set[uuid.UUID] = set()
    for _ in range(60):
        if instance(engine, saga_id).state.final:
            return
        progressed = False
        for command in _of(engine, saga_id, INVENTORY, PAYMENT):
            if command.id not in seen:
                seen.add(command.id)
                _run_participant(engine, command, "ok")
                progressed = True
        for reply in _of(engine, saga_id, REPLIES):
            if reply.id not in seen:
                seen.add(reply.id)
                deliver(engine, orch, reply)
                progressed = True
        if not progressed and (fire := _pending_timer(engine, saga_id)) is not None:
            deliver(engine, orch, fire)
    pytest.fail(f"saga {saga_id} did not finish: {instance(engine, saga_id)}")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_saga_participate_any_interleaving_ends_consistent(engine: sa.Engine, data: st.DataObject) -> None:
    """With saga.participate on the participant side, any interleaving still ends all-or-nothing."""
    effects_meta.create_all(engine)
    orch = orchestrator(order_saga(charge_retry=RetryPolicy(max_attempts=2)))
    order_id = f"o-{uuid.uuid4().hex[:10]}"
    saga_id = start(engine, orch, order_id=order_id)
    rounds = data.draw(
        st.lists(st.tuples(st.booleans(), st.integers(0, 255), st.integers(0, 2)), max_size=16)
    )
    relayed: dict[uuid.UUID, Envelope] = {}
    for to_participant, pick, outcome in rounds:
        commands = _of(engine, saga_id, INVENTORY, PAYMENT)
        relayed.update((m.id, m) for m in _of(engine, saga_id, TIMERS))
        deliverable = _of(engine, saga_id, REPLIES) + list(relayed.values())
        if to_participant and commands:
            _run_participant(engine, commands[pick % len(commands)], PARTICIPANT_OUTCOMES[outcome])
        elif deliverable:
            deliver(engine, orch, deliverable[pick % len(deliverable)])
    _heal_with_participate(engine, orch, saga_id)

    final = instance(engine, saga_id)
    if final.state is saga.SagaState.COMPLETED:
        assert _effects(engine, saga_id) == {1, 2}
        assert order_status(engine, order_id) == "approved"
    else:
        assert final.state is saga.SagaState.COMPENSATED
        assert _effects(engine, saga_id) == set(), kinds(engine, saga_id)
        assert order_status(engine, order_id) == "cancelled"
