"""The subscribe half of the NATS JetStream broker: durable pull consumers, takeovers, KV leases.

How the Redis consumer-group semantics (:mod:`brokers._subscriber`) map:

- a group on a stream is a durable pull consumer (explicit acks, from the
  first entry, unlimited deliveries: dead letters are the runner's decision);
- :meth:`~NatsJetStreamSubscriber.read` pulls what is there at once (a
  ``no_wait`` request) and otherwise waits up to ``block`` for the first entry;
  entries come back with JetStream's delivery count;
- an entry left unacknowledged for ``ack_wait`` (a failed handler) is
  redelivered by JetStream itself, through ``read``, with its count raised, so
  :meth:`claim` with a positive ``min_idle`` has nothing to add;
- a *takeover* (``claim`` with ``min_idle=0``, what the runner does first on
  a partition it just leased) finds entries pending for another, dead or
  fenced-off process and resets the consumer to its first unacknowledged entry
  (``$JS.API.CONSUMER.RESET``): they are delivered again at once, in stream
  order, before anything newer, which keeps per-key order. The reset loses
  JetStream's delivery counts, so each reset of a group to the same first
  entry is counted in the KV bucket and added to the counts of the entries it
  returned: an entry that kills every consumer still reaches the poison limit;
- leases, members and marks are KV keys with compare-and-set; a lease is
  expired when its last renewal, stamped by the server, is older than its TTL
  by this host's clock (keep consumer hosts' clocks in sync, docs/brokers.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from outbox.errors import BrokerError

from .._subscriber import Delivery, GroupStatus, RedeliveryHorizon
from ._config import parse_nats_url
from ._connection import NatsConnection
from ._kv import Conflict, KvStore
from ._names import (
    SUBJECT_ROOT,
    consumer_name,
    lease_key,
    mark_key,
    members_key,
    reset_key,
    stream_name,
    toolkit_stream,
)
from ._wire import from_message

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from nats.aio.msg import Msg
    from nats.js.api import ConsumerInfo, StreamInfo

    from ._config import NatsConfig

__all__ = ["NatsJetStreamSubscriber"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

_MAX_BLOCK = dt.timedelta(seconds=30)
_MAX_ACK_PENDING = 20_000
_CAS_ATTEMPTS = 50
_ACK_ATTEMPTS = 3
_STATUS = "Status"


class NatsJetStreamSubscriber:
    """Consumer groups on NATS JetStream (``nats://h1,h2,h3``, ``tls://...``).

    .. versionadded:: 0.2
    """

    def __init__(self, config: NatsConfig) -> None:
        self._config = config
        self._connection = NatsConnection(config)
        self._kv = KvStore(self._connection)
        self._groups: set[tuple[str, str]] = set()
        # Entries delivered to this process and not acknowledged: the message (its ack subject) and when.
        self._inflight: dict[tuple[str, str], dict[str, tuple[Msg, float]]] = {}
        # After a takeover reset: entries up to this stream sequence get ``extra`` more deliveries.
        self._resets: dict[tuple[str, str], tuple[int, int]] = {}

    @classmethod
    def from_url(cls, url: str) -> NatsJetStreamSubscriber:
        """Parse ``url`` (nothing is sent until the first call)."""
        return cls(parse_nats_url(url))

    @property
    def max_block(self) -> dt.timedelta:
        """Pull requests expire on the server, so long blocks are fine; 30 s keeps shutdowns prompt."""
        return _MAX_BLOCK

    async def _call(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self._connection.guard(what, action())
        except BrokerError:
            raise
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise self._connection.failure(what, exc) from None

    # -- groups -------------------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create the stream and the group's durable consumer (from the first entry) unless they exist."""
        if (stream, group) in self._groups:
            return
        await self._call("the group creation", lambda: self._create_group(stream, group))
        self._groups.add((stream, group))

    async def _create_group(self, stream: str, group: str) -> None:
        name = await self._connection.ensure_stream(stream)
        js = await self._connection.jetstream()
        try:
            info = await js.consumer_info(name, consumer_name(group))
        except nats.js.errors.NotFoundError:
            info = await js.add_consumer(
                name,
                ConsumerConfig(
                    durable_name=consumer_name(group),
                    description=f"outboxkit group {group}",
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_wait=self._config.ack_wait,
                    max_deliver=-1,
                    max_ack_pending=_MAX_ACK_PENDING,
                ),
            )
        # A new replicated consumer answers pulls only once its Raft group has a leader.
        deadline = time.monotonic() + self._config.timeout
        while info.cluster is not None and not info.cluster.leader and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            info = await js.consumer_info(name, consumer_name(group))

    async def _recreate(self, stream: str, group: str) -> None:
        log.warning("inbox.group_recreated", stream=stream, group=group, start="first entry")
        self._groups.discard((stream, group))
        self._connection.forget_stream(stream)
        await self.ensure_group(stream, group)

    # -- reads ----------------------------------------------------------------------

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: dt.timedelta
    ) -> list[Delivery]:
        """Pull up to ``count`` entries; wait up to ``block`` for the first when none is there."""
        del consumer  # JetStream tracks the group's deliveries, not per-consumer names
        await self.ensure_group(stream, group)
        msgs = await self._pull(stream, group, count, expires=None)
        if not msgs and block > dt.timedelta(0):
            msgs = await self._pull(stream, group, 1, expires=block)
            if msgs and count > 1:
                msgs += await self._pull(stream, group, count - 1, expires=None)
        return [self._delivery(stream, group, m) for m in msgs]

    async def _pull(self, stream: str, group: str, batch: int, *, expires: dt.timedelta | None) -> list[Msg]:
        recreated = False
        # A consumer just created (or just failed over) can have a leader that does
        # not answer pulls yet: "no responders" is retried, bounded by the timeout.
        deadline = time.monotonic() + self._config.timeout
        while True:
            try:
                return await self._call("the read", lambda: self._pull_once(stream, group, batch, expires))
            except _NoConsumerError:
                if recreated:
                    break
                recreated = True
                await self._recreate(stream, group)
            except _NoLeaderError:
                if time.monotonic() >= deadline:
                    msg = f"NATS at {self._connection.description}: no consumer leader for {stream}"
                    raise BrokerError(msg) from None
                await asyncio.sleep(0.05)
        msg = f"NATS at {self._connection.description}: the consumer of {group} on {stream} does not answer"
        raise BrokerError(msg)

    async def _pull_once(
        self, stream: str, group: str, batch: int, expires: dt.timedelta | None
    ) -> list[Msg]:
        nc = await self._connection.connect()
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream_name(stream)}.{consumer_name(group)}"
        request: dict[str, Any] = {"batch": batch}
        if expires is None:
            request["no_wait"] = True
            wait = self._config.timeout
        else:
            request["expires"] = int(expires.total_seconds() * 1e9)
            wait = expires.total_seconds() + self._config.timeout
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        msgs: list[Msg] = []
        try:
            await nc.publish(subject, json.dumps(request).encode(), reply=inbox)
            deadline = time.monotonic() + wait
            while len(msgs) < batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    if msgs:
                        break
                    raise TimeoutError
                try:
                    msg = await sub.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    if msgs:
                        break
                    raise
                if not await self._take(stream, group, msg, msgs):
                    break
        finally:
            await sub.unsubscribe()
        return msgs

    async def _take(self, stream: str, group: str, msg: Msg, msgs: list[Msg]) -> bool:
        """Keep ``msg`` if it is an entry; False when it is the status ending the pull."""
        status = (msg.headers or {}).get(_STATUS)
        if status is None and msg.reply:
            msgs.append(msg)
            return True
        if status == "100":  # idle heartbeat
            return True
        if status == "503":  # no responders: the consumer is gone (or has no leader yet)
            if await self._consumer_missing(stream, group):
                raise _NoConsumerError
            if msgs:  # what came is kept; the pull just ends here
                return False
            raise _NoLeaderError
        return False  # 404 no messages, 408 request expired, 409 leadership change: end of this pull

    async def _consumer_missing(self, stream: str, group: str) -> bool:
        js = await self._connection.jetstream()
        try:
            await js.consumer_info(stream_name(stream), consumer_name(group))
        except nats.js.errors.NotFoundError:
            return True
        return False

    def _delivery(self, stream: str, group: str, msg: Msg) -> Delivery:
        meta = msg.metadata
        seq = meta.sequence.stream
        entry_id = str(seq)
        self._inflight.setdefault((stream, group), {})[entry_id] = (msg, time.monotonic())
        deliveries = meta.num_delivered
        upto, extra = self._resets.get((stream, group), (0, 0))
        if seq <= upto:
            deliveries += extra
        return Delivery(
            stream=stream,
            entry_id=entry_id,
            fields=from_message(msg.data, msg.headers),
            deliveries=deliveries,
        )

    async def claim(
        self, stream: str, group: str, consumer: str, *, min_idle: dt.timedelta, count: int
    ) -> list[Delivery]:
        """Take over entries pending for at least ``min_idle``, each with one more delivery counted.

        ``min_idle`` 0 is a takeover: the group is reset to its first
        unacknowledged entry and nothing is returned, the entries come again
        through :meth:`read`, first (module doc). Otherwise the entries this
        process holds unacknowledged that long are handed back (``NAK``) and
        pulled again, oldest first; those held by other processes come back
        by JetStream's own ``ack_wait`` redelivery.
        """
        del consumer
        await self.ensure_group(stream, group)
        if min_idle <= dt.timedelta(0):
            await self._call("the takeover", lambda: self._take_over(stream, group))
            return []
        held = self._inflight.get((stream, group), {})
        cutoff = time.monotonic() - min_idle.total_seconds()
        idle = sorted((int(i), m) for i, (m, since) in held.items() if since <= cutoff)[:count]
        if not idle:
            return []

        async def nak() -> None:
            # Each NAK is a request the consumer's leader answers once it has queued the entry
            # for redelivery: a plain publish + flush only reached our server, and the no-wait
            # pull below could overtake it and find nothing (the contract suite's claim flake).
            nc = await self._connection.connect()
            for seq, _ in idle:
                held.pop(str(seq), None)
            await asyncio.gather(
                *(nc.request(m.reply, b"-NAK", timeout=self._config.timeout) for _, m in idle)
            )

        await self._call("the claim", nak)
        msgs = await self._pull(stream, group, len(idle), expires=None)
        return [self._delivery(stream, group, m) for m in msgs]

    async def _take_over(self, stream: str, group: str) -> None:
        js = await self._connection.jetstream()
        name, durable = stream_name(stream), consumer_name(group)
        info = await js.consumer_info(name, durable)
        if not info.num_ack_pending:
            return
        floor = info.ack_floor.stream_seq if info.ack_floor else 0
        upto = info.delivered.stream_seq if info.delivered else 0
        resets = await self._count_reset(stream, group, floor or 0)
        nc = await self._connection.connect()
        reply = await nc.request(
            f"$JS.API.CONSUMER.RESET.{name}.{durable}",
            json.dumps({"seq": (floor or 0) + 1}).encode(),
            timeout=self._config.timeout,
        )
        answer = json.loads(reply.data or b"{}")
        if "error" in answer:
            error = answer["error"]
            msg = (
                f"NATS at {self._connection.description} refused to reset {group} on {stream}:"
                f" JetStream error {error.get('err_code')}: {error.get('description')}"
                " (nats-server 2.14 or later is needed)"
            )
            raise BrokerError(msg)
        self._inflight.pop((stream, group), None)
        self._resets[(stream, group)] = (upto or 0, resets)
        log.info(
            "nats.group_reset", stream=stream, group=group, first_entry=(floor or 0) + 1,
            pending=info.num_ack_pending, resets=resets,
        )  # fmt: skip

    async def _count_reset(self, stream: str, group: str, floor: int) -> int:
        key = reset_key(stream, group)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._kv.get(key)
            record = json.loads(current.value) if current is not None and current.value else {}
            count = record.get("count", 0) + 1 if record.get("floor") == floor else 1
            try:
                await self._kv.put(
                    key,
                    json.dumps({"floor": floor, "count": count}).encode(),
                    revision=0 if current is None else current.revision,
                )
            except Conflict:
                continue
            return count
        return 1

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """Acknowledge entries this process received, each confirmed by the server.

        A plain ``+ACK`` is fire-and-forget: sent while the consumer's leader
        changes it is lost, and the entry comes back after ``ack_wait`` (a
        duplicate the inbox skips, but late). So each ack is a request the
        server answers, and the unanswered ones are sent again, up to three
        times; entries still unconfirmed then stay pending (BrokerError).
        """
        held = self._inflight.get((stream, group), {})
        waiting = [held_msg[0] for held_msg in (held.pop(i, None) for i in entry_ids) if held_msg is not None]
        for attempt in range(_ACK_ATTEMPTS):
            if not waiting:
                return
            nc = await self._connection.connect()
            answers = await asyncio.gather(
                *(nc.request(m.reply, b"+ACK", timeout=self._config.timeout) for m in waiting),
                return_exceptions=True,
            )
            waiting = [
                m for m, answer in zip(waiting, answers, strict=True) if isinstance(answer, BaseException)
            ]
            if waiting and attempt + 1 < _ACK_ATTEMPTS:
                await asyncio.sleep(0.2 * (attempt + 1))
        if waiting:
            msg = f"NATS at {self._connection.description} did not confirm {len(waiting)} acknowledgements"
            raise BrokerError(msg)

    # -- leases, members, marks --------------------------------------------------------

    async def acquire_lease(self, group: str, name: str, owner: str, *, ttl: dt.timedelta) -> bool:
        """Take or renew the lease if it is free, ours, or not renewed for its TTL."""
        key = lease_key(group, name)

        async def acquire() -> bool:
            for _ in range(_CAS_ATTEMPTS):
                current = await self._kv.get(key)
                if current is not None and current.value:
                    record = json.loads(current.value)
                    age = dt.datetime.now(dt.UTC) - current.written
                    if record["owner"] != owner and age.total_seconds() < record["ttl"]:
                        return False
                value = json.dumps({"owner": owner, "ttl": ttl.total_seconds()}).encode()
                try:
                    await self._kv.put(key, value, revision=0 if current is None else current.revision)
                except Conflict:
                    continue
                return True
            return False

        return bool(await self._call("the lease", acquire))

    async def release_lease(self, group: str, name: str, owner: str) -> None:
        """Delete the lease key if ``owner`` holds it."""
        key = lease_key(group, name)

        async def release() -> None:
            current = await self._kv.get(key)
            if current is None or not current.value or json.loads(current.value)["owner"] != owner:
                return
            with contextlib.suppress(Conflict):  # renewed or taken meanwhile: not ours to delete any more
                await self._kv.delete(key, revision=current.revision)

        await self._call("the lease release", release)

    async def heartbeat(self, group: str, member: str, *, ttl: dt.timedelta) -> int:
        """Record ``member``'s expiry in one JSON key of the scope; count the members not expired."""
        key = members_key(group)

        async def beat() -> int:
            for _ in range(_CAS_ATTEMPTS):
                current = await self._kv.get(key)
                members: dict[str, float] = json.loads(current.value) if current and current.value else {}
                now = time.time()
                members = {m: until for m, until in members.items() if until > now}
                members[member] = now + ttl.total_seconds()
                try:
                    await self._kv.put(
                        key, json.dumps(members).encode(), revision=0 if current is None else current.revision
                    )
                except Conflict:
                    continue
                return len(members)
            msg = "the members key kept changing: too many consumers heartbeating at once"
            raise BrokerError(msg)

        return int(await self._call("the heartbeat", beat))

    async def mark_once(self, scope: str, marker: str) -> bool:
        """Create the mark key; True only if it did not exist."""
        key = mark_key(scope, marker)

        async def mark() -> bool:
            try:
                await self._kv.put(key, b"1", revision=0)
            except Conflict:
                return False
            return True

        return bool(await self._call("the mark", mark))

    # -- status -------------------------------------------------------------------------

    async def group_status(self, stream: str, group: str) -> GroupStatus | None:
        """From the consumer's info: acknowledgements pending, entries not delivered yet."""

        async def status() -> GroupStatus | None:
            js = await self._connection.jetstream()
            try:
                info = await js.consumer_info(stream_name(stream), consumer_name(group))
            except nats.js.errors.NotFoundError:
                return None
            return _status(stream, group, info)

        result: GroupStatus | None = await self._call("the group status", status)
        return result

    async def _toolkit_streams(self, prefix: str) -> list[tuple[str, Any]]:
        js = await self._connection.jetstream()
        found: list[tuple[str, Any]] = []
        offset = 0
        while True:
            page = await js.streams_info(offset=offset)
            for info in page:
                subjects = info.config.subjects or []
                if not any(s.startswith(f"{SUBJECT_ROOT}.") for s in subjects):
                    continue  # not one of ours (the KV bucket, the application's own streams)
                stream = toolkit_stream(info.config.name or "")
                if stream.startswith(prefix):
                    found.append((stream, info))
            if len(page) < 256:  # noqa: PLR2004 - the API's page size
                return sorted(found, key=lambda pair: pair[0])
            offset += len(page)

    async def list_groups(self, prefix: str = "") -> list[GroupStatus]:
        """Every group on every toolkit stream whose name starts with ``prefix``."""

        async def groups() -> list[GroupStatus]:
            js = await self._connection.jetstream()
            result: list[GroupStatus] = []
            for stream, info in await self._toolkit_streams(prefix):
                for consumer in await js.consumers_info(info.config.name):
                    group = toolkit_stream(consumer.name or "")
                    result.append(_status(stream, group, consumer))
            return result

        listed: list[GroupStatus] = await self._call("the group listing", groups)
        return listed

    async def list_streams(self, prefix: str = "") -> dict[str, int]:
        """Every toolkit stream under ``prefix`` holding entries, with its entry count."""

        async def streams() -> dict[str, int]:
            return {s: i.state.messages for s, i in await self._toolkit_streams(prefix) if i.state.messages}

        counted: dict[str, int] = await self._call("the stream listing", streams)
        return counted

    async def _stream_info(self, stream: str) -> StreamInfo | None:
        js = await self._connection.jetstream()
        try:
            return await js.stream_info(stream_name(stream))
        except nats.js.errors.NotFoundError:
            return None

    async def _time_of(self, stream: str, seq: int) -> dt.datetime | None:
        js = await self._connection.jetstream()
        try:
            raw = await js.get_msg(
                stream_name(stream), seq=seq, subject=f"{SUBJECT_ROOT}.{stream_name(stream)}", next=True
            )
        except nats.js.errors.NotFoundError:
            return None
        return raw.time

    async def oldest_entry_time(self, stream: str) -> dt.datetime | None:
        """When the first entry still in ``stream`` was stored."""

        async def oldest() -> dt.datetime | None:
            info = await self._stream_info(stream)
            if info is None or not info.state.messages:
                return None
            return await self._time_of(stream, info.state.first_seq)

        result: dt.datetime | None = await self._call("the stream info", oldest)
        return result

    async def redelivery_horizon(self, stream: str, group: str) -> RedeliveryHorizon:
        """Entries kept, pending acknowledgements and their ages, from the stream and consumer info."""

        async def horizon() -> RedeliveryHorizon:
            info = await self._stream_info(stream)
            if info is None:
                return RedeliveryHorizon(stream, group, 0, None, 0, None)
            state = info.state
            now = dt.datetime.now(dt.UTC)
            first = await self._time_of(stream, state.first_seq) if state.messages else None
            pending, oldest_pending = 0, None
            js = await self._connection.jetstream()
            try:
                consumer = await js.consumer_info(stream_name(stream), consumer_name(group))
            except nats.js.errors.NotFoundError:
                consumer = None
            if consumer is not None and consumer.num_ack_pending:
                pending = consumer.num_ack_pending
                floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
                oldest_pending = await self._time_of(stream, (floor or 0) + 1)
            removed = (state.first_seq - 1 if state.messages else state.last_seq) + (state.num_deleted or 0)
            return RedeliveryHorizon(
                stream=stream,
                group=group,
                entries=state.messages,
                oldest_entry_age=None if first is None else max(now - first, dt.timedelta(0)),
                pending=pending,
                oldest_pending_age=None
                if oldest_pending is None
                else max(now - oldest_pending, dt.timedelta(0)),
                removed=removed,
            )

        result: RedeliveryHorizon = await self._call("the stream info", horizon)
        return result

    async def delete_streams(self, prefix: str) -> int:
        """Delete every toolkit stream under ``prefix`` (the demo's clean-up); return how many.

        Not part of :class:`~brokers.Subscriber`: it destroys data.
        """

        async def delete() -> int:
            js = await self._connection.jetstream()
            found = await self._toolkit_streams(prefix)
            for _, info in found:
                await js.delete_stream(info.config.name)
            return len(found)

        deleted: int = await self._call("the stream deletion", delete)
        return deleted

    async def aclose(self) -> None:
        """Close the connection."""
        await self._connection.close()


class _NoConsumerError(Exception):
    """The group's durable consumer does not exist (deleted, or the cluster lost it)."""


class _NoLeaderError(Exception):
    """The group's consumer exists but no leader answered the pull (an election, or one just won)."""


def _status(stream: str, group: str, info: ConsumerInfo) -> GroupStatus:
    return GroupStatus(
        stream=stream,
        group=group,
        pending=int(info.num_ack_pending or 0),
        behind=None if info.num_pending is None else int(info.num_pending),
        consumers=1,
    )
