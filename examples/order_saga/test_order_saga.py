"""The order saga example as real processes: every outcome in both styles, on SQLite and on PostgreSQL + Redis."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import outboxkit.demo
import saga
from examples.order_saga.cluster import Cluster, ProcessExitedError, database_urls
from outbox.tables import outbox_tables
from outboxkit.demo import (
    CARD_DECLINED,
    CARD_OK,
    CARD_SILENT,
    SOLD_OUT,
    OrderSpec,
    Scenario,
    Style,
)
from outboxkit.demo._tables import ORDER, demo_payment, demo_reservation
from tests._cli import REPO_ROOT, cli_env
from tests._servers import PostgresAdmin

pytestmark = pytest.mark.e2e

STEP_TIMEOUT = 3.0  # short enough for a fast timeout scenario, long enough on a busy machine


def _spec(order_id: str, scenario: Scenario, sku: str, card: str, qty: int = 1) -> OrderSpec:
    return OrderSpec(order_id=order_id, customer="ada", sku=sku, qty=qty, card=card, scenario=scenario)


OUTCOMES = [
    _spec("1", Scenario.SUCCESS, "kettle", CARD_OK, qty=2),
    _spec("2", Scenario.DECLINED, "grinder", CARD_DECLINED),
    _spec("3", Scenario.OUT_OF_STOCK, SOLD_OUT, CARD_OK),
    _spec("4", Scenario.TIMEOUT, "mug", CARD_SILENT, qty=3),
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql+redis", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str], str, str]]:
    """(database URLs by service, broker URL, stream prefix): SQLite files + SQL broker, or PostgreSQL + Redis."""
    if request.param == "sqlite":
        yield database_urls(f"sqlite:///{tmp_path}/{{service}}.db"), f"sqlite:///{tmp_path}/broker.db", "t:"
        return
    pg: PostgresAdmin = request.getfixturevalue("pg_server")
    redis_url: str = request.getfixturevalue("redis_url")
    prefix: str = request.getfixturevalue("stream_prefix")
    base = f"os_{secrets.token_hex(4)}"
    urls = database_urls(pg.url(f"{base}_xservicex").replace("xservicex", "{service}"))
    yield urls, redis_url, prefix
    for name in urls:
        pg.drop_database(f"{base}_{name}")


def _cluster(
    backend: tuple[dict[str, str], str, str], tmp_path: Path, style: Style, step_timeout: float = STEP_TIMEOUT
) -> Cluster:
    urls, broker, prefix = backend
    return Cluster(urls=urls, broker=broker, workdir=tmp_path / "logs", style=style,
                   step_timeout=step_timeout, prefix=prefix)  # fmt: skip


def _step_log(engine: sa.Engine, order_id: str) -> list[tuple[str, int | None]]:
    s = saga.tables.saga_instance
    with engine.connect() as conn:
        saga_id = conn.execute(sa.select(s.c.id).where(s.c.correlation_id == order_id)).scalar_one()
        return [(e.kind.value, e.step) for e in saga.select_step_log(conn, saga_id)]


def _rows(engine: sa.Engine, table: sa.Table) -> dict[str, str]:
    with engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(sa.select(table.c.order_id, table.c.status))}


def _unsent(engine: sa.Engine) -> list[tuple[str, str | None]]:
    outbox = outbox_tables(ORDER.outbox).outbox
    with engine.connect() as conn:
        query = sa.select(outbox.c.topic, outbox.c.key).where(outbox.c.published_at.is_(None))
        return [(r.topic, r.key) for r in conn.execute(query)]


@pytest.mark.parametrize("style", list(Style))
def test_order_saga_each_outcome_ends_as_the_rules_say(
    backend: tuple[dict[str, str], str, str], tmp_path: Path, style: Style
) -> None:
    """Success confirms; a declined card, a sold-out item and an unanswered payment cancel and compensate."""
    cluster = _cluster(backend, tmp_path, style)
    cluster.prepare(len(OUTCOMES))
    cluster.start_all()
    try:
        cluster.wait_ready()
        cluster.place(OUTCOMES)
        assert cluster.wait(len(OUTCOMES), timeout=120), f"not finished; logs in {cluster.workdir}"
        checks = cluster.check(len(OUTCOMES))
        statuses = {r.order_id: r.status for r in outboxkit.demo.select_orders(cluster.engines["order"])}
        reservations = _rows(cluster.engines["inventory"], demo_reservation)
        payments = _rows(cluster.engines["payment"], demo_payment)
        timeout_log = _step_log(cluster.engines["order"], "4") if style is Style.ORCHESTRATED else []
        backlog = _unsent(cluster.engines["order"])
    finally:
        cluster.stop_all()
    assert [c for c in checks if not c.ok] == []
    assert statuses == {"1": "confirmed", "2": "cancelled", "3": "cancelled", "4": "cancelled"}
    if style is Style.ORCHESTRATED:  # the unanswered charge: timed out, resent, timed out, compensated
        assert timeout_log.count(("timed_out", 2)) == 2
        assert ("compensation_sent", 2) in timeout_log
        assert timeout_log[-1] == ("saga_compensated", None)
    assert reservations == {"1": "reserved", "2": "released", "3": "refused", "4": "released"}
    # Decided orders leave no deadline or timer behind as future backlog (#9: choreographed deadlines did).
    assert backlog == []
    # The unanswered payment was taken, then refunded by the compensation the timeout started.
    assert payments["1"] == "charged"
    assert payments["2"] == "declined"
    assert payments["4"] == "refunded"
    assert payments.get("3") in {None, "voided"}  # never charged (choreographed: a tombstone)


def test_order_saga_orchestrator_sigkill_mid_saga_resumes_each_step_once(
    backend: tuple[dict[str, str], str, str], tmp_path: Path
) -> None:
    """The orchestrator's consumer SIGKILLed inside a transition and restarted: sagas end, every step applied once."""
    specs = [OUTCOMES[0], OUTCOMES[1], _spec("5", Scenario.SUCCESS, "espresso-beans", CARD_OK, qty=3)]
    # Replies must not time out while the orchestrator restarts: the outcome stays the rules' one.
    cluster = _cluster(backend, tmp_path, Style.ORCHESTRATED, step_timeout=60)
    cluster.prepare(len(specs))
    # The third transition the order service's consumer makes kills it before its commit.
    crash = {"OUTBOXKIT_CRASH_AT": "saga.after_transition", "OUTBOXKIT_CRASH_SKIP": "2"}
    cluster.start_all(env={"consume-order": crash})
    try:
        cluster.wait_ready()
        cluster.place(specs)
        assert cluster.procs["consume-order"].wait(timeout=60) == -signal.SIGKILL
        cluster.start("consume", "order")
        assert cluster.wait(len(specs), timeout=120), f"not finished; logs in {cluster.workdir}"
        checks = cluster.check(len(specs))
        engine = cluster.engines["order"]
        with engine.connect() as conn:
            sagas = conn.execute(sa.select(saga.tables.saga_instance.c.id)).scalars().all()
            logs = {
                sid: [(e.kind.value, e.step, e.attempt) for e in saga.select_step_log(conn, sid)]
                for sid in sagas
            }
        reservations = _rows(cluster.engines["inventory"], demo_reservation)
        payments = _rows(cluster.engines["payment"], demo_payment)
    finally:
        cluster.stop_all()
    assert [c for c in checks if not c.ok] == []
    assert reservations == {"1": "reserved", "2": "released", "5": "reserved"}
    assert payments == {"1": "charged", "2": "declined", "5": "charged"}
    for entries in logs.values():
        sent = [e for e in entries if e[0] in {"command_sent", "compensation_sent"}]
        assert len(sent) == len(set(sent)), entries  # no command sent twice for one step and attempt
        assert entries.count(("local_done", 3, 1)) <= 1


