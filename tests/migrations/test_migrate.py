"""`outboxkit migrate` and the Alembic scripts: up, idempotent, offline SQL, down, drift."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session

import outbox
from tests._cli import run_cli
from tests._tables import TOOLKIT_METADATA

TOOLKIT_TABLES = {
    "outbox",
    "outbox_dead_letter",
    "outboxkit_alembic_version",
    "outboxkit_consumer_offset",
    "outboxkit_inbox",
    "outboxkit_inbox_dead_letter",
    "outboxkit_relay_lease",
    "outboxkit_relay_member",
    "outboxkit_relay_state",
    "outboxkit_stream_lease",
    "outboxkit_saga",
    "outboxkit_saga_participant",
    "outboxkit_saga_step_log",
    "outboxkit_saga_timer",
    "outboxkit_stream_entry",
    "outboxkit_stream_fence",
    "outboxkit_stream_group",
    "outboxkit_stream_pending",
}


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _with_app_tables(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)"))
        conn.execute(sa.text("INSERT INTO customers VALUES (1, 'Ada')"))
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('app_rev_7')"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def empty_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue("sqlite_empty_url" if request.param == "sqlite" else "pg_empty_url")
    return url


def test_migrate_creates_tables_and_is_idempotent(empty_url: str) -> None:
    """migrate creates the toolkit's tables; a second run changes nothing and exits 0."""
    _with_app_tables(empty_url)
    first = run_cli("migrate", "--db", empty_url)
    assert first.returncode == 0, first.stderr
    assert _tables(empty_url) == TOOLKIT_TABLES | {"customers", "alembic_version"}
    second = run_cli("migrate", "--db", empty_url)
    assert second.returncode == 0, second.stderr
    assert outbox.current_revision(empty_url) == outbox.head_revision()
    engine = sa.create_engine(empty_url)
    with engine.connect() as conn:
        # The application's own Alembic version table is never touched.
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "app_rev_7"
    engine.dispose()


def test_migrate_downgrade_base_removes_only_toolkit_tables(empty_url: str) -> None:
    """`migrate downgrade base` drops the toolkit's tables and leaves the application's alone."""
    _with_app_tables(empty_url)
    assert run_cli("migrate", "--db", empty_url).returncode == 0
    result = run_cli("migrate", "--db", empty_url, "downgrade", "base")
    assert result.returncode == 0, result.stderr
    assert _tables(empty_url) == {"customers", "alembic_version", "outboxkit_alembic_version"}
    engine = sa.create_engine(empty_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT name FROM customers")).scalar_one() == "Ada"
        assert conn.execute(sa.text("SELECT count(*) FROM outboxkit_alembic_version")).scalar_one() == 0
    engine.dispose()


def test_migrate_sql_output_applies_to_empty_postgresql(pg_empty_url: str) -> None:
    """The --sql DDL, applied by hand to an empty database, yields the same schema as migrate."""
    result = run_cli("migrate", "--db", pg_empty_url, "--sql")
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE outbox" in result.stdout
    assert _tables(pg_empty_url) == set()  # offline mode wrote nothing
    dsn = pg_empty_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(result.stdout.encode())
    assert _tables(pg_empty_url) == TOOLKIT_TABLES
    assert outbox.current_revision(pg_empty_url) == outbox.head_revision()
    _assert_no_drift(pg_empty_url)


def test_migrate_head_matches_table_definitions(empty_url: str) -> None:
    """After upgrade the database matches the SQLAlchemy metadata: autogenerate finds nothing."""
    outbox.upgrade(empty_url)
    _assert_no_drift(empty_url)


def _assert_no_drift(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "compare_type": True,
                "include_name": lambda name, kind, _parent: (
                    not (kind == "table" and name == outbox.VERSION_TABLE)
                ),
            },
        )
        assert compare_metadata(context, TOOLKIT_METADATA) == []
    engine.dispose()


