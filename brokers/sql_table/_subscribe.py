"""The subscribe half of the SQL-table broker (the embedded default).

Consumer groups over ``outboxkit_stream_entry`` with the semantics of Redis
Streams (see :mod:`brokers._subscriber`): a group's
``last_delivered_id``, a pending list with delivery counts, claims of idle
entries and leases. Every state change is one short transaction that starts
with a write (``UPDATE``), so SQLite takes its write lock at once instead of
failing to upgrade a read lock, and PostgreSQL locks the group row. Blocking
reads poll.

The publish half must make entry ids become visible in id order (a smaller id
committing after a larger one was read would be skipped); see
docs/wire-format.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Delete, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from outbox._redact import redact_url
from outbox._schema import use_schema
from outbox.errors import MIGRATE_HINT, BrokerError, ConfigError, SchemaMissingError

from .._subscriber import Delivery, GroupStatus, RedeliveryHorizon
from ._urls import async_url
from .tables import stream_entry, stream_group, stream_lease, stream_pending

__all__ = ["DEFAULT_POLL_INTERVAL", "SqlTableSubscriber"]

DEFAULT_POLL_INTERVAL = dt.timedelta(milliseconds=100)
_MAX_BLOCK = dt.timedelta(seconds=30)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_FOREVER = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


def _age(now: dt.datetime, value: object) -> dt.timedelta | None:
    if not isinstance(value, dt.datetime):
        return None
    return max(now - (value if value.tzinfo else value.replace(tzinfo=dt.UTC)), dt.timedelta(0))


def _fields(text: str) -> dict[bytes | str, bytes | str]:
    # An entry whose stored JSON is broken is still delivered, so the
    # consumer dead-letters it with a reason instead of the read failing.
    try:
        value = json.loads(text)
    except ValueError:
        return {"_invalid_json": text}
    if not isinstance(value, dict):
        return {"_invalid_json": text}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _upsert(dialect: Dialect, table: Table, values: dict[str, Any]) -> postgresql.Insert | sqlite.Insert:
    if dialect.name == "postgresql":
        return postgresql.insert(table).values(values)
    if dialect.name == "sqlite":
        return sqlite.insert(table).values(values)
    msg = f"the SQL-table broker supports PostgreSQL and SQLite, not {dialect.name}"
    raise ConfigError(msg)


def _trim_acknowledged(stream: str) -> Delete:
    """Delete the entries of ``stream`` that every group has read and acknowledged (issue #9).

    A group's floor is the entry before its oldest pending one, or its last
    delivered id when nothing is pending; the stream keeps everything above
    the lowest floor. A group that has not read an entry keeps it, and a stream
    without groups keeps everything (a group created later starts at 0), as
    Redis keeps entries no ``MAXLEN`` trimmed. Races are safe: reads only add
    pending entries above a group's last delivered id, so an entry at or below
    a floor seen by this transaction is never needed again by that group.
    """
    g, p, e = stream_group, stream_pending, stream_entry
    oldest_pending = (
        select(func.min(p.c.entry_id))
        .where(p.c.stream == g.c.stream, p.c.group_name == g.c.group_name)
        .scalar_subquery()
    )
    floor = (
        select(func.min(func.coalesce(oldest_pending - 1, g.c.last_delivered_id)))
        .where(g.c.stream == stream)
        .scalar_subquery()
    )
    return delete(e).where(e.c.stream == stream, e.c.id <= floor)


class SqlTableSubscriber:
    """Consumer groups on the SQL-table broker (a SQLAlchemy URL as broker URL).

    .. versionadded:: 0.1
    """

    def __init__(self, engine: AsyncEngine, *, poll_interval: dt.timedelta = DEFAULT_POLL_INTERVAL) -> None:
        self._engine = engine
        self._poll = poll_interval.total_seconds()
        self._where = redact_url(engine.url)

    @classmethod
    def from_url(
        cls, url: str, *, poll_interval: dt.timedelta = DEFAULT_POLL_INTERVAL, schema: str | None = None
    ) -> SqlTableSubscriber:
        """Open the broker database at ``url`` (sync or async driver names both work).

        ``schema``: the database schema of the broker's tables (PostgreSQL only).
        """
        engine = use_schema(create_async_engine(async_url(url), pool_pre_ping=True), schema)
        if engine.dialect.name == "sqlite":
            from ._sqlite import configure_sqlite  # noqa: PLC0415

            configure_sqlite(engine.sync_engine)
        return cls(engine, poll_interval=poll_interval)

    @property
    def max_block(self) -> dt.timedelta:
        """Reads poll, so any block up to 30 s is fine."""
        return _MAX_BLOCK

    def _error(self, what: str, exc: DBAPIError) -> BrokerError | SchemaMissingError:
        text = str(exc.orig).lower()
        if "no such table" in text or ("does not exist" in text and "relation" in text):
            return SchemaMissingError(f"broker tables missing at {self._where}: {MIGRATE_HINT}")
        return BrokerError(
            f"broker database at {self._where} failed during {what}: {type(exc.orig).__name__}"
        )

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the group at entry 0 unless it exists."""
        try:
            async with self._engine.begin() as conn:
                await self._create_group(conn, stream, group)
        except DBAPIError as exc:
            raise self._error("group create", exc) from exc

    async def _create_group(self, conn: AsyncConnection, stream: str, group: str) -> None:
        stmt = _upsert(
            conn.dialect, stream_group, {"stream": stream, "group_name": group, "last_delivered_id": 0}
        )
        await conn.execute(stmt.on_conflict_do_nothing(index_elements=["stream", "group_name"]))

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: dt.timedelta
    ) -> list[Delivery]:
        """Deliver new entries; poll until one arrives or ``block`` passes."""
        deadline = time.monotonic() + block.total_seconds()
        while True:
            try:
                found = await self._read_once(stream, group, consumer, count)
            except DBAPIError as exc:
                raise self._error("read", exc) from exc
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            await asyncio.sleep(min(self._poll, remaining))

    async def _read_once(self, stream: str, group: str, consumer: str, count: int) -> list[Delivery]:
        g, e = stream_group, stream_entry
        where = and_(g.c.stream == stream, g.c.group_name == group)
        async with self._engine.connect() as conn:  # cheap check without the write lock
            last = (await conn.execute(select(g.c.last_delivered_id).where(where))).scalar()
            if last is not None:
                newer = select(e.c.id).where(e.c.stream == stream, e.c.id > last).limit(1)
                if (await conn.execute(newer)).first() is None:
                    return []
        async with self._engine.begin() as conn:
            locked = await conn.execute(
                update(g)
                .where(where)
                .values(last_delivered_id=g.c.last_delivered_id)
                .returning(g.c.last_delivered_id)
            )
            last = locked.scalar()
            if last is None:  # the group vanished or never existed: start at 0, like NOGROUP
                await self._create_group(conn, stream, group)
                last = 0
            rows = (
                await conn.execute(
                    select(e.c.id, e.c.fields)
                    .where(e.c.stream == stream, e.c.id > last)
                    .order_by(e.c.id)
                    .limit(count)
                )
            ).all()
            if not rows:
                return []
            now = _now()
            await conn.execute(
                insert(stream_pending),
                [
                    {
                        "stream": stream,
                        "group_name": group,
                        "entry_id": r.id,
                        "consumer": consumer,
                        "delivered_at": now,
                        "delivery_count": 1,
                    }
                    for r in rows
                ],
            )
            await conn.execute(update(g).where(where).values(last_delivered_id=rows[-1].id))
        return [
            Delivery(stream=stream, entry_id=str(r.id), fields=_fields(r.fields), deliveries=1) for r in rows
        ]

    async def claim(
        self, stream: str, group: str, consumer: str, *, min_idle: dt.timedelta, count: int
    ) -> list[Delivery]:
        """Take over idle pending entries, oldest first, counting a delivery each."""
        p, e = stream_pending, stream_entry
        now = _now()
        cutoff = now - min_idle
        mine = and_(p.c.stream == stream, p.c.group_name == group)
        oldest = (
            select(p.c.entry_id).where(mine, p.c.delivered_at <= cutoff).order_by(p.c.entry_id).limit(count)
        )
        try:
            async with self._engine.begin() as conn:
                claimed = (
                    await conn.execute(
                        update(p)
                        # delivered_at is re-checked on the row itself, so two racing
                        # claimers cannot both take one entry on PostgreSQL.
                        .where(mine, p.c.delivered_at <= cutoff, p.c.entry_id.in_(oldest.scalar_subquery()))
                        .values(consumer=consumer, delivered_at=now, delivery_count=p.c.delivery_count + 1)
                        .returning(p.c.entry_id, p.c.delivery_count)
                    )
                ).all()
                if not claimed:
                    return []
                counts = {r.entry_id: r.delivery_count for r in claimed}
                rows = (
                    await conn.execute(
                        select(e.c.id, e.c.fields).where(e.c.id.in_(list(counts)), e.c.stream == stream)
                    )
                ).all()
                found = {r.id: r.fields for r in rows}
                gone = [i for i in counts if i not in found]
                if gone:  # deleted from the stream while pending, as XAUTOCLAIM drops them
                    await conn.execute(delete(p).where(mine, p.c.entry_id.in_(gone)))
        except DBAPIError as exc:
            raise self._error("claim", exc) from exc
        return [
            Delivery(stream=stream, entry_id=str(i), fields=_fields(found[i]), deliveries=counts[i])
            for i in sorted(found)
        ]

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """Delete the entries from the group's pending list, then trim what every group acknowledged."""
        if not entry_ids:
            return
        p = stream_pending
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    delete(p).where(
                        p.c.stream == stream,
                        p.c.group_name == group,
                        p.c.entry_id.in_([int(i) for i in entry_ids]),
                    )
                )
                await conn.execute(_trim_acknowledged(stream))
        except DBAPIError as exc:
            raise self._error("ack", exc) from exc

    async def acquire_lease(self, group: str, name: str, owner: str, *, ttl: dt.timedelta) -> bool:
        """Insert the lease row, or take it over if it expired or is already ours."""
        lease = stream_lease
        now = _now()
        try:
            async with self._engine.begin() as conn:
                stmt = _upsert(
                    conn.dialect,
                    lease,
                    {"group_name": group, "name": name, "owner": owner, "expires_at": now + ttl},
                ).on_conflict_do_update(
                    index_elements=["group_name", "name"],
                    set_={"owner": owner, "expires_at": now + ttl},
                    where=or_(lease.c.expires_at < now, lease.c.owner == owner),
                )
                # RETURNING, not rowcount: psycopg reports -1 for some upserts.
                result = await conn.execute(stmt.returning(lease.c.owner))
                return result.first() is not None
        except DBAPIError as exc:
            raise self._error("lease", exc) from exc

    async def release_lease(self, group: str, name: str, owner: str) -> None:
        """Delete the lease row if ``owner`` holds it."""
        lease = stream_lease
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    delete(lease).where(
                        lease.c.group_name == group, lease.c.name == name, lease.c.owner == owner
                    )
                )
        except DBAPIError as exc:
            raise self._error("lease release", exc) from exc

    async def heartbeat(self, group: str, member: str, *, ttl: dt.timedelta) -> int:
        """Upsert ``member:<member>`` with an expiry, drop expired members, count the rest."""
        lease = stream_lease
        now = _now()
        name = f"member:{member}"
        members = and_(lease.c.group_name == group, lease.c.name.like("member:%"))
        try:
            async with self._engine.begin() as conn:
                stmt = _upsert(
                    conn.dialect,
                    lease,
                    {"group_name": group, "name": name, "owner": member, "expires_at": now + ttl},
                ).on_conflict_do_update(index_elements=["group_name", "name"], set_={"expires_at": now + ttl})
                await conn.execute(stmt)
                await conn.execute(delete(lease).where(members, lease.c.expires_at < now))
                return int((await conn.execute(select(func.count()).where(members))).scalar() or 0)
        except DBAPIError as exc:
            raise self._error("heartbeat", exc) from exc

    async def group_status(self, stream: str, group: str) -> GroupStatus | None:
        """Pending entries, entries after the group's last delivered id, consumers with pending entries."""
        for status in await self._statuses(
            and_(stream_group.c.stream == stream, stream_group.c.group_name == group)
        ):
            return status
        return None

    async def list_groups(self, prefix: str = "") -> list[GroupStatus]:
        """Every group on streams starting with ``prefix``."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return await self._statuses(stream_group.c.stream.like(f"{escaped}%", escape="\\"))

    async def list_streams(self, prefix: str = "") -> dict[str, int]:
        """Entry counts of the streams starting with ``prefix``."""
        e = stream_entry
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (
            select(e.c.stream, func.count())
            .where(e.c.stream.like(f"{escaped}%", escape="\\"))
            .group_by(e.c.stream)
            .order_by(e.c.stream)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except DBAPIError as exc:
            raise self._error("status", exc) from exc
        return {str(r[0]): int(r[1]) for r in rows}

    async def _statuses(self, where: ColumnElement[bool]) -> list[GroupStatus]:
        g, p, e = stream_group, stream_pending, stream_entry
        pending = (
            select(func.count())
            .where(p.c.stream == g.c.stream, p.c.group_name == g.c.group_name)
            .scalar_subquery()
        )
        consumers = (
            select(func.count(p.c.consumer.distinct()))
            .where(p.c.stream == g.c.stream, p.c.group_name == g.c.group_name)
            .scalar_subquery()
        )
        behind = (
            select(func.count())
            .where(e.c.stream == g.c.stream, e.c.id > g.c.last_delivered_id)
            .scalar_subquery()
        )
        query = (
            select(g.c.stream, g.c.group_name, pending, behind, consumers)
            .where(where)
            .order_by(g.c.stream, g.c.group_name)
        )
        try:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
        except DBAPIError as exc:
            raise self._error("status", exc) from exc
        return [GroupStatus(stream=r[0], group=r[1], pending=r[2], behind=r[3], consumers=r[4]) for r in rows]

    async def oldest_entry_time(self, stream: str) -> dt.datetime | None:
        """``created_at`` of the stream's first entry."""
        e = stream_entry
        try:
            async with self._engine.connect() as conn:
                value = (
                    await conn.execute(select(func.min(e.c.created_at)).where(e.c.stream == stream))
                ).scalar()
        except DBAPIError as exc:
            raise self._error("status", exc) from exc
        if not isinstance(value, dt.datetime):
            return None
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    async def redelivery_horizon(self, stream: str, group: str) -> RedeliveryHorizon:
        """Entries of ``stream`` and the group's pending entries, aged from ``created_at``."""
        e, p = stream_entry, stream_pending
        pending_of = and_(p.c.stream == stream, p.c.group_name == group, p.c.entry_id == e.c.id)
        try:
            async with self._engine.connect() as conn:
                entries, oldest = (
                    await conn.execute(
                        select(func.count(), func.min(e.c.created_at)).where(e.c.stream == stream)
                    )
                ).one()
                pending, oldest_pending = (
                    await conn.execute(
                        select(func.count(), func.min(e.c.created_at)).select_from(p.join(e, pending_of))
                    )
                ).one()
        except DBAPIError as exc:
            raise self._error("status", exc) from exc
        now = _now()
        return RedeliveryHorizon(
            stream=stream,
            group=group,
            entries=int(entries),
            oldest_entry_age=_age(now, oldest),
            pending=int(pending),
            oldest_pending_age=_age(now, oldest_pending),
        )

    async def mark_once(self, scope: str, marker: str) -> bool:
        """Insert a never-expiring ``mark:<marker>`` row in the lease table; True if it was new."""
        lease = stream_lease
        values = {"group_name": scope, "name": f"mark:{marker}", "owner": "", "expires_at": _FOREVER}
        try:
            async with self._engine.begin() as conn:
                stmt = _upsert(conn.dialect, lease, values).on_conflict_do_nothing(
                    index_elements=["group_name", "name"]
                )
                result = await conn.execute(stmt.returning(lease.c.name))
                return result.first() is not None
        except DBAPIError as exc:
            raise self._error("mark", exc) from exc

    async def aclose(self) -> None:
        """Dispose of the engine."""
        await self._engine.dispose()
