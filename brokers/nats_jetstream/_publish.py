"""The publish half of the NATS JetStream broker.

One batch, in the relay's thread, is one coroutine on the publisher's private
loop (:mod:`._loop`):

1. read (or create) the incarnation key of the KV bucket ``outboxkit``, a
   random token: a cluster that lost its JetStream store no longer has it.
   When it differs from the token the relay last saw, nothing is written and
   the new token is returned, so the relay first re-publishes its replay window;
2. check every fence (one KV key per partition lease, holding its newest epoch)
   and refuse the whole batch with FencedError, writing nothing, when one is
   newer; otherwise advance it by compare-and-set on the key's revision;
3. publish the entries of each stream as JetStream atomic batches (stored all
   together or not at all, one round trip), all streams concurrently: a batch
   that failed stored nothing, so nothing of a stream can overtake a failed
   entry and a retry never lands after its successors. JetStream refuses a
   whole atomic batch holding an id it already stored; the rest of that stream
   then goes one entry at a time, each waiting for its ``PubAck``. Each entry
   carries its message id as ``Nats-Msg-Id``: JetStream drops a repeat within
   the stream's duplicate window, which is what makes the fence exact enough
   (docs/brokers.md): a stale relay that passed the fence check before a new
   one took over re-sends rows the new one sends too, and only the first copy
   of each is stored, in row order.

.. versionadded:: 0.2
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import defaultdict
from typing import TYPE_CHECKING

import nats.errors
import nats.js.errors

from outbox.errors import BrokerAuthError, BrokerError, ConfigError, FencedError

from .._publisher import EntryOutcome, EntryStatus, Fence, OutgoingEntry, PublishResult
from ._config import parse_nats_url
from ._connection import NatsConnection
from ._kv import Conflict, KvStore
from ._loop import LoopThread
from ._names import fence_key, incarnation_key, subject_of
from ._wire import to_message

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nats.js.client import JetStreamContext

__all__ = ["NatsJetStreamPublisher"]

_CAS_ATTEMPTS = 20
# JetStream API errors that are the cluster's state, not the entry's: back off, retry the batch.
_TRANSIENT_CODES = frozenset({10008, 10023, 10074, 10077, 503})
# JetStream's limit of messages in one atomic batch (nats-server 2.12+).
_ATOMIC_MAX = 1000
# "atomic publish is disabled": a stream created without allow_atomic takes entries one by one.
_ATOMIC_DISABLED = 10174


class NatsJetStreamPublisher:
    """Publish batches to NATS JetStream (``nats://h1,h2,h3``, ``tls://...``).

    Args:
        url: see :mod:`brokers.nats_jetstream` for the URL forms and options.
        key_prefix: prefix of the toolkit's own KV keys (incarnation, fences),
            normally the stream prefix.
        max_len: ``max_msgs`` of every stream created, or ``None`` (keep everything).

    .. versionadded:: 0.2
    """

    def __init__(self, url: str, *, key_prefix: str = "", max_len: int | None = None) -> None:
        if max_len is not None and max_len <= 0:
            msg = f"stream max length must be positive, got {max_len}"
            raise ConfigError(msg)
        self._config = parse_nats_url(url)
        self._connection = NatsConnection(self._config, max_len=max_len)
        self._kv = KvStore(self._connection)
        self._not_atomic: set[str] = set()
        self._prefix = key_prefix
        self._loop = LoopThread("outboxkit-nats-publish")

    @property
    def description(self) -> str:
        """The URL without secrets."""
        return self._config.description

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        """Check the incarnation and fences, then append the batch (see the module docstring)."""
        # Bounded: every entry of a stream waits for its PubAck, each bounded by the timeout.
        per_stream = max(
            (sum(1 for e in entries if e.stream == s) for s in {e.stream for e in entries}), default=0
        )
        budget = self._config.timeout * (4 + len(fences) + per_stream)
        work = self._connection.guard("the publish", self._publish(entries, fences, incarnation))
        return self._loop.run(work, timeout=budget)

    def ping(self) -> None:
        """Connect and ask JetStream for the account's info: one round trip that writes nothing."""
        work = self._connection.guard("the broker check", self._ping())
        self._loop.run(work, timeout=self._config.timeout * 2)

    async def _ping(self) -> None:
        js = await self._connection.jetstream()
        await js.account_info()

    async def _publish(
        self, entries: Sequence[OutgoingEntry], fences: Sequence[Fence], incarnation: str | None
    ) -> PublishResult:
        try:
            token = await self._incarnation()
            if token != incarnation:
                return PublishResult(
                    outcomes=[EntryOutcome(EntryStatus.SKIPPED)] * len(entries), incarnation=token
                )
            await asyncio.gather(*(self._advance(fence) for fence in fences))
            by_stream: dict[str, list[int]] = defaultdict(list)
            for index, entry in enumerate(entries):
                by_stream[entry.stream].append(index)
            for stream in by_stream:
                await self._connection.ensure_stream(stream)
        except BrokerError:  # FencedError and BrokerAuthError too
            raise
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise self._connection.failure("the publish", exc) from None
        outcomes: list[EntryOutcome] = [EntryOutcome(EntryStatus.SKIPPED)] * len(entries)
        transient = await asyncio.gather(
            *(self._publish_stream(entries, indices, outcomes) for indices in by_stream.values())
        )
        errors = [t for t in transient if t is not None]
        if errors and all(o.outcome is EntryStatus.SKIPPED for o in outcomes):
            # Nothing went in: an outage (or missing permission), not a partial failure.
            raise BrokerError(errors[0])
        return PublishResult(
            outcomes=outcomes, incarnation=token, transient_error=errors[0] if errors else None
        )

    async def _incarnation(self) -> str:
        key = incarnation_key(self._prefix)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._kv.get(key)
            if current is not None and current.value:
                return current.value.decode()
            # A fresh candidate: a key recreated after data loss never matches the token the relay knows.
            candidate = uuid.uuid4().hex
            try:
                await self._kv.put(
                    key, candidate.encode(), revision=0 if current is None else current.revision
                )
            except Conflict:
                continue  # another relay created it first: read theirs
            return candidate
        msg = f"the incarnation key kept changing under {_CAS_ATTEMPTS} compare-and-set attempts"
        raise BrokerError(msg)

    async def _advance(self, fence: Fence) -> None:
        key = fence_key(self._prefix, fence.name)
        for _ in range(_CAS_ATTEMPTS):
            current = await self._kv.get(key)
            seen = int(current.value or b"0") if current is not None else None
            if seen is not None and seen > fence.epoch:
                msg = f"fence {fence.name} is at epoch {seen}: another relay took over"
                raise FencedError(msg)
            if seen == fence.epoch:
                return
            try:
                await self._kv.put(
                    key, str(fence.epoch).encode(), revision=0 if current is None else current.revision
                )
            except Conflict:
                continue  # another relay moved it between our read and write: read again
            return
        msg = f"fence {fence.name} kept changing under {_CAS_ATTEMPTS} compare-and-set attempts"
        raise BrokerError(msg)

    async def _publish_stream(
        self, entries: Sequence[OutgoingEntry], indices: list[int], outcomes: list[EntryOutcome]
    ) -> str | None:
        """Publish one stream's entries in order; return the transient error that stopped it, if any.

        First as atomic batches (one round trip, all or nothing); what they do
        not take — a re-sent message id, an entry JetStream refuses, a stream
        without atomic batches — one entry at a time.
        """
        stream = entries[indices[0]].stream
        if len(indices) > 1 and stream not in self._not_atomic:
            done = await self._publish_atomic(entries, indices, outcomes)
            if isinstance(done, str):
                return done
            indices = indices[done:]
        return await self._publish_each(entries, indices, outcomes)

    async def _publish_atomic(
        self, entries: Sequence[OutgoingEntry], indices: list[int], outcomes: list[EntryOutcome]
    ) -> int | str:
        """Publish ``indices`` as atomic batches, in order; return how many went in, or a transient error."""
        stream = entries[indices[0]].stream
        try:
            messages = [to_message(entries[i].fields) for i in indices]
        except ValueError:
            return 0  # an entry that cannot be a NATS message: the one-by-one path rejects it alone
        nc = await self._connection.connect()
        subject = subject_of(stream)
        done = 0
        while done < len(indices):
            chunk = messages[done : done + _ATOMIC_MAX]
            batch_id = uuid.uuid4().hex
            try:
                for number, (payload, headers) in enumerate(chunk[:-1], start=1):
                    batch = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
                    await nc.publish(subject, payload, headers=headers | batch)
                payload, headers = chunk[-1]
                commit = {
                    "Nats-Batch-Id": batch_id,
                    "Nats-Batch-Sequence": str(len(chunk)),
                    "Nats-Batch-Commit": "1",
                }
                reply = await nc.request(
                    subject, payload, headers=headers | commit, timeout=self._config.timeout
                )
            except nats.errors.NoRespondersError:
                self._connection.forget_stream(stream)
                return f"no JetStream stream answered for {stream}"
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                failure = self._connection.failure("the publish", exc)
                if isinstance(failure, BrokerAuthError):
                    raise failure from None
                return str(failure)
            answer = json.loads(reply.data or b"{}")
            if "error" in answer:
                return self._refused_batch(stream, answer["error"], done)
            last = int(answer["seq"])
            for offset, index in enumerate(indices[done : done + len(chunk)]):
                outcomes[index] = EntryOutcome(
                    EntryStatus.PUBLISHED, entry_id=str(last - len(chunk) + 1 + offset)
                )
            done += len(chunk)
        return done

    def _refused_batch(self, stream: str, error: dict[str, object], done: int) -> int | str:
        """What a refused atomic batch means: a transient error, or go on one by one after ``done``."""
        code = error.get("err_code")
        if code in _TRANSIENT_CODES:
            return f"JetStream error {code}: {error.get('description')}"
        if code == _ATOMIC_DISABLED:
            self._not_atomic.add(stream)
        return done  # a re-sent message id or an entry JetStream refuses: the rest one by one

    async def _publish_each(
        self, entries: Sequence[OutgoingEntry], indices: list[int], outcomes: list[EntryOutcome]
    ) -> str | None:
        js = await self._connection.jetstream()
        failed_keys: set[str] = set()
        for index in indices:
            entry = entries[index]
            if entry.order_key is not None and entry.order_key in failed_keys:
                continue  # stays SKIPPED: an earlier entry of its key was rejected
            try:
                payload, headers = to_message(entry.fields)
            except ValueError as exc:
                outcomes[index] = EntryOutcome(EntryStatus.REJECTED, error=str(exc))
                if entry.order_key is not None:
                    failed_keys.add(entry.order_key)
                continue
            outcome = await self._publish_one(js, entry, payload, headers)
            if isinstance(outcome, str):
                return outcome  # the rest of this stream stays SKIPPED: nothing may overtake it
            outcomes[index] = outcome
            if outcome.outcome is EntryStatus.REJECTED and entry.order_key is not None:
                failed_keys.add(entry.order_key)
        return None

    async def _publish_one(
        self, js: JetStreamContext, entry: OutgoingEntry, payload: bytes, headers: dict[str, str]
    ) -> EntryOutcome | str:
        """The entry's outcome once JetStream acknowledged it, or the transient error stopping its stream."""
        try:
            ack = await js.publish(
                subject_of(entry.stream), payload, timeout=self._config.timeout, headers=headers
            )
        except nats.js.errors.APIError as exc:
            error = f"JetStream error {exc.err_code}: {exc.description}"
            if exc.err_code in _TRANSIENT_CODES or (exc.code or 0) >= 500:  # noqa: PLR2004
                return error
            return EntryOutcome(EntryStatus.REJECTED, error=error)
        except nats.errors.NoRespondersError:
            # No stream leader answers (an election in progress) or the stream vanished.
            self._connection.forget_stream(entry.stream)
            return f"no JetStream stream answered for {entry.stream}"
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            failure = self._connection.failure("the publish", exc)
            if isinstance(failure, BrokerAuthError):
                raise failure from None
            return str(failure)
        return EntryOutcome(EntryStatus.PUBLISHED, entry_id=str(ack.seq))

    def close(self) -> None:
        """Close the connection and stop the private loop."""
        try:
            with contextlib.suppress(BrokerError):
                self._loop.run(self._connection.close(), timeout=self._config.timeout * 2)
        finally:
            self._loop.stop()