def test_order_saga_documented_command_runs_everything_and_exits_0(tmp_path: Path) -> None:
    """`python -m examples.order_saga run` starts the six processes, runs five orders and passes the check."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.order_saga", "run", "--workdir", str(tmp_path), "--style", "choreographed",
         "--step-timeout", str(STEP_TIMEOUT)],
        capture_output=True, text=True, timeout=180, env=cli_env(), cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    assert "#1001  alice  success           -> confirmed" in result.stdout
    assert "#1005  erin   payment timeout   -> cancelled" in result.stdout


def test_order_saga_relay_sigkilled_and_restarted_loses_nothing(tmp_path: Path) -> None:
    """The payment service's relay SIGKILLed while orders flow and restarted: every order still ends as planned."""
    urls = database_urls(f"sqlite:///{tmp_path}/{{service}}.db")
    backend = (urls, f"sqlite:///{tmp_path}/broker.db", "t:")
    specs = [OUTCOMES[0], OUTCOMES[1], _spec("5", Scenario.SUCCESS, "espresso-beans", CARD_OK, qty=3)]
    cluster = _cluster(backend, tmp_path, Style.CHOREOGRAPHED, step_timeout=60)
    cluster.prepare(len(specs))
    cluster.start_all()
    try:
        cluster.wait_ready()
        cluster.place(specs, pace=0)
        _wait_for_payment_events(cluster)  # the payment relay has work in hand
        relay = cluster.procs["relay-payment"]
        relay.send_signal(signal.SIGKILL)  # no goodbye: its leases must expire, unmarked rows stay pending
        assert relay.wait(timeout=10) == -signal.SIGKILL
        cluster.start("relay", "payment")
        assert cluster.wait(len(specs), timeout=120), f"not finished; logs in {cluster.workdir}"
        checks = cluster.check(len(specs))
        statuses = {r.order_id: r.status for r in outboxkit.demo.select_orders(cluster.engines["order"])}
    finally:
        cluster.stop_all()
    assert [c for c in checks if not c.ok] == []
    assert statuses == {"1": "confirmed", "2": "cancelled", "5": "confirmed"}


