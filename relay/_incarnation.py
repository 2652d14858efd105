"""Broker incarnations: notice a broker that lost its data and re-publish the replay window.

The broker reports a token that changes when it loses its data (see
:class:`outbox.brokers.Publisher`). The token last seen is recorded in
``outboxkit_relay_state``; the first relay to see a new one records it and, in
the same transaction, makes the rows published within the replay window
pending again, so they are published before any newer row.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, insert, select, update
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

    def expected(self) -> str | None:
        """The token recorded in the database (read once, then cached)."""
        if self._token is None:
            with self.engine.connect() as conn:
                self._token = conn.execute(
                    select(relay_state.c.value).where(relay_state.c.name == self.name)
                ).scalar()
        return self._token

    def changed(self, token: str | None) -> int | None:
        """``None`` if ``token`` is the known one; else adopt it and return the rows replayed."""
        if token is None or token == self._token:
            return None
        now = dt.datetime.now(dt.UTC)
        replayed = 0
        try:
            with self.engine.begin() as conn:
                stored = conn.execute(
                    select(relay_state.c.value).where(relay_state.c.name == self.name)
                ).scalar()
                if stored is None:
                    conn.execute(insert(relay_state).values(name=self.name, value=token, updated_at=now))
                elif (
                    stored != token
                    and conn.execute(
                        update(relay_state)
                        .where(relay_state.c.name == self.name, relay_state.c.value == stored)
                        .values(value=token, updated_at=now)
                    ).rowcount
                ):
                    replayed = self.store.replay_since(conn, since=now - self.replay_window)
                    self._log.warning(
                        "relay.broker_data_lost",
                        replayed=replayed,
                        replay_window_s=self.replay_window.total_seconds(),
                    )
        except IntegrityError:
            return 0  # another relay recorded it at the same moment: re-read next time
        self._token = token
        return replayed
