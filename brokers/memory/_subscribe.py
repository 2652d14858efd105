"""An in-memory subscriber for unit tests: Redis Streams consumer-group semantics in a dict.

:class:`MemoryStreams` is the store (append with :meth:`MemoryStreams.add`);
:class:`MemorySubscriber` is the subscribe half over it. Single event loop,
no persistence; kept honest by the same tests as the real subscribers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .._subscriber import Delivery, GroupStatus, RedeliveryHorizon

__all__ = ["MemoryStreams", "MemorySubscriber"]


@dataclass
class _Pending:
    consumer: str
    delivered_at: float
    deliveries: int


@dataclass
class _Group:
    last: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)


@dataclass
class MemoryStreams:
    """Streams, groups, pending lists and leases held in memory.

    .. versionadded:: 0.1
    """

    entries: dict[str, dict[int, Mapping[bytes | str, bytes | str]]] = field(default_factory=dict)
    groups: dict[tuple[str, str], _Group] = field(default_factory=dict)
    leases: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    added: dict[int, float] = field(default_factory=dict)
    marks: set[tuple[str, str]] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add(self, stream: str, fields: Mapping[bytes | str, bytes | str]) -> str:
        """Append an entry (like ``XADD``); return its id."""
        entry_id = next(self._ids)
        self.entries.setdefault(stream, {})[entry_id] = dict(fields)
        self.added[entry_id] = time.time()
        return str(entry_id)

    def pending(self, stream: str, group: str) -> dict[str, int]:
        """Pending entry ids of the group and their delivery counts (like ``XPENDING``)."""
        found = self.groups.get((stream, group))
        return {} if found is None else {str(k): v.deliveries for k, v in found.pending.items()}


class MemorySubscriber:
    """The subscribe half over :class:`MemoryStreams`.

    .. versionadded:: 0.1
    """

    def __init__(self, streams: MemoryStreams, *, poll_interval: float = 0.005) -> None:
        self.streams = streams
        self._poll = poll_interval

    @property
    def max_block(self) -> dt.timedelta:
        """Any block up to a minute."""
        return dt.timedelta(minutes=1)

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the group at entry 0 unless it exists."""
        self.streams.groups.setdefault((stream, group), _Group())

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: dt.timedelta
    ) -> list[Delivery]:
        """Deliver new entries, polling until ``block`` passes."""
        deadline = time.monotonic() + block.total_seconds()
        while True:
            state = self.streams.groups.setdefault((stream, group), _Group())
            ids = sorted(i for i in self.streams.entries.get(stream, {}) if i > state.last)[:count]
            if ids or time.monotonic() >= deadline:
                break
            await asyncio.sleep(self._poll)
        now = time.monotonic()
        for i in ids:
            state.pending[i] = _Pending(consumer, now, 1)
        if ids:
            state.last = ids[-1]
        entries = self.streams.entries.get(stream, {})
        return [Delivery(stream=stream, entry_id=str(i), fields=entries[i], deliveries=1) for i in ids]

    async def claim(
        self, stream: str, group: str, consumer: str, *, min_idle: dt.timedelta, count: int
    ) -> list[Delivery]:
        """Take over idle pending entries, counting a delivery each."""
        state = self.streams.groups.setdefault((stream, group), _Group())
        now = time.monotonic()
        entries = self.streams.entries.get(stream, {})
        result: list[Delivery] = []
        for i in sorted(state.pending):
            pending = state.pending[i]
            if len(result) >= count or now - pending.delivered_at < min_idle.total_seconds():
                continue
            if i not in entries:
                del state.pending[i]
                continue
            state.pending[i] = _Pending(consumer, now, pending.deliveries + 1)
            result.append(
                Delivery(stream=stream, entry_id=str(i), fields=entries[i], deliveries=pending.deliveries + 1)
            )
        return result

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """Drop entries from the pending list."""
        state = self.streams.groups.get((stream, group))
        for i in entry_ids:
            if state is not None:
                state.pending.pop(int(i), None)

    async def acquire_lease(self, group: str, name: str, owner: str, *, ttl: dt.timedelta) -> bool:
        """Take the lease if free, expired or ours."""
        now = time.monotonic()
        held = self.streams.leases.get((group, name))
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self.streams.leases[(group, name)] = (owner, now + ttl.total_seconds())
        return True

    async def release_lease(self, group: str, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it."""
        if self.streams.leases.get((group, name), ("", 0.0))[0] == owner:
            del self.streams.leases[(group, name)]

    async def heartbeat(self, group: str, member: str, *, ttl: dt.timedelta) -> int:
        """Members are leases named ``member:<name>``."""
        await self.acquire_lease(group, f"member:{member}", member, ttl=ttl)
        now = time.monotonic()
        return sum(
            1
            for (g, n), (_, exp) in self.streams.leases.items()
            if g == group and n.startswith("member:") and exp > now
        )

    async def group_status(self, stream: str, group: str) -> GroupStatus | None:
        """Pending and entries behind the group."""
        state = self.streams.groups.get((stream, group))
        if state is None:
            return None
        behind = sum(1 for i in self.streams.entries.get(stream, {}) if i > state.last)
        consumers = len({p.consumer for p in state.pending.values()})
        return GroupStatus(
            stream=stream, group=group, pending=len(state.pending), behind=behind, consumers=consumers
        )

    async def list_groups(self, prefix: str = "") -> list[GroupStatus]:
        """Every group on streams starting with ``prefix``."""
        result = []
        for stream, group in sorted(self.streams.groups):
            status = await self.group_status(stream, group) if stream.startswith(prefix) else None
            if status is not None:
                result.append(status)
        return result

    async def list_streams(self, prefix: str = "") -> dict[str, int]:
        """Streams starting with ``prefix`` that hold entries."""
        return {
            name: len(ids)
            for name, ids in sorted(self.streams.entries.items())
            if ids and name.startswith(prefix)
        }

    async def oldest_entry_time(self, stream: str) -> dt.datetime | None:
        """When the first entry still in ``stream`` was added."""
        ids = sorted(self.streams.entries.get(stream, {}))
        return dt.datetime.fromtimestamp(self.streams.added[ids[0]], tz=dt.UTC) if ids else None

    async def redelivery_horizon(self, stream: str, group: str) -> RedeliveryHorizon:
        """Entries and pending entries of ``stream`` and their ages (from when they were added)."""
        now = time.time()
        entries = self.streams.entries.get(stream, {})
        state = self.streams.groups.get((stream, group), _Group())
        pending = [i for i in state.pending if i in entries]

        def age(ids: Sequence[int]) -> dt.timedelta | None:
            return dt.timedelta(seconds=now - self.streams.added[min(ids)]) if ids else None

        return RedeliveryHorizon(
            stream=stream,
            group=group,
            entries=len(entries),
            oldest_entry_age=age(list(entries)),
            pending=len(pending),
            oldest_pending_age=age(pending),
        )

    async def mark_once(self, scope: str, marker: str) -> bool:
        """True the first time ``marker`` is recorded for ``scope``."""
        if (scope, marker) in self.streams.marks:
            return False
        self.streams.marks.add((scope, marker))
        return True

    async def aclose(self) -> None:
        """Nothing to release."""
