"""Tables of the relay: partition leases, relay membership and shared state.

* ``outboxkit_relay_lease``: one row per (outbox table, relay partition). The
  owner renews ``expires_at``; a relay taking a partition over increments
  ``epoch``, which fences the previous owner at the broker.
* ``outboxkit_relay_member``: one row per live relay process (heartbeat with
  TTL); the sorted list of live members decides who should own which
  partition, and ``idle`` tells writers' commit trigger whether a NOTIFY is
  needed at all.
* ``outboxkit_relay_state``: small shared values, e.g. the broker incarnation
  last seen (to detect a broker that lost its data).

They belong to this module's own ``metadata``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

from outbox.tables import NAMING_CONVENTION

__all__ = ["metadata", "relay_lease", "relay_member", "relay_state"]

metadata = MetaData(naming_convention=NAMING_CONVENTION)

relay_lease = Table(
    "outboxkit_relay_lease",
    metadata,
    Column("scope", String(255), nullable=False),
    Column("partition", Integer(), nullable=False),
    Column("owner", String(255), nullable=True),
    Column("epoch", BigInteger(), nullable=False, server_default=text("0")),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("scope", "partition", name="pk_outboxkit_relay_lease"),
)

relay_member = Table(
    "outboxkit_relay_member",
    metadata,
    Column("scope", String(255), nullable=False),
    Column("relay_id", String(255), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer(), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("idle", Boolean(), nullable=False, server_default=text("false")),
    PrimaryKeyConstraint("scope", "relay_id", name="pk_outboxkit_relay_member"),
)

relay_state = Table(
    "outboxkit_relay_state",
    metadata,
    Column("name", String(255), nullable=False),
    Column("value", Text(), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("name", name="pk_outboxkit_relay_state"),
)
