"""The existing-app example: the toolkit's revisions live in the shop's own Alembic history."""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from shop.migrate import downgrade, upgrade  # noqa: E402
from shop.service import place_order  # noqa: E402

SHOP_TABLES = {"customers", "orders", "alembic_version"}
TOOLKIT_TABLES = {
    "outbox",
    "outbox_dead_letter",
    "outboxkit_saga",
    "outboxkit_saga_participant",
    "outboxkit_saga_step_log",
    "outboxkit_saga_timer",
    "outboxkit_stream_entry",
    "outboxkit_stream_group",
    "outboxkit_stream_pending",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def url(request: pytest.FixtureRequest) -> str:
    value: str = request.getfixturevalue("sqlite_empty_url" if request.param == "sqlite" else "pg_empty_url")
    return value


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    return names


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        value = int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    engine.dispose()
    return value


def test_existing_app_upgrade_creates_both_histories_in_one_version_table(url: str) -> None:
    """`upgrade heads` creates the shop's and the toolkit's tables, tracked in the shop's alembic_version."""
    upgrade(url)
    assert _tables(url) == SHOP_TABLES | TOOLKIT_TABLES
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        versions = set(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    engine.dispose()
    assert "s001_shop" in versions
    assert len(versions) == 2  # the shop's head and the toolkit's head


def test_existing_app_order_and_event_commit_together(url: str) -> None:
    """The shop's order and its event are written in one transaction."""
    upgrade(url)
    engine = sa.create_engine(url)
    with Session(engine) as session, session.begin():
        place_order(session, "ada", Decimal("19.90"))
    with Session(engine) as session:
        place_order(session, "bob", Decimal("5.00"))
        session.rollback()
    engine.dispose()
    assert _count(url, "orders") == 1
    assert _count(url, "outbox") == 1


def test_existing_app_toolkit_downgrade_keeps_shop_tables_and_data(url: str) -> None:
    """`downgrade outboxkit@base` removes only the toolkit's tables; the shop's rows survive; upgrade restores."""
    upgrade(url)
    engine = sa.create_engine(url)
    with Session(engine) as session, session.begin():
        place_order(session, "ada", Decimal("19.90"))
    engine.dispose()
    downgrade(url, "outboxkit@base")
    assert _tables(url) == SHOP_TABLES
    assert _count(url, "orders") == 1
    upgrade(url)
    assert _tables(url) == SHOP_TABLES | TOOLKIT_TABLES
    assert _count(url, "orders") == 1


def test_existing_app_shop_downgrade_keeps_toolkit_tables(url: str) -> None:
    """Downgrading the shop's own branch leaves the toolkit's tables alone."""
    upgrade(url)
    downgrade(url, "shop@base")
    assert _tables(url) == TOOLKIT_TABLES | {"alembic_version"}


def test_existing_app_command_line_runs(sqlite_empty_url: str) -> None:
    """The example's documented commands run and print the event."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent.parent)])}

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "shop", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            cwd=HERE,
        )
        return done.stdout

    run("migrate", sqlite_empty_url)
    assert "order placed" in run("order", sqlite_empty_url, "ada", "19.90")
    assert '"topic": "orders.placed"' in run("events", sqlite_empty_url)
