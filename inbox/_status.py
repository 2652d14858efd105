"""Consumer-group status for ``outboxkit status``: pending and lag per stream and group."""

from __future__ import annotations

import asyncio

from brokers import GroupStatus, Subscriber, connect_subscriber

__all__ = ["consumer_group_status", "consumer_group_status_async"]


async def consumer_group_status_async(
    subscriber: Subscriber, *, prefix: str = "", group: str | None = None
) -> list[GroupStatus]:
    """Every consumer group on streams starting with ``prefix`` (only ``group``, if given).

    .. versionadded:: 0.1
    """
    statuses = await subscriber.list_groups(prefix)
    return [s for s in statuses if group is None or s.group == group]


def consumer_group_status(
    broker_url: str, *, prefix: str = "", group: str | None = None, schema: str | None = None
) -> list[GroupStatus]:
    """Sync form of :func:`consumer_group_status_async` that connects to ``broker_url``.

    Each row has ``stream``, ``group``, ``pending``, ``behind`` (entries not
    delivered yet) and ``lag`` (``pending + behind``). ``schema``: that of the
    SQL-table broker's tables (PostgreSQL).

    .. versionadded:: 0.1
    """

    async def run() -> list[GroupStatus]:
        subscriber = connect_subscriber(broker_url, schema=schema)
        try:
            return await consumer_group_status_async(subscriber, prefix=prefix, group=group)
        finally:
            await subscriber.aclose()

    return asyncio.run(run())
