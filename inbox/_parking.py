"""Per-key parking behind a consumer dead letter (``on_dead_letter="park-key"``, issue #9).

While a consumer has a dead letter of key K not yet retried, later entries of K
are not handled: each is recorded in the dead-letter table as *parked* (error
:data:`PARKED_ERROR`) and acknowledged, so the broker may trim it safely. Once
the dead letter ahead of them is retried (``consumer-dead-letters retry``) or
purged, the runner hands the parked entries to their handler in entry order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import structlog
from sqlalchemy import Engine, select, update

from ._dead_letters import retry_dead_letter
from ._registry import Registry
from .tables import inbox_dead_letter

__all__ = ["PARKED_ERROR", "parked_keys", "release_parked"]

PARKED_ERROR = "parked: an earlier message of this key is a dead letter (on_dead_letter=park-key)"

log = structlog.get_logger("inbox")


def parked_keys(engine: Engine, consumer: str, keys: Iterable[str]) -> set[str]:
    """Those of ``keys`` with a dead letter (or parked entry) of ``consumer`` not yet retried."""
    wanted = sorted(set(keys))
    if not wanted:
        return set()
    d = inbox_dead_letter
    query = (
        select(d.c.key)
        .distinct()
        .where(d.c.consumer == consumer, d.c.retried_at.is_(None), d.c.key.in_(wanted))
    )
    with engine.connect() as conn:
        return {str(k) for k in conn.execute(query).scalars()}


def _next_releasable(engine: Engine, consumer: str) -> int | None:
    """The oldest parked entry with no dead letter ahead of it in its key."""
    d, ahead = inbox_dead_letter, inbox_dead_letter.alias("ahead")
    blocked = (
        select(ahead.c.id)
        .where(
            ahead.c.consumer == consumer,
            ahead.c.key == d.c.key,
            ahead.c.retried_at.is_(None),
            ahead.c.id < d.c.id,
            ahead.c.error != PARKED_ERROR,
        )
        .exists()
    )
    query = (
        select(d.c.id)
        .where(d.c.consumer == consumer, d.c.retried_at.is_(None), d.c.error == PARKED_ERROR, ~blocked)
        .order_by(d.c.id)
        .limit(1)
    )
    with engine.connect() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else int(found)


def release_parked(engine: Engine, registry: Registry, consumer: str) -> int:
    """Handle the parked entries whose key was released, in order; return how many were handled.

    A parked entry whose handler fails becomes a dead letter in its own right
    (its key stays parked).
    """
    done = 0
    while (entry := _next_releasable(engine, consumer)) is not None:
        try:
            retry_dead_letter(engine, registry, entry)
        except Exception as exc:  # noqa: BLE001 - a handler may raise anything
            error = f"{type(exc).__name__}: {str(exc).strip()}"[:4000]
            with engine.begin() as conn:
                d = inbox_dead_letter
                conn.execute(
                    update(d)
                    .where(d.c.id == entry)
                    .values(error=error, dead_lettered_at=dt.datetime.now(dt.UTC))
                )
            # The error text is the record; no traceback in the log.
            log.error("inbox.dead_lettered", consumer=consumer, dead_letter_id=entry, error=error)  # noqa: TRY400
            continue
        done += 1
        log.info("inbox.parked_released", consumer=consumer, dead_letter_id=entry)
    return done
