"""The SQL-table broker's lease table: partition leases and member heartbeats.

Redis keeps leases as keys with a TTL; the SQL-table broker keeps them here, one
row per (group, name) with an expiry. Created by revision ``0004_inbox``.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, PrimaryKeyConstraint, String, Table

from outbox.tables import metadata

__all__ = ["stream_lease"]

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
