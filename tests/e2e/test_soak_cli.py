"""`outboxkit soak` refuses what it cannot use with one line and exit 2, before starting any process."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from tests._cli import run_cli
from tests._inbox import entry
from tests._nats import ADMIN, NatsCluster, nats_add


def test_soak_refuses_a_sqlite_database_with_one_line(tmp_path) -> None:
    """The soak needs PostgreSQL: a SQLite URL is exit 2 and one stderr line naming what to give."""
    result = run_cli("soak", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--broker", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"outboxkit: error: the soak needs a PostgreSQL database URL, got sqlite:///{tmp_path / 'x.db'}"
    ]
    assert not (tmp_path / "x.db").exists()


def test_soak_refuses_a_database_a_previous_soak_filled(pg_empty_url: str, redis_url: str) -> None:
    """A database that already holds the soak's ledgers would count old events as phantoms: exit 2, nothing run."""
    engine = sa.create_engine(pg_empty_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE soak_expected (event_id uuid PRIMARY KEY)"))
    result = run_cli("soak", "--db", pg_empty_url, "--broker", redis_url, "--profile", "smoke")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("outboxkit: error: database at ")
    assert line.endswith("already holds a soak's ledgers: give a fresh database")
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("outbox")  # not migrated: nothing started
    engine.dispose()


def test_soak_refuses_a_nats_account_holding_soak_streams(
    pg_empty_url: str, nats_cluster: NatsCluster
) -> None:
    """Old soak.events streams on NATS would count as phantoms: exit 2, one line, no password, nothing run (#11)."""
    url = nats_cluster.url()
    nats_add(url, "soak.events", entry(payload={"n": 1}))
    try:
        result = run_cli("soak", "--db", pg_empty_url, "--broker", url, "--profile", "smoke")
    finally:
        _delete_streams(url, "soak.events")
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("outboxkit: error: NATS at nats://admin:***@"), line
    assert line.endswith("already holds soak.events streams: give a fresh account or delete them"), line
    assert ADMIN[1] not in result.stdout + result.stderr
    engine = sa.create_engine(pg_empty_url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("outbox")  # not migrated: nothing started
    engine.dispose()


def _delete_streams(url: str, prefix: str) -> None:
    from brokers.nats_jetstream import NatsJetStreamSubscriber  # noqa: PLC0415 - nats extra

    async def delete() -> None:
        subscriber = NatsJetStreamSubscriber.from_url(url)
        try:
            await subscriber.delete_streams(prefix)
        finally:
            await subscriber.aclose()

    asyncio.run(delete())
