"""Refuse a partition layout that differs from the one the relay writes.

A consumer reads the streams of its own ``StreamLayout``. If the relay was
given other ``--topic-partitions``, the consumer creates empty streams, reads
nothing and reports lag 0 while the relay's entries sit unread (issue 9).
Before reading, the runner looks at what is on the broker: streams of a
registered topic that its layout does not name and that still hold entries
the group has not finished. Those figures make the start fail with a
:class:`~outbox.ConfigError`; where the broker cannot tell whether the entries
were read (Redis without lag), a warning with the figures is logged instead.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog

from brokers import StreamLayout, Subscriber
from outbox import BrokerAuthError, ConfigError

__all__ = ["check_layout"]


def _foreign(layout: StreamLayout, topic: str, found: dict[str, int]) -> dict[str, int]:
    """Streams of ``topic`` on the broker that ``layout`` does not read."""
    base = f"{layout.prefix}{topic}"
    ours = set(layout.streams_of(topic))
    return {
        name: entries
        for name, entries in found.items()
        if name not in ours
        and (name == base or (name.startswith(f"{base}:") and name[len(base) + 1 :].isdigit()))
    }


def _partitions_seen(layout: StreamLayout, topic: str, streams: Iterable[str]) -> int:
    """The partition count the foreign streams imply (at least; 1 for the unsuffixed stream)."""
    base = f"{layout.prefix}{topic}:"
    indexes = [int(name[len(base) :]) for name in streams if name.startswith(base)]
    return max(indexes) + 1 if indexes else 1


async def check_layout(
    subscriber: Subscriber,
    layout: StreamLayout,
    topics: Iterable[str],
    group: str,
    log: structlog.BoundLogger,
) -> None:
    """Raise ConfigError if entries of ``topics`` sit on streams ``layout`` does not read.

    Raises:
        ConfigError: the broker holds unread entries under another partition layout.
    """
    for topic in topics:
        # One listing per topic: XLEN (Redis) or the count (SQL) only for this topic's streams.
        try:
            listed = await subscriber.list_streams(f"{layout.prefix}{topic}")
        except BrokerAuthError as exc:  # an ACL without SCAN: the check is impossible, not the consumer
            log.warning(
                "inbox.partition_layout_unchecked",
                error=type(exc.__cause__).__name__,
                consequence="a consumer whose --topic-partitions differ from the relay's reads nothing",
            )
            return
        foreign = _foreign(layout, topic, listed)
        unread, unknown = 0, 0
        for stream, entries in foreign.items():
            status = await subscriber.group_status(stream, group)
            if status is None:
                unread += entries  # the group never read this stream
            elif status.lag is None:
                unknown += entries
            else:
                unread += status.lag
        if not unread and not unknown:
            continue
        figures = (
            f"topic {topic!r} is read with {layout.partitions_of(topic)} partition(s), but the broker"
            f" holds {len(foreign)} stream(s) of it for {_partitions_seen(layout, topic, foreign)}"
            " partition(s)"
        )
        if unread:
            msg = (
                f"{figures} with {unread} unread entries: give the consumer the relay's"
                " --topic-partitions/--default-partitions"
            )
            raise ConfigError(msg)
        log.warning(
            "inbox.partition_layout_mismatch",
            topic=topic,
            partitions=layout.partitions_of(topic),
            broker_partitions=_partitions_seen(layout, topic, foreign),
            foreign_streams=len(foreign),
            entries=unknown,
            consequence="entries on streams of another partition layout are never read by this consumer",
        )
