"""The subscribe half of a broker: consumer groups over streams, as a Protocol.

Semantics are those of Redis Streams consumer groups, which the SQL-table
broker mirrors: entries are appended to a stream; a group remembers the last
entry it delivered; a delivered entry stays *pending* for its consumer until
acknowledged; a pending entry left idle can be claimed by another consumer,
which increments its delivery count. Partition *leases* let one consumer
process at a time read a stream, which is what keeps per-key order with
several consumer processes in one group.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Delivery", "GroupStatus", "RedeliveryHorizon", "Subscriber"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One entry delivered to a consumer, not decoded yet (decoding is per entry).

    Attributes:
        stream: the stream it was read from.
        entry_id: the broker's id of the entry, as text; ids order a stream.
        fields: the raw wire fields (``bytes`` from Redis, ``str`` from SQL).
        deliveries: how many times it was delivered, this one included (1 = first).

    .. versionadded:: 0.1
    """

    stream: str
    entry_id: str
    fields: Mapping[bytes | str, bytes | str]
    deliveries: int


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """A consumer group on one stream, for ``outboxkit status`` and the lag metric.

    Attributes:
        stream: the stream.
        group: the consumer group.
        pending: entries delivered and not acknowledged yet.
        behind: entries not delivered to the group yet (``None`` if unknown).
        consumers: consumers the broker knows in the group.

    .. versionadded:: 0.1
    """

    stream: str
    group: str
    pending: int
    behind: int | None
    consumers: int

    @property
    def lag(self) -> int | None:
        """``pending + behind``: what the group still has to finish."""
        return None if self.behind is None else self.pending + self.behind


@dataclass(frozen=True, slots=True)
class RedeliveryHorizon:
    """How far back the broker can still deliver a group an entry again, as the broker reports it.

    Every entry still in the stream is read again when the group is recreated
    (a Redis restarted without persistence); a pending entry is delivered again
    when it is claimed. An inbox window shorter than :attr:`age` lets such an
    entry be processed twice.

    Attributes:
        stream: the stream.
        group: the consumer group.
        entries: entries still in the stream.
        oldest_entry_age: age of the oldest of them (``None``: the stream is empty).
        pending: entries delivered to the group and not acknowledged.
        oldest_pending_age: age of the oldest pending entry (``None``: nothing pending).
        removed: entries ever deleted from the stream by trimming (``None``: unknown).

    .. versionadded:: 0.1
    """

    stream: str
    group: str
    entries: int
    oldest_entry_age: dt.timedelta | None
    pending: int
    oldest_pending_age: dt.timedelta | None
    removed: int | None = None

    @property
    def age(self) -> dt.timedelta:
        """The oldest entry the broker could still deliver again."""
        ages = [a for a in (self.oldest_entry_age, self.oldest_pending_age) if a is not None]
        return max(ages, default=dt.timedelta(0))


@runtime_checkable
class Subscriber(Protocol):
    """Consumer-group reads, acknowledgements, reclaiming and leases on one broker.

    Every method may raise :class:`~outbox.errors.BrokerError` when the broker
    is unreachable; callers retry with backoff.

    .. versionadded:: 0.1
    """

    @property
    def max_block(self) -> dt.timedelta:
        """The longest ``block`` :meth:`read` accepts (below the client's socket timeout)."""
        ...

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` reading from its first entry, unless it exists."""
        ...

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: dt.timedelta
    ) -> list[Delivery]:
        """Deliver up to ``count`` new entries, waiting up to ``block`` for the first.

        A group that vanished (Redis restarted without persistence) is
        recreated from the start of the stream; the inbox absorbs the repeats.
        """
        ...

    async def claim(
        self, stream: str, group: str, consumer: str, *, min_idle: dt.timedelta, count: int
    ) -> list[Delivery]:
        """Take over up to ``count`` entries pending for at least ``min_idle``, oldest first.

        Like ``XAUTOCLAIM``: each claimed entry's delivery count goes up by one.
        Entries deleted from the stream while pending are dropped from the group.
        """
        ...

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """Acknowledge entries: they leave the pending list for good."""
        ...

    async def acquire_lease(self, group: str, name: str, owner: str, *, ttl: dt.timedelta) -> bool:
        """Take or renew the lease ``name`` of ``group`` for ``owner``; False if another owner holds it.

        ``group`` is the consumer's *scope*, ``<stream prefix><group>`` (what
        :class:`inbox.ConsumerRunner` passes, here and to :meth:`heartbeat`):
        brokers start their lease and member keys with it, so those keys carry
        the stream prefix like every other key of the toolkit.
        """
        ...

    async def release_lease(self, group: str, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it."""
        ...

    async def heartbeat(self, group: str, member: str, *, ttl: dt.timedelta) -> int:
        """Mark ``member`` alive for ``ttl``; return how many members of ``group`` are alive."""
        ...

    async def group_status(self, stream: str, group: str) -> GroupStatus | None:
        """Pending and lag of ``group`` on ``stream``, or None if there is no such group."""
        ...

    async def list_groups(self, prefix: str = "") -> list[GroupStatus]:
        """Every group on every stream whose name starts with ``prefix``."""
        ...

    async def list_streams(self, prefix: str = "") -> dict[str, int]:
        """Every stream whose name starts with ``prefix`` and holds entries, with its entry count.

        .. versionadded:: 0.2
        """
        ...

    async def oldest_entry_time(self, stream: str) -> dt.datetime | None:
        """When the oldest entry still in ``stream`` was added, or None if it is empty."""
        ...

    async def redelivery_horizon(self, stream: str, group: str) -> RedeliveryHorizon:
        """What ``stream`` still holds for ``group``: entries, pending entries, their ages."""
        ...

    async def mark_once(self, scope: str, marker: str) -> bool:
        """Record ``marker`` for ``scope`` (``<prefix><group>``) in the broker; True only the first time."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
