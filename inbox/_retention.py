"""Retention: delete old inbox records in bounded batches.

The trade-off: a duplicate delivered after its record was deleted is processed
again. Keep the window longer than any redelivery can come (see
:attr:`~inbox.ConsumerConfig.redelivery_horizon`) and than the broker keeps
entries, since a consumer group recreated after a Redis restart re-reads every
entry still in the stream.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import Engine, and_, delete, select, tuple_

from outbox import ConfigError

from .tables import inbox

__all__ = ["purge_inbox"]


def purge_inbox(
    engine: Engine,
    *,
    older_than: dt.timedelta,
    consumer: str | None = None,
    batch_size: int = 1000,
    pause: dt.timedelta = dt.timedelta(0),
) -> int:
    """Delete inbox records processed more than ``older_than`` ago; return how many.

    Each batch of at most ``batch_size`` rows is its own short transaction, so
    consumers recording new messages are never blocked for long.

    .. versionadded:: 0.1
    """
    if older_than <= dt.timedelta(0) or batch_size < 1:
        msg = "older_than must be positive and batch_size at least 1"
        raise ConfigError(msg)
    cutoff = dt.datetime.now(dt.UTC) - older_than
    condition = inbox.c.processed_at < cutoff
    if consumer is not None:
        condition = and_(condition, inbox.c.consumer == consumer)
    oldest = select(inbox.c.consumer, inbox.c.message_id).where(condition).limit(batch_size)
    total = 0
    while True:
        with engine.begin() as conn:
            keys = conn.execute(oldest).all()
            if not keys:
                return total
            stmt = delete(inbox).where(
                tuple_(inbox.c.consumer, inbox.c.message_id).in_([tuple(k) for k in keys]), condition
            )
            total += conn.execute(stmt).rowcount
        if len(keys) < batch_size:
            return total
        time.sleep(pause.total_seconds())
