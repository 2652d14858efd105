"""The subscribe half of the Kafka broker: consumer groups behind the Subscriber port.

How the port's Redis-shaped calls map onto Kafka (docs/consumers.md):

=========================  ==========================================================
port                       Kafka
=========================  ==========================================================
``ensure_group``           the stream's topic is created if missing (the layout's
                           partition count) or checked; the group subscribes to it
``read`` / ``claim``       from this member's buffers / pending list (:mod:`._group`)
``ack``                    commit, synchronously, the lowest offset not acknowledged
``acquire_lease``          true only while the group assigned the partition to this
                           process (and no other owner in it holds the lease)
``heartbeat``              live owners in this process: the coordinator, not the
                           runner, spreads partitions over processes
``group_status``           pending (this process), ``behind`` = end offset - next
                           offset to deliver, or - committed offset for other processes
``list_streams``           topics under the prefix, one stream per non-empty partition
``redelivery_horizon``     records between the low and high watermarks; ``removed``
                           is the low watermark (records deleted by retention)
``mark_once``              in this process only (Kafka has no key-value store)
=========================  ==========================================================

Blocking librdkafka calls run in worker threads (``asyncio.to_thread``); the
poll loop has its own thread per group.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from outbox.errors import BrokerAuthError, BrokerError, ConfigError

# Relative: the broker ports move with this package to brokers/ (#10) by a plain rename.
from .._subscriber import Delivery, GroupStatus, PositionLookup, RedeliveryHorizon
from ._config import KafkaConfig, parse_kafka_url
from ._errors import ErrorLog, is_auth, reason
from ._group import GroupMember, Pending
from ._reach import bounded_metadata
from ._topics import KafkaTarget, stream_name, target_of
from ._wire import fields_from_record

__all__ = ["KafkaSubscriber"]

T = TypeVar("T")
MAX_BLOCK = dt.timedelta(seconds=30)
_TIMEOUT = 10.0
_FETCH_GRACE_S = 2.0  # a partition just assigned: its first fetch is on its way
_FENCE_MARK = "__outboxkit"


class KafkaSubscriber:
    """Consumer groups on Kafka (``kafka://``, ``kafka+ssl://``).

    .. versionadded:: 0.2
    """

    def __init__(self, url: str | KafkaConfig, *, timeout: float = _TIMEOUT) -> None:
        self.config = url if isinstance(url, KafkaConfig) else parse_kafka_url(url)
        self._settings = self.config.client_settings()
        self._timeout = timeout
        self._errors = ErrorLog()
        self._admin: AdminClient | None = None
        self._reader: Consumer | None = None
        self._members: dict[str, GroupMember] = {}
        self._wanted: dict[str, dict[str, int]] = {}  # group -> topic -> partitions the layout reads
        self._partitions: dict[str, int] = {}  # topic -> partition count on the broker
        self._positions: PositionLookup | None = None
        self._leases: dict[tuple[str, str], tuple[str, float]] = {}
        self._alive: dict[str, dict[str, float]] = {}
        self._marks: set[tuple[str, str]] = set()

    @property
    def max_block(self) -> dt.timedelta:
        """Reads wait on this process's buffers, not on a socket: any block up to 30 s."""
        return MAX_BLOCK

    def track_positions(self, lookup: PositionLookup) -> None:
        """Start assigned partitions at the offsets ``lookup`` returns (the inbox's database), if any."""
        self._positions = lookup

    # -- the error boundary -----------------------------------------------------------

    async def _call(self, what: str, action: Callable[..., T], *args: object) -> T:
        try:
            return await asyncio.to_thread(action, *args)
        except KafkaException as exc:
            raise self._error(what, exc.args[0]) from None
        except TimeoutError as exc:
            raise BrokerError(f"Kafka at {self.config.description} {exc}") from None

    def _error(self, what: str, error: KafkaError) -> BrokerError:
        if self._admin is not None:
            self._admin.poll(0)  # error callbacks (a refused login) are served by poll() only
        seen = self._errors.take()
        for candidate in (error, seen):
            if candidate is not None and is_auth(candidate):
                where = f"Kafka at {self.config.description}"
                return BrokerAuthError(f"{where} refused {what}: {reason(candidate)}:"
                                       " check the user, password, TLS and ACLs")  # fmt: skip
        transport = error.code() == KafkaError._TRANSPORT  # noqa: SLF001
        detail = reason(seen) if seen is not None and transport else reason(error)
        return BrokerError(f"Kafka at {self.config.description} unavailable during {what}: {detail}")

    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient({**self._settings, "error_cb": self._errors})  # type: ignore[dict-item]
        return self._admin

    def _reader_client(self) -> Consumer:
        if self._reader is None:
            self._reader = Consumer({**self._settings, "group.id": "outboxkit-status-reader",
                                     "enable.auto.commit": False, "error_cb": self._errors})  # fmt: skip
        return self._reader

    # -- groups -------------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        """Note the stream; its topic is created or checked, and subscribed, on the group's first read."""
        target = target_of(stream)
        wanted = self._wanted.setdefault(group, {})
        count = 1 if stream == target.topic else target.partition + 1
        wanted[target.topic] = max(wanted.get(target.topic, 1), count)

    async def _member(self, group: str, topic: str | None = None) -> GroupMember:
        wanted = self._wanted.setdefault(group, {})
        if topic is not None and topic not in wanted:
            wanted[topic] = 1
        member = self._members.get(group)
        if member is None:
            member = GroupMember(self._settings, group, self._errors, stream_of=self._stream_of,
                                 positions=self._positions)  # fmt: skip
            self._members[group] = member
        missing = [t for t in wanted if t not in member.topics]
        if missing:
            await self._call("creating topics", self._prepare_topics, {t: wanted[t] for t in missing})
            await self._call("joining the group", member.subscribe, missing)
        return member

    def _prepare_topics(self, wanted: Mapping[str, int]) -> None:
        admin = self._admin_client()
        metadata = bounded_metadata(admin, self._errors, self._timeout)
        missing = [t for t in wanted if t not in metadata.topics or metadata.topics[t].error is not None]
        if missing:
            new = [NewTopic(t, num_partitions=wanted[t], replication_factor=-1) for t in missing]
            for topic, future in admin.create_topics(new, operation_timeout=self._timeout).items():
                try:
                    future.result(timeout=self._timeout)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
                self._partitions[topic] = wanted[topic]
        for topic, count in wanted.items():
            if topic in missing:
                continue
            found = len(metadata.topics[topic].partitions)
            self._partitions[topic] = found
            if found != count:
                msg = (
                    f"Kafka topic {topic!r} has {found} partition(s) but the consumer's layout reads {count}:"
                    f" give the topic {count} partition(s) in --topic-partitions (relay and consumers alike)"
                )
                raise ConfigError(msg)

    def _stream_of(self, topic: str, partition: int) -> str:
        return stream_name(topic, partition, self._partitions.get(topic, 1))

    # -- reading --------------------------------------------------------------------------

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: dt.timedelta
    ) -> list[Delivery]:
        """Up to ``count`` records of ``stream`` not delivered to the group yet."""
        target = target_of(stream)
        member = await self._member(group, target.topic)
        key = (target.topic, target.partition)
        got = await asyncio.to_thread(member.take, key, count, consumer, block.total_seconds())
        if not got and member.owns(key) and await self._behind(member, target):
            got = await asyncio.to_thread(member.take, key, count, consumer, _FETCH_GRACE_S)
        return [_delivery(stream, p) for p in got]

    async def _behind(self, member: GroupMember, target: KafkaTarget) -> bool:
        status = member.status((target.topic, target.partition))
        _, high = await self._watermarks(target)
        return status is not None and (status[1] is None or status[1] < high)

    async def claim(
        self, stream: str, group: str, consumer: str, *, min_idle: dt.timedelta, count: int
    ) -> list[Delivery]:
        """Records this process delivered and did not acknowledge within ``min_idle``, oldest first."""
        target = target_of(stream)
        member = self._members.get(group)
        if member is None:
            return []
        got = member.claim((target.topic, target.partition), consumer, min_idle.total_seconds(), count)
        return [_delivery(stream, p) for p in got]

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """Forget the records and commit the lowest offset still pending (after the database commit)."""
        target = target_of(stream)
        member = self._members.get(group)
        if member is None:
            return
        key = (target.topic, target.partition)
        offset = member.ack(key, [int(e) for e in entry_ids])
        if offset is None or not member.owns(key):
            return  # revoked: the next owner starts from the database's or the committed offset
        try:
            await self._call("offset commit", member.commit, key, offset)
        except BrokerAuthError:
            raise
        except BrokerError:
            # A rebalance under way refuses the commit; the positions in the
            # database (or the inbox) make the repeat harmless.
            if member.owns(key):
                raise

    # -- leases and members: Kafka's coordinator assigns, this process arbitrates its tasks ---

    async def acquire_lease(self, group: str, name: str, owner: str, *, ttl: dt.timedelta) -> bool:
        """True while no other owner here holds ``name`` and the group assigned its partition to us."""
        now = time.monotonic()
        held = self._leases.get((group, name))
        if held is not None and held[0] != owner and held[1] > now:
            return False
        target = target_of(name)
        reader = next((g for g, topics in self._wanted.items() if target.topic in topics), None)
        # Join first: a lease granted before the coordinator's assignment would be lost a moment later.
        member = None if reader is None else await self._member(reader, target.topic)
        if member is not None and not member.owns((target.topic, target.partition)):
            return False
        self._leases[(group, name)] = (owner, now + ttl.total_seconds())
        return True

    async def release_lease(self, group: str, name: str, owner: str) -> None:
        """Release the lease if ``owner`` holds it (the partition stays assigned to this process)."""
        held = self._leases.get((group, name))
        if held is not None and held[0] == owner:
            del self._leases[(group, name)]

    async def heartbeat(self, group: str, member: str, *, ttl: dt.timedelta) -> int:
        """Count the live owners in this process (the coordinator spreads partitions over processes).

        Also joins the groups of the streams given to :meth:`ensure_group`: the
        runner heartbeats before it takes leases, and a lease's time must not
        start before the (seconds long) first join.
        """
        for wanted in list(self._wanted):
            await self._member(wanted)
        now = time.monotonic()
        alive = self._alive.setdefault(group, {})
        alive[member] = now + ttl.total_seconds()
        for name in [m for m, until in alive.items() if until <= now]:
            del alive[name]
        return len(alive)

    async def mark_once(self, scope: str, marker: str) -> bool:
        """Record ``marker`` for ``scope`` in this process: True only the first time."""
        if (scope, marker) in self._marks:
            return False
        self._marks.add((scope, marker))
        return True

    # -- status ---------------------------------------------------------------------------

    async def _watermarks(self, target: KafkaTarget) -> tuple[int, int]:
        part = TopicPartition(target.topic, target.partition)
        try:
            low, high = await self._call("ListOffsets", self._watermarks_now, part)
        except BrokerError as exc:
            if "UNKNOWN" in str(exc):
                return 0, 0
            raise
        return int(low), int(high)

    def _watermarks_now(self, part: TopicPartition) -> tuple[int, int]:
        low, high = self._reader_client().get_watermark_offsets(part, timeout=self._timeout, cached=False)
        return int(low), int(high)

    async def group_status(self, stream: str, group: str) -> GroupStatus | None:
        """Pending (this process) and behind of ``group`` on ``stream``; None if the group never read it."""
        target = target_of(stream)
        _, high = await self._watermarks(target)
        member = self._members.get(group)
        local = None if member is None else member.status((target.topic, target.partition))
        if local is not None:
            pending, next_offset, _ = local
            if next_offset is None:
                next_offset = await self._committed(group, target)
            behind = None if next_offset is None else max(high - next_offset, 0)
            return GroupStatus(stream=stream, group=group, pending=pending, behind=behind, consumers=1)
        committed = await self._committed(group, target)
        if committed is None:
            return None
        return GroupStatus(
            stream=stream, group=group, pending=0, behind=max(high - committed, 0), consumers=0
        )

    async def _committed(self, group: str, target: KafkaTarget) -> int | None:
        def committed() -> int | None:
            reader = Consumer({**self._settings, "group.id": group, "enable.auto.commit": False})
            try:
                parts = reader.committed(
                    [TopicPartition(target.topic, target.partition)], timeout=self._timeout
                )
            finally:
                reader.close()
            offset = parts[0].offset if parts else -1
            return offset if offset >= 0 else None

        result = await self._call("OffsetFetch", committed)
        return result if isinstance(result, int) else None

    async def list_groups(self, prefix: str = "") -> list[GroupStatus]:
        """Every group of this process or known to the brokers, on the streams under ``prefix``."""
        streams = await self.list_streams(prefix)
        groups = set(self._members) | set(await self._call("ListGroups", self._group_ids))
        result = []
        for stream in sorted(streams):
            for group in sorted(groups):
                status = await self.group_status(stream, group)
                if status is not None:
                    result.append(status)
        return result

    def _group_ids(self) -> list[str]:
        listed = (
            self._admin_client().list_consumer_groups(request_timeout=self._timeout).result(self._timeout)
        )
        return [g.group_id for g in listed.valid if not g.group_id.startswith("outboxkit-")]

    async def list_streams(self, prefix: str = "") -> dict[str, int]:
        """Every non-empty partition of the topics under ``prefix``, as a stream, with its record count."""
        metadata = await self._call(
            "Metadata", bounded_metadata, self._admin_client(), self._errors, self._timeout
        )
        topics = {n: len(t.partitions) for n, t in metadata.topics.items()
                  if n.startswith(prefix) and _FENCE_MARK not in n}  # fmt: skip
        result: dict[str, int] = {}
        for topic, count in sorted(topics.items()):
            self._partitions.setdefault(topic, count)
            for partition in range(count):
                low, high = await self._watermarks(KafkaTarget(topic, partition))
                if high > low:
                    result[stream_name(topic, partition, count)] = high - low
        return result

    async def oldest_entry_time(self, stream: str) -> dt.datetime | None:
        """The timestamp of the first record still in ``stream``'s partition."""
        target = target_of(stream)
        low, high = await self._watermarks(target)
        if high <= low:
            return None
        millis = await self._call("Fetch", self._timestamp_at, target, low)
        return None if not isinstance(millis, int) else dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)

    def _timestamp_at(self, target: KafkaTarget, offset: int) -> int | None:
        reader = self._reader_client()
        reader.assign([TopicPartition(target.topic, target.partition, offset)])
        try:
            deadline = time.monotonic() + self._timeout
            while time.monotonic() < deadline:
                message = reader.poll(0.2)
                if message is not None and message.error() is None:
                    return message.timestamp()[1]
            return None
        finally:
            reader.unassign()

    async def redelivery_horizon(self, stream: str, group: str) -> RedeliveryHorizon:
        """Records between the watermarks, this process's pending records, and their ages."""
        target = target_of(stream)
        low, high = await self._watermarks(target)
        oldest = await self.oldest_entry_time(stream) if high > low else None
        member = self._members.get(group)
        local = None if member is None else member.status((target.topic, target.partition))
        pending, pending_age = (0, None) if local is None else (local[0], local[2])
        return RedeliveryHorizon(
            stream=stream,
            group=group,
            entries=high - low,
            oldest_entry_age=None
            if oldest is None
            else max(dt.datetime.now(dt.UTC) - oldest, dt.timedelta(0)),
            pending=pending,
            oldest_pending_age=None if pending_age is None else dt.timedelta(seconds=pending_age),
            removed=low,
        )

    async def aclose(self) -> None:
        """Leave the groups and close the clients."""
        members, self._members = list(self._members.values()), {}
        for member in members:
            await asyncio.to_thread(member.close)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.close)
            self._reader = None


def _delivery(stream: str, pending: Pending) -> Delivery:
    message = pending.message
    fields = fields_from_record(message.value(), message.headers())  # type: ignore[arg-type]
    return Delivery(
        stream=stream, entry_id=str(message.offset()), fields=fields, deliveries=pending.deliveries
    )
