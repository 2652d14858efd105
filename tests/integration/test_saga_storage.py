"""Saga storage edges: missing tables, concurrent starts, changed definitions, retention."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import saga
from outbox import SchemaMissingError
from saga import Local, SagaDefinition, Step
from tests._saga import INVENTORY, answer, deliver, instance, kinds, last, make_engine, orchestrator, start


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def test_saga_start_without_tables_raises_schema_missing(sqlite_empty_url: str) -> None:
    """On a database that was never migrated, start says to run `outboxkit migrate`."""
    engine = make_engine(sqlite_empty_url)
    try:
        with Session(engine) as session, pytest.raises(SchemaMissingError, match="outboxkit migrate"):
            orchestrator().start(session, "order", {"order_id": "o", "sku": "s", "amount": "1"})
    finally:
        engine.dispose()


def test_saga_concurrent_start_with_one_id_one_wins_on_postgresql(pg_url: str) -> None:
    """Two transactions starting the same saga id: the second gets SagaExistsError once the first commits."""
    engine = make_engine(pg_url)
    try:
        orch = orchestrator()
        saga_id = uuid.uuid4()
        data = {"order_id": "o-c", "sku": "s", "amount": "1"}
        errors: list[BaseException] = []
        first = Session(engine)
        first.begin()
        orch.start(first, "order", {**data, "order_id": "o-c1"}, saga_id=saga_id)

        def second() -> None:
            try:
                with Session(engine) as session, session.begin():
                    orch.start(session, "order", {**data, "order_id": "o-c2"}, saga_id=saga_id)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        first.commit()
        first.close()
        thread.join(timeout=10)
        assert [type(e) for e in errors] == [saga.SagaExistsError]
        assert instance(engine, saga_id).data["order_id"] == "o-c1"
    finally:
        engine.dispose()


def test_saga_definition_that_lost_steps_refuses_to_guess(engine: sa.Engine) -> None:
    """A saga at a step the deployed definition no longer has raises SagaDefinitionError, changing nothing."""
    saga_id = start(engine, orchestrator())
    reply = answer(engine, last(engine, INVENTORY))
    shrunk = saga.Orchestrator(
        [SagaDefinition(name="order", steps=[Step(name="only", action=Local(lambda s, c: None))])],
        reply_topic=reply.topic,
    )
    with Session(engine) as session, session.begin():
        with pytest.raises(saga.SagaDefinitionError, match="has 1 steps now"):
            shrunk.handle_reply(session, reply)
    assert instance(engine, saga_id).step == 1


def test_saga_purge_deletes_only_finished_sagas_before_the_cutoff(engine: sa.Engine) -> None:
    """purge_sagas removes old completed/compensated sagas with their logs and keeps running ones."""
    orch = orchestrator()
    running = start(engine, orch)
    finished = start(engine, orch)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY), ok=False, reason="no stock"))
    assert instance(engine, finished).state is saga.SagaState.COMPENSATED
    with Session(engine) as session, session.begin():
        assert saga.purge_sagas(session, finished_before=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)) == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    with Session(engine) as session, session.begin():
        assert saga.purge_sagas(session, finished_before=later) == 1
    with engine.connect() as conn:
        assert saga.select_saga(conn, finished) is None
        assert saga.select_step_log(conn, finished) == []
        assert saga.select_saga(conn, running) is not None
    assert kinds(engine, running)[0] == ("started", None)
    with Session(engine) as session, pytest.raises(ValueError, match="timezone-aware"):
        saga.purge_sagas(session, finished_before=dt.datetime(2020, 1, 1))  # noqa: DTZ001
