"""Tables of the SQL-table broker (the embedded default's broker).

They mirror Redis Streams so both brokers behave alike: an append-only entry
log per stream with monotonically increasing ids, consumer groups with a
last-delivered id, and a pending-entries list per group (delivery count and
owner, for acknowledgement and reclaiming). They live in the database given to
the broker URL, which may be a separate SQLite file shared by all services.

``stream_lease`` holds the consumers' partition leases and member heartbeats:
Redis keeps leases as keys with a TTL, this broker keeps them as rows, one per
(group, name) with an expiry. It is created by revision ``0004_inbox``, the
others by ``0002_sql_broker`` and ``0003_relay``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from outbox.tables import metadata

__all__ = ["stream_entry", "stream_fence", "stream_group", "stream_lease", "stream_pending"]

_ID = BigInteger().with_variant(Integer, "sqlite")

stream_entry = Table(
    "outboxkit_stream_entry",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("stream", String(512), nullable=False),
    # The wire fields (outbox._wire) as one JSON object of strings.
    Column("fields", Text(), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)
Index("ix_outboxkit_stream_entry_stream_id", stream_entry.c.stream, stream_entry.c.id)

stream_group = Table(
    "outboxkit_stream_group",
    metadata,
    Column("stream", String(512), nullable=False),
    Column("group_name", String(255), nullable=False),
    Column("last_delivered_id", _ID, nullable=False),
    PrimaryKeyConstraint("stream", "group_name", name="pk_outboxkit_stream_group"),
)

stream_pending = Table(
    "outboxkit_stream_pending",
    metadata,
    Column("stream", String(512), nullable=False),
    Column("group_name", String(255), nullable=False),
    Column("entry_id", _ID, nullable=False),
    Column("consumer", String(255), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False),
    Column("delivery_count", Integer(), nullable=False),
    PrimaryKeyConstraint("stream", "group_name", "entry_id", name="pk_outboxkit_stream_pending"),
)
Index("ix_outboxkit_stream_pending_delivered_at", stream_pending.c.delivered_at)

# Relay fencing (revision 0003_relay): the newest lease epoch seen per relay
# partition; a batch carrying an older epoch is refused.
stream_fence = Table(
    "outboxkit_stream_fence",
    metadata,
    Column("name", String(512), nullable=False),
    Column("epoch", _ID, nullable=False),
    PrimaryKeyConstraint("name", name="pk_outboxkit_stream_fence"),
)

stream_lease = Table(
    "outboxkit_stream_lease",
    metadata,
    Column("group_name", String(255), nullable=False),
    # A stream name for a partition lease, or "member:<consumer>" for a heartbeat.
    Column("name", String(600), nullable=False),
    Column("owner", String(255), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("group_name", "name", name="pk_outboxkit_stream_lease"),
)
