"""Table definitions of the consume side.

``outboxkit_inbox`` holds one row per (consumer, message id) that consumer has
processed; the primary key is the dedup guarantee, enforced by the database.
The row is inserted in the handler's own transaction, so it commits if and only
if the handler's effects do.

``outboxkit_inbox_dead_letter`` holds the messages a consumer set aside: the
raw broker entry (so nothing is lost even when it cannot be decoded), the
reason, and how many times it was delivered. It lives in the consumer's own
database, next to the inbox, so listing and retrying never needs the broker.

The SQL-table broker's lease table (``brokers.sql_table.tables``) is created by
the same revision and imported here so ``metadata`` holds every table.
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
    UniqueConstraint,
)

from brokers.sql_table.tables import stream_lease
from outbox.tables import metadata

__all__ = ["inbox", "inbox_dead_letter", "stream_lease"]

_ID = BigInteger().with_variant(Integer, "sqlite")

inbox = Table(
    "outboxkit_inbox",
    metadata,
    # The logical consumer (the consumer group's name, e.g. "billing"), not a process.
    Column("consumer", String(255), nullable=False),
    # Text, not UUID: the library API also dedups foreign ids (Kafka offsets,
    # webhook delivery ids). outboxkit envelopes store the canonical UUID text.
    Column("message_id", String(255), nullable=False),
    Column("topic", String(249), nullable=True),
    Column("processed_at", DateTime(timezone=True), nullable=False),
    # The delivery that succeeded: 1 = first try.
    Column("attempts", Integer(), nullable=False),
    PrimaryKeyConstraint("consumer", "message_id", name="pk_outboxkit_inbox"),
)
# Retention deletes by age.
Index("ix_outboxkit_inbox_processed_at", inbox.c.processed_at)

inbox_dead_letter = Table(
    "outboxkit_inbox_dead_letter",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("consumer", String(255), nullable=False),
    Column("stream", String(512), nullable=False),
    # The broker's entry id ("1700000000000-0" on Redis, the row id on the SQL table).
    Column("entry_id", String(64), nullable=False),
    # NULL when the entry could not be decoded.
    Column("message_id", String(255), nullable=True),
    Column("topic", String(249), nullable=True),
    Column("type", String(255), nullable=True),
    Column("key", Text(), nullable=True),
    # The raw entry as a JSON object of strings; bytes that are not UTF-8 are
    # kept as backslash escapes and the reason says so.
    Column("fields", Text(), nullable=False),
    Column("error", Text(), nullable=False),
    Column("deliveries", Integer(), nullable=False),
    Column("dead_lettered_at", DateTime(timezone=True), nullable=False),
    Column("retried_at", DateTime(timezone=True), nullable=True),
    # Dead-lettering is idempotent: a consumer killed between recording the
    # dead letter and acknowledging the entry records it once.
    UniqueConstraint("consumer", "stream", "entry_id", name="uq_outboxkit_inbox_dead_letter_entry"),
    sqlite_autoincrement=True,
)
