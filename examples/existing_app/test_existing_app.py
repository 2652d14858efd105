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

from alembic.autogenerate import compare_metadata  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from shop.migrate import downgrade, upgrade  # noqa: E402
from shop.models import metadata as shop_metadata  # noqa: E402
from shop.service import place_order  # noqa: E402

import outbox  # noqa: E402

SHOP_TABLES = {"customers", "orders", "alembic_version"}
# Every table the toolkit owns, spelled out: the example imports only what its
# code uses (`outbox`), as an application would.
TOOLKIT_TABLES = {
    "outbox",
    "outbox_dead_letter",
    "outboxkit_stream_entry",
    "outboxkit_stream_group",
    "outboxkit_stream_pending",
    "outboxkit_stream_fence",
    "outboxkit_stream_lease",
    "outboxkit_relay_lease",
    "outboxkit_relay_member",
    "outboxkit_relay_state",
    "outboxkit_inbox",
    "outboxkit_inbox_dead_letter",
    "outboxkit_consumer_offset",
    "outboxkit_saga",
    "outboxkit_saga_step_log",
    "outboxkit_saga_timer",
    "outboxkit_saga_participant",
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


def _alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain `alembic ARGS` from the example's directory: only its alembic.ini, no wrapper."""
    env = {**os.environ, "SHOP_DATABASE_URL": url}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=HERE,
    )


def test_existing_app_plain_alembic_commands_see_both_branches(url: str) -> None:
    """`alembic heads|upgrade heads|current` with the plain alembic.ini know the toolkit's revisions (#9)."""
    heads = _alembic(url, "heads")
    assert heads.returncode == 0, heads.stderr
    assert "s001_shop (shop) (head)" in heads.stdout
    assert "(outboxkit) (head)" in heads.stdout
    upgraded = _alembic(url, "upgrade", "heads")
    assert upgraded.returncode == 0, upgraded.stderr
    assert _tables(url) == SHOP_TABLES | TOOLKIT_TABLES
    current = _alembic(url, "current")
    assert current.returncode == 0, current.stderr
    assert "s001_shop (head)" in current.stdout
    assert f"{outbox.head_revision()} (head)" in current.stdout


def test_existing_app_alembic_check_proposes_nothing_for_toolkit_tables(url: str) -> None:
    """`alembic check` on an upgraded database finds no operation at all, so none on a toolkit table (#9)."""
    upgrade(url)
    checked = _alembic(url, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected." in checked.stdout


def test_existing_app_env_without_filter_would_drop_toolkit_tables(url: str) -> None:
    """The documented filter is what keeps autogenerate off every toolkit table (#9)."""
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        unfiltered = compare_metadata(context, shop_metadata)
        context = MigrationContext.configure(conn, opts={"include_object": outbox.autogenerate_filter()})
        filtered = compare_metadata(context, shop_metadata)
    engine.dispose()
    dropped = {diff[1].name for diff in unfiltered if diff[0] == "remove_table"}
    assert dropped == TOOLKIT_TABLES
    assert filtered == []


def _outboxkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outboxkit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=HERE,
    )


def test_existing_app_outboxkit_migrate_on_path_b_says_what_to_run(url: str) -> None:
    """`outboxkit migrate` on a path-B database exits 2 with one line naming `alembic upgrade heads` (#9)."""
    upgrade(url)
    done = _outboxkit("migrate", "--db", url)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "alembic upgrade heads" in line
    assert "already exists" not in line
    assert "outboxkit_alembic_version" not in _tables(url)
    current = _outboxkit("migrate", "current", "--db", url)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == outbox.head_revision()


def test_existing_app_missing_tables_name_both_ways_to_migrate(url: str) -> None:
    """Before any migration, publishing and `outboxkit status` name `outboxkit migrate` and `alembic upgrade heads` (#9)."""
    engine = sa.create_engine(url)
    with Session(engine) as session, pytest.raises(outbox.SchemaMissingError) as caught:
        outbox.publish(session, "orders.placed", {"order_id": 1})
    engine.dispose()
    assert "outboxkit migrate" in str(caught.value)
    assert "alembic upgrade heads" in str(caught.value)
    status = _outboxkit("status", "--db", url)
    assert status.returncode == 2
    [line] = status.stderr.strip().splitlines()
    assert "outboxkit migrate" in line
    assert "alembic upgrade heads" in line
