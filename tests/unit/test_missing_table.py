"""One missing-table detection and one message for it (issue #10)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from outbox import SchemaMissingError, is_missing_table, tables_missing
from outbox.errors import MIGRATE_HINT


def _sqlite_error(sql: str) -> DBAPIError:
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn, pytest.raises(DBAPIError) as caught:
            conn.execute(text(sql))
    finally:
        engine.dispose()
    return caught.value


class _DriverError(Exception):
    """A driver exception as psycopg raises it: a message and a SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def test_sqlite_missing_table_is_detected() -> None:
    assert is_missing_table(_sqlite_error("SELECT * FROM outboxkit_inbox"))


def test_other_sqlite_errors_are_not_a_missing_table() -> None:
    assert not is_missing_table(_sqlite_error("SELEC 1"))


@pytest.mark.parametrize(
    ("error", "missing"),
    [
        # undefined_table, whatever language lc_messages speaks
        (_DriverError("la relation « outbox » n'existe pas", "42P01"), True),
        (_DriverError('relation "outbox" does not exist', "42P01"), True),
        (_DriverError('database "biling" does not exist', "3D000"), False),
        (_DriverError('column "x" does not exist', "42703"), False),
        (_DriverError("permission denied for table outbox", "42501"), False),
    ],
)
def test_postgresql_missing_table_is_its_sqlstate(error: Exception, missing: bool) -> None:
    assert is_missing_table(error) is missing


def test_the_error_names_the_table_the_place_and_what_to_run() -> None:
    error = tables_missing("inbox table 'outboxkit_inbox'", "postgresql+psycopg://app:***@db/orders")
    assert isinstance(error, SchemaMissingError)
    assert str(error) == (
        f"inbox table 'outboxkit_inbox' is missing in postgresql+psycopg://app:***@db/orders: {MIGRATE_HINT}"
    )
    assert str(tables_missing("a saga table")) == f"a saga table is missing: {MIGRATE_HINT}"
