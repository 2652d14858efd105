"""The dashboard's database: one engine, the tables it reads, and what the role may change.

Under the read-only grants of docs/security.md every write would fail; the
dashboard asks PostgreSQL up front (``has_table_privilege``) and shows those
actions as unavailable instead of offering buttons that end in an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from inbox import inbox_dead_letter
from outbox import ConfigError, OutboxConfig, StorageError, outbox_tables, redact_url
from outbox.tables import OutboxTables
from relay import check_schema, make_engine
from saga.tables import saga_instance, saga_step_log, saga_timer

from ._config import DashboardConfig

__all__ = ["Area", "DashboardDatabase", "Permissions"]


class Area:
    """The groups of actions, each needing its own rights."""

    RELAY = "relay dead letters"
    CONSUMER = "consumer dead letters"
    SAGA = "sagas"


@dataclass(frozen=True, slots=True)
class Permissions:
    """Why each area's actions are unavailable (no entry: available)."""

    refused: dict[str, str]

    def allows(self, area: str) -> bool:
        """Whether the role may perform the area's actions."""
        return area not in self.refused


class DashboardDatabase:
    """The engine and tables of the service the dashboard looks at."""

    def __init__(self, config: DashboardConfig) -> None:
        self.engine: Engine = make_engine(config.db_url, schema=config.schema)
        self.tables: OutboxTables = outbox_tables(OutboxConfig(table=config.table, schema=config.schema))
        self.outbox_config = OutboxConfig(table=config.table, schema=config.schema)
        self.where = redact_url(self.engine.url)

    def check(self) -> None:
        """Refuse a database without the outbox tables (and never create an SQLite file by looking)."""
        database = self.engine.url.database
        on_disk = self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        if (
            on_disk
            and database is not None
            and not database.startswith("file:")
            and not Path(database).exists()
        ):
            msg = f"no SQLite database at {database}"
            raise ConfigError(msg)
        check_schema(self.engine, self.tables)

    def close(self) -> None:
        """Close the pool."""
        self.engine.dispose()

    def connect(self) -> Connection:
        """A connection; a driver error becomes a :class:`StorageError` with the password masked."""
        try:
            return self.engine.connect()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot connect to {self.where}: {type(exc).__name__}") from None

    def has_table(self, conn: Connection, table: Table) -> bool:
        """Whether ``table`` exists (a service may run no saga or consume nothing)."""
        return inspect(conn).has_table(table.name, schema=table.schema)

    def permissions(self) -> Permissions:
        """Which action areas the role lacks rights for, and the first right it lacks."""
        needs: dict[str, list[tuple[Table, str]]] = {
            Area.RELAY: [(self.tables.outbox, "INSERT"), (self.tables.dead_letter, "UPDATE"),
                         (self.tables.dead_letter, "DELETE")],
            Area.CONSUMER: [(inbox_dead_letter, "UPDATE"), (inbox_dead_letter, "DELETE")],
            Area.SAGA: [(saga_instance, "UPDATE"), (saga_step_log, "INSERT"), (saga_timer, "INSERT"),
                        (saga_timer, "DELETE"), (self.tables.outbox, "INSERT"),
                        (self.tables.outbox, "DELETE")],
        }  # fmt: skip
        refused: dict[str, str] = {}
        with self.connect() as conn:
            for area, rights in needs.items():
                for table, right in rights:
                    if not self.has_table(conn, table):
                        refused[area] = f"table {table.name} does not exist"
                        break
                    if not _granted(conn, table, right):
                        refused[area] = f"the database role lacks {right} on {table.name}"
                        break
        return Permissions(refused)


def _granted(conn: Connection, table: Table, right: str) -> bool:
    if conn.dialect.name != "postgresql":
        return True  # SQLite has no roles: whoever opens the file may write it
    name = f'"{table.name}"' if table.schema is None else f'"{table.schema}"."{table.name}"'
    query = text("SELECT has_table_privilege(current_user, CAST(:t AS regclass), :p)")
    return bool(conn.execute(query, {"t": name, "p": right}).scalar())
