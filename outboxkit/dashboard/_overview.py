"""The overview's figures: backlog and why rows wait, relays, consumer groups, dead letters, sagas.

Each section is read on its own: a table the role may not read, or a
service without sagas, leaves a note in that section instead of failing the page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

import saga
from inbox import GroupStatus, consumer_group_status, count_dead_letters, inbox_dead_letter
from outbox import OutboxError, redact_url
from relay import OPEN_TX_AGE_S, Backlog, read_backlog, read_open_transactions
from saga.tables import saga_instance

from ._config import DashboardConfig
from ._database import DashboardDatabase

__all__ = ["Overview", "Section", "read_overview"]

T = TypeVar("T")


@dataclass(slots=True)
class Section(Generic[T]):
    """One part of the page: its value, or why it is not shown."""

    value: T | None = None
    note: str | None = None


@dataclass(slots=True)
class Overview:
    """Everything the overview page shows."""

    database: str
    broker: str | None
    backlog: Section[Backlog] = field(default_factory=Section)
    open_transactions: Section[dict[str, float | int]] = field(default_factory=Section)
    open_transaction_age_s: int = OPEN_TX_AGE_S
    consumer_dead_letters: Section[dict[str, int]] = field(default_factory=Section)
    groups: Section[list[GroupStatus]] = field(default_factory=Section)
    sagas: Section[list[saga.SagaCount]] = field(default_factory=Section)


def _section(conn: Connection, read: Callable[[Connection], T | None]) -> Section[T]:
    try:
        with conn.begin():  # rolled back on error, so the next section reads on (PostgreSQL)
            return Section(value=read(conn))
    except (SQLAlchemyError, OutboxError) as exc:
        return Section(note=_why(exc))


def _why(exc: Exception) -> str:
    text = str(getattr(exc, "orig", None) or exc).lower()
    if "permission denied" in text:
        return "not readable by this database role"
    if "no such table" in text or "does not exist" in text or "missing" in text:
        return "no such table in this database"
    return f"could not be read ({type(exc).__name__})"


def read_overview(db: DashboardDatabase, config: DashboardConfig) -> Overview:
    """Read every section of the overview."""
    now = dt.datetime.now(dt.UTC)
    broker = None if config.broker_url is None else redact_url(config.broker_url)
    view = Overview(database=db.where, broker=broker)
    with db.connect() as conn:
        view.backlog = _section(conn, lambda c: read_backlog(c, db.tables, now=now))
        view.open_transactions = _section(conn, _open_transactions)
        view.consumer_dead_letters = _section(conn, lambda c: _consumer_counts(db, c))
        view.sagas = _section(conn, lambda c: _saga_counts(db, c))
    view.groups = _groups(config)
    return view


def _open_transactions(conn: Connection) -> dict[str, float | int] | None:
    found = read_open_transactions(conn)
    return None if found is None else {"count": found[0], "oldest_s": round(found[1], 1)}


def _consumer_counts(db: DashboardDatabase, conn: Connection) -> dict[str, int] | None:
    if not db.has_table(conn, inbox_dead_letter):
        return None  # a service that consumes nothing
    return count_dead_letters(conn)


def _saga_counts(db: DashboardDatabase, conn: Connection) -> list[saga.SagaCount] | None:
    if not db.has_table(conn, saga_instance):
        return None  # a service that runs no saga
    return saga.count_sagas(conn)


def _groups(config: DashboardConfig) -> Section[list[GroupStatus]]:
    if config.broker_url is None:
        return Section(note="no --broker given: consumer groups are not shown")
    try:
        found = consumer_group_status(config.broker_url, prefix=config.stream_prefix, schema=config.schema)
    except OutboxError as exc:
        return Section(note=f"broker unreachable: {exc}")
    except Exception as exc:  # noqa: BLE001 - a broker client error must not break the page
        return Section(note=f"broker unreachable ({type(exc).__name__})")
    return Section(value=found)
