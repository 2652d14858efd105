"""Table definitions of the saga orchestrator (revision ``0005_saga``).

``outboxkit_saga`` holds one row per saga instance. ``version`` is the
optimistic-concurrency token: every transition runs ``UPDATE ... WHERE
version = :expected`` and a transition that loses the race changes nothing.
During compensation ``step`` is the step being compensated.

``outboxkit_saga_step_log`` is the append-only history shown by ``outboxkit
saga show``: commands sent, replies received, timeouts, retries,
compensations, with timestamps and errors.

``outboxkit_saga_timer`` holds the saga's pending timers, unique per (saga,
name). A timer is a delayed outbox message (its ``message_id``) to the
orchestrator's timer topic; the transition that makes it moot deletes the row
and the message if still unpublished, and a timer message without its row is
a no-op.

``outboxkit_saga_participant`` lives in each participant's database: the
decision :func:`saga.participate` took for each (saga, step).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
)

from outbox.tables import NAMING_CONVENTION, JSONText

__all__ = ["metadata", "saga_instance", "saga_participant", "saga_step_log", "saga_timer"]

metadata = MetaData(naming_convention=NAMING_CONVENTION)

_ID = BigInteger().with_variant(Integer, "sqlite")

saga_instance = Table(
    "outboxkit_saga",
    metadata,
    Column("id", Uuid(), nullable=False),
    Column("type", String(128), nullable=False),
    # running, compensating, completed, compensated (saga.SagaState).
    Column("state", String(32), nullable=False),
    Column("step", Integer(), nullable=False),
    Column("attempt", Integer(), nullable=False),
    Column("data", JSONText(), nullable=False),
    Column("version", Integer(), nullable=False),
    Column("correlation_id", String(255), nullable=False),
    # Why the saga is compensating (failure reason, timeout), NULL otherwise.
    Column("error", Text(), nullable=True),
    # When the pending timer fires (step timeout or retry), NULL when none is.
    Column("deadline_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("id", name="pk_outboxkit_saga"),
)
# `outboxkit status` counts sagas by type and state.
Index("ix_outboxkit_saga_type_state", saga_instance.c.type, saga_instance.c.state)

saga_step_log = Table(
    "outboxkit_saga_step_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column(
        "saga_id",
        Uuid(),
        ForeignKey("outboxkit_saga.id", name="fk_outboxkit_saga_step_log_saga_id", ondelete="CASCADE"),
        nullable=False,
    ),
    # NULL for rows about the whole saga (started, completed, ...).
    Column("step", Integer(), nullable=True),
    Column("step_name", String(128), nullable=True),
    Column("attempt", Integer(), nullable=True),
    # saga.StepLogKind.
    Column("kind", String(32), nullable=False),
    # The message sent or received, if any.
    Column("message_id", Uuid(), nullable=True),
    Column("detail", Text(), nullable=True),
    Column("error", Text(), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)
# One saga's log, in order.
Index("ix_outboxkit_saga_step_log_saga_id_id", saga_step_log.c.saga_id, saga_step_log.c.id)

saga_timer = Table(
    "outboxkit_saga_timer",
    metadata,
    Column(
        "saga_id",
        Uuid(),
        ForeignKey("outboxkit_saga.id", name="fk_outboxkit_saga_timer_saga_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("name", String(64), nullable=False),
    # The delayed outbox message that fires the timer.
    Column("message_id", Uuid(), nullable=False),
    Column("step", Integer(), nullable=False),
    Column("attempt", Integer(), nullable=False),
    Column("fires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("saga_id", "name", name="pk_outboxkit_saga_timer"),
)

saga_participant = Table(
    "outboxkit_saga_participant",
    metadata,
    # Written by saga.participate() in the *participant's* database: the
    # decision on each saga step, repeated for duplicate and resent commands,
    # so a participant is idempotent per saga step by construction. The row is
    # also the lock that serialises an action and its compensation.
    Column("saga_id", Uuid(), nullable=False),
    Column("step", Integer(), nullable=False),
    # NULL until decided; then "done" or "refused".
    Column("action", String(16), nullable=True),
    # The reply data of a done action; the reason of a refused one.
    Column("data", JSONText(), nullable=True),
    Column("reason", Text(), nullable=True),
    # Set by the compensation (also when the action never came: a late action is then refused).
    Column("compensated", Boolean(), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("saga_id", "step", name="pk_outboxkit_saga_participant"),
)
