"""`outboxkit saga show` and the inspection functions behind it and `outboxkit status`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import saga
from tests._cli import run_cli
from tests._saga import INVENTORY, PAYMENT, answer, deliver, last, make_engine, orchestrator, start


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _declined_saga(engine: sa.Engine) -> uuid.UUID:
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-cli")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    deliver(engine, orch, answer(engine, last(engine, PAYMENT), ok=False, reason="card declined"))
    return saga_id


def test_saga_count_sagas_groups_by_type_and_state(engine: sa.Engine) -> None:
    """count_sagas reports how many sagas of each type are in each state."""
    orch = orchestrator()
    start(engine, orch)
    start(engine, orch)
    _declined_saga(engine)
    with engine.connect() as conn:
        counts = saga.count_sagas(conn)
    assert counts == [
        saga.SagaCount(type="order", state=saga.SagaState.COMPENSATING, count=1),
        saga.SagaCount(type="order", state=saga.SagaState.RUNNING, count=2),
    ]


def test_saga_show_prints_the_step_log(db_url: str, engine: sa.Engine) -> None:
    """The text output names the saga, its state and error, and every step log row in order."""
    saga_id = _declined_saga(engine)
    result = run_cli("saga", "show", str(saga_id), "--db", db_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"saga {saga_id}  type=order  state=compensating" in out
    assert "error: step 'charge_payment' failed: card declined" in out
    assert '"order_id": "o-cli"' in out
    kinds = ["started", "local_done", "command_sent", "reply_received", "compensating", "compensation_sent"]
    table = out.split("KIND", 1)[1]
    positions = [table.index(f" {k} ") for k in kinds]
    assert positions == sorted(positions)
    assert "inventory.commands ReserveStock" in out
    assert "error=card declined" in out


def test_saga_show_json_is_one_document(db_url: str, engine: sa.Engine) -> None:
    """--json prints the saga and its log as one JSON document."""
    saga_id = _declined_saga(engine)
    result = run_cli("saga", "show", str(saga_id), "--db", db_url, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["saga"]["id"] == str(saga_id)
    assert doc["saga"]["state"] == "compensating"
    assert doc["saga"]["data"]["order_id"] == "o-cli"
    assert [e["kind"] for e in doc["log"]][:3] == ["started", "local_done", "command_sent"]
    assert doc["log"][2]["step_name"] == "reserve_stock"


def test_saga_show_unknown_id_exits_2_with_one_line(sqlite_url: str) -> None:
    """An id that is not in the database is one line on stderr and exit status 2."""
    result = run_cli("saga", "show", str(uuid.uuid4()), "--db", sqlite_url)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "no saga" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["not-a-uuid", "--db", "sqlite:///{tmp}/x.db"], "is not a saga id"),
        ([str(uuid.UUID(int=1)), "--db", "nosuchdriver://u:secret@h/db"], "invalid database URL"),
        ([str(uuid.UUID(int=1)), "--db", "sqlite:///{tmp}/missing.db"], "no SQLite database"),
        ([str(uuid.UUID(int=1))], "no database URL"),
    ],
)
def test_saga_show_bad_input_exits_2_with_one_line(tmp_path: object, args: list[str], expected: str) -> None:
    """A bad id, URL or missing database is one clear line, exit 2, and no password in it."""
    result = run_cli("saga", "show", *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert expected in result.stderr
    assert "secret" not in result.stderr
    assert "Traceback" not in result.stderr


def test_saga_show_on_a_database_without_saga_tables_says_migrate(sqlite_empty_url: str) -> None:
    """A database that was never migrated gets the migrate hint, exit 2."""
    sa.create_engine(sqlite_empty_url).connect().close()
    result = run_cli("saga", "show", str(uuid.uuid4()), "--db", sqlite_empty_url)
    assert result.returncode == 2
    assert "outboxkit migrate" in result.stderr


def test_saga_list_retry_abort_on_the_command_line(sqlite_url: str) -> None:
    """`saga list` filters by state as JSON; `saga retry|abort` record who asked; refusals are one line, exit 2 (#14)."""
    engine = make_engine(sqlite_url)
    orch = orchestrator()
    waiting = start(engine, orch)
    declined = _declined_saga(engine)
    listed = run_cli("saga", "list", "--db", sqlite_url, "--state", "compensating", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [str(declined)]
    timers = ["--timer-topic", "orders.saga.timers"]
    retried = run_cli("saga", "retry", str(waiting), "--db", sqlite_url, "--by", "carol", *timers)
    assert retried.returncode == 0, retried.stderr
    assert "retry of saga" in retried.stdout
    refused = run_cli("saga", "abort", str(declined), "--db", sqlite_url, *timers)
    assert refused.returncode == 2
    assert (
        refused.stderr.strip()
        == f"outboxkit: error: saga {declined} is compensating already: retry the compensation instead"
    )
    with engine.connect() as conn:
        log = saga.select_step_log(conn, waiting)
        assert [(e.kind, e.detail) for e in log][-1] == (saga.StepLogKind.RETRY_REQUESTED, "by carol")
        assert saga.select_step_log(conn, declined)[-1].kind is not saga.StepLogKind.ABORT_REQUESTED
    engine.dispose()
