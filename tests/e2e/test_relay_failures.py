"""Relay exits on errors retrying cannot fix, and --once never hangs on an outage."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from outbox import publish
from tests._cli import run_cli

pytestmark = pytest.mark.e2e


def _one_row(url: str) -> None:
    engine = sa.create_engine(url)
    with Session(engine) as session, session.begin():
        publish(session, "orders.created", {"n": 1})
    engine.dispose()


def test_relay_wrong_redis_password_is_one_line_exit_2(sqlite_url: str, redis_server_factory: object) -> None:
    """A refused password is a configuration error: exit 2 at once, the row stays, the password is not shown."""
    assert callable(redis_server_factory)
    server = redis_server_factory(password="right-password")
    _one_row(sqlite_url)
    started = time.monotonic()
    result = run_cli("relay", "--db", sqlite_url, "--broker", f"redis://:wrong-pw@127.0.0.1:{server.port}/0")
    assert result.returncode == 2
    assert time.monotonic() - started < 30
    assert "AuthenticationError" in result.stderr
    assert "wrong-pw" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("outboxkit: error:")
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one() == 1
    engine.dispose()


def test_relay_once_with_broker_down_stops_with_error(sqlite_url: str) -> None:
    """--once against an unreachable broker gives up after a few retries, exit 2, row kept."""
    _one_row(sqlite_url)
    started = time.monotonic()
    result = run_cli("relay", "--db", sqlite_url, "--broker", "redis://127.0.0.1:1/0", "--once", timeout=60)
    assert result.returncode == 2
    assert time.monotonic() - started < 45
    assert "unavailable" in result.stderr.strip().splitlines()[-1]
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")).scalar_one() == 1
        )
    engine.dispose()


def test_relay_once_with_empty_outbox_and_dead_broker_exits_2(sqlite_url: str) -> None:
    """--once with nothing due still checks the broker: a dead one is one stderr line and exit 2, not "drained" (#9)."""
    result = run_cli("relay", "--db", sqlite_url, "--broker", "redis://127.0.0.1:1/0", "--once", timeout=60)
    assert result.returncode == 2
    assert "outboxkit: error: broker unavailable" in result.stderr


def test_consume_once_with_broker_down_gives_up_like_the_relay(sqlite_url: str) -> None:
    """`consume --once` against an unreachable broker gives up after five attempts with one line and exit 2 (#9)."""
    started = time.monotonic()
    result = run_cli("consume", "tests.e2e.inbox_app:registry", "--db", sqlite_url,
                     "--broker", "redis://127.0.0.1:1/0", "--group", "g", "--once", timeout=90)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert time.monotonic() - started < 60
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("outboxkit: error:")
    assert "giving up (--once)" in last
