"""Broker incarnations: notice a broker that lost its data and re-publish the replay window.

The broker reports a token that changes when it loses its data (see
:class:`brokers.Publisher`). The token last seen is recorded in
``outboxkit_relay_state``; the first relay to see a new one records it and, in
the same transaction, makes the rows published within the replay window
pending again, so they are published before any newer row.

The window counts back from the last moment the old incarnation was
*confirmed* (a batch accepted under it), not from the moment the loss is
noticed: a broker that stayed down longer than the window before coming back
empty would otherwise lose the entries it acknowledged just before dying (#9).
That moment is the state row's ``updated_at``, advanced by every relay at most
every ``confirm_interval``; retention keeps rows the same way, so nothing
the window still covers is deleted while the broker is away.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError
from structlog.typing import FilteringBoundLogger

from ._store import OutboxStore
from .tables import relay_state

__all__ = ["IncarnationTracker"]


class IncarnationTracker:
    """The broker incarnation this relay publishes under, kept in step with the database."""

    def __init__(
        self,
        engine: Engine,
        store: OutboxStore,
        *,
        name: str,
        replay_window: dt.timedelta,
        log: FilteringBoundLogger,
    ) -> None:
        self.engine = engine
        self.store = store
        self.name = name[:255]
        self.replay_window = replay_window
        self._log = log
        self._token: str | None = None
        # Writing the confirmation on every batch would cost a row update per
        # batch; a quarter of the window (at most 5 s) keeps the replay exact enough.
        self.confirm_interval = min(replay_window / 4, _MAX_CONFIRM_INTERVAL)
        self._confirmed_written: dt.datetime | None = None

    def expected(self) -> str | None:
        """The token recorded in the database (read once, then cached)."""
        if self._token is None:
            with self.engine.connect() as conn:
                self._token = conn.execute(
                    select(relay_state.c.value).where(relay_state.c.name == self.name)
                ).scalar()
        return self._token

    def confirm(self, conn: Connection, token: str | None, *, now: dt.datetime) -> None:
        """Record (in the caller's transaction) that the broker accepted a batch under ``token``."""
        if token is None or token != self._token or self.replay_window <= dt.timedelta(0):
            return
        if self._confirmed_written is not None and now - self._confirmed_written < self.confirm_interval:
            return
        conn.execute(
            update(relay_state)
            .where(
                relay_state.c.name == self.name, relay_state.c.value == token, relay_state.c.updated_at < now
            )
            .values(updated_at=now)
        )
        self._confirmed_written = now

    def horizon(self, conn: Connection, *, now: dt.datetime) -> dt.datetime:
        """The oldest publication the replay window still covers: ``min(now, last confirmed) - window``."""
        confirmed = conn.execute(
            select(relay_state.c.updated_at).where(relay_state.c.name == self.name)
        ).scalar()
        return min(now, _utc(confirmed) if confirmed is not None else now) - self.replay_window

    def changed(self, token: str | None) -> int | None:
        """``None`` if ``token`` is the known one; else adopt it and return the rows replayed."""
        if token is None or token == self._token:
            return None
        now = dt.datetime.now(dt.UTC)
        replayed = 0
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(relay_state.c.value, relay_state.c.updated_at).where(
                        relay_state.c.name == self.name
                    )
                ).first()
                stored = None if row is None else row.value
                if row is None:
                    conn.execute(insert(relay_state).values(name=self.name, value=token, updated_at=now))
                elif (
                    stored != token
                    and conn.execute(
                        update(relay_state)
                        .where(relay_state.c.name == self.name, relay_state.c.value == stored)
                        .values(value=token, updated_at=now)
                    ).rowcount
                ):
                    confirmed = min(now, _utc(row.updated_at))
                    replayed = self.store.replay_since(conn, since=confirmed - self.replay_window)
                    self._log.warning(
                        "relay.broker_data_lost",
                        replayed=replayed,
                        replay_window_s=self.replay_window.total_seconds(),
                        last_confirmed_s_ago=round((now - confirmed).total_seconds(), 3),
                    )
        except IntegrityError:
            return 0  # another relay recorded it at the same moment: re-read next time
        self._token = token
        self._confirmed_written = now
        return replayed


_MAX_CONFIRM_INTERVAL = dt.timedelta(seconds=5)


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands timestamps back without a zone; they were written in UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