def test_migrate_steps_up_and_down_one_revision_at_a_time(empty_url: str) -> None:
    """Every revision upgrades and downgrades on its own, in both directions."""
    script = ScriptDirectory(str(outbox.migrations_path()))
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    for revision in revisions:
        outbox.upgrade(empty_url, revision=revision)
        assert outbox.current_revision(empty_url) == revision
    for previous in [*reversed(revisions[:-1]), "base"]:
        outbox.downgrade(empty_url, revision="-1")
        assert outbox.current_revision(empty_url) == (None if previous == "base" else previous)
    assert _tables(empty_url) <= {"outboxkit_alembic_version"}


def test_migrate_current_and_print_path(sqlite_empty_url: str) -> None:
    """`migrate current` prints the revision; `--print-path` the scripts' directory."""
    assert run_cli("migrate", "--db", sqlite_empty_url, "current").stdout.strip() == "none"
    run_cli("migrate", "--db", sqlite_empty_url)
    assert run_cli("migrate", "--db", sqlite_empty_url, "current").stdout.strip() == outbox.head_revision()
    path = run_cli("migrate", "--print-path").stdout.strip()
    assert path == str(outbox.migrations_path())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["migrate"], "no database URL"),
        (["migrate", "--db", "nosuchdriver://x"], "invalid database URL"),
        (["migrate", "--db", "sqlite:///x.db", "--table", "x; DROP TABLE users"], "not a plain identifier"),
        (["migrate", "--db", "sqlite:///x.db", "downgrade"], "downgrade needs a target"),
        (["migrate", "--db", "sqlite:///x.db", "sideways"], "Invalid value"),
        (["migrate", "--no-such-flag"], "No such option"),
        (["no-such-command"], "No such command"),
    ],
)
def test_migrate_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    """Each wrong flag or URL gives one stderr line and exit status 2, no traceback."""
    result = run_cli(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_unreachable_server_hides_password() -> None:
    """A connection failure names the server but never the password."""
    result = run_cli("migrate", "--db", "postgresql+psycopg://app:SENTINEL-pw@127.0.0.1:1/db")
    assert result.returncode == 2
    assert "SENTINEL-pw" not in result.stderr + result.stdout
    assert "app:***@127.0.0.1:1" in result.stderr
    assert result.stderr.count("\n") == 1


def test_migrate_reads_url_from_environment(sqlite_empty_url: str) -> None:
    """OUTBOXKIT_DATABASE_URL is used when --db is not given."""
    result = run_cli("migrate", OUTBOXKIT_DATABASE_URL=sqlite_empty_url)
    assert result.returncode == 0, result.stderr
    assert "outbox" in _tables(sqlite_empty_url)


PUBLISHER_TABLES = {
    "outbox",
    "outbox_dead_letter",
    "outboxkit_alembic_version",
    "outboxkit_relay_lease",
    "outboxkit_relay_member",
    "outboxkit_relay_state",
    "outboxkit_stream_entry",
    "outboxkit_stream_fence",
    "outboxkit_stream_group",
    "outboxkit_stream_pending",
}


def test_migrate_publisher_only_target_skips_inbox_and_saga_tables(empty_url: str) -> None:
    """`migrate upgrade 0003_relay` gives a publish-only service its tables, the relay runs, `migrate` adds the rest (#9)."""
    done = run_cli("migrate", "--db", empty_url, "upgrade", "0003_relay")
    assert done.returncode == 0, done.stderr
    assert _tables(empty_url) == PUBLISHER_TABLES
    engine = sa.create_engine(empty_url)
    with Session(engine) as session, session.begin():
        outbox.publish(session, "orders.placed", {"order_id": 1}, key="order-1")
    relayed = run_cli("relay", "--db", empty_url, "--broker", "memory://", "--once")
    assert relayed.returncode == 0, relayed.stderr
    with engine.connect() as conn:
        published = conn.execute(sa.text("SELECT published_at FROM outbox")).scalar_one()
    engine.dispose()
    assert published is not None
    assert run_cli("migrate", "--db", empty_url).returncode == 0
    assert _tables(empty_url) == TOOLKIT_TABLES