def _wait_for_payment_events(cluster: Cluster) -> None:
    table = outbox_tables(outboxkit.demo.PAYMENT.outbox).outbox
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with cluster.engines["payment"].connect() as conn:
            if conn.execute(sa.select(sa.func.count()).select_from(table)).scalar():
                return
        time.sleep(0.02)
    pytest.fail("the payment service published nothing")


def test_order_saga_dead_process_is_named_at_once(tmp_path: Path) -> None:
    """A consumer that dies mid-run stops the wait at once with its name, log and restart command (#9)."""
    urls = database_urls(f"sqlite:///{tmp_path}/{{service}}.db")
    cluster = _cluster((urls, f"sqlite:///{tmp_path}/broker.db", "t:"), tmp_path, Style.ORCHESTRATED)
    cluster.prepare(1)
    cluster.start_all()
    try:
        cluster.wait_ready()
        cluster.procs["consume-payment"].kill()
        cluster.procs["consume-payment"].wait(timeout=10)
        cluster.place([OUTCOMES[0]])
        started = time.monotonic()
        with pytest.raises(ProcessExitedError) as caught:
            cluster.wait(1, timeout=120)
        waited = time.monotonic() - started
    finally:
        cluster.stop_all()
    assert waited < 5
    assert caught.value.name == "consume-payment"
    message = str(caught.value)
    assert "killed by signal 9" in message
    assert str(tmp_path / "logs" / "consume-payment.log") in message
    assert "outboxkit consume examples.order_saga.services:payment" in message


def test_order_saga_run_bad_broker_is_one_line(tmp_path: Path) -> None:
    """`run` with a broker URL it cannot use prints one line on stderr and no traceback (#9)."""
    result = subprocess.run(
        [sys.executable, "-m", "examples.order_saga", "run", "--workdir", str(tmp_path),
         "--broker", "nosuchdriver://user:s3cret-pw@localhost/x"],
        capture_output=True, text=True, timeout=120, env=cli_env(), cwd=REPO_ROOT, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("order_saga: ")
    assert "Traceback" not in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
