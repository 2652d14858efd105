"""The publish half of the Kafka broker: an idempotent (optionally transactional) librdkafka producer.

Per batch:

1. read the fence topic to its end (:mod:`._fences`): the broker's
   incarnation token and the newest epoch of every fence. A caller with
   another token gets every entry ``SKIPPED`` and the token; a stale fence
   raises :class:`~outbox.errors.FencedError` and writes nothing;
2. produce the entries in order, each to its stream's topic (:mod:`._topics`)
   with the outbox key as the record key and the CloudEvents attributes as
   headers (:mod:`._wire`), plus a record for each fence this batch advances;
3. wait for every delivery report (``flush``) before returning, so the relay
   marks rows only once the brokers have them: ``acks=all`` and the idempotent
   producer (no duplicates or reordering from the client's own retries).

With ``?transactional=true`` steps 2-3 are one Kafka transaction: the batch
and its fence records commit together, and ``read_committed`` consumers never
see part of a batch. The transactional id is random per publisher: relay
partitions are fenced by epochs (a batch spans several relay partitions, and
a transaction belongs to one transactional id), see docs/brokers.md.

The partition of a record: the outbox layout's (``partitioner=outbox``) or
librdkafka's partitioner over the key (``consistent_random``, CRC-32, which
for keyed messages is the outbox's own ``key_hash``; ``murmur2_random`` for
Java clients). Either way one key stays in one partition, so its order holds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from outbox.errors import BrokerAuthError, BrokerError, ConfigError, FencedError

# Relative: the broker ports move with this package to brokers/ (#10) by a plain rename.
from .._publisher import EntryOutcome, EntryStatus, Fence, OutgoingEntry, PublishResult
from ._config import KafkaConfig, Partitioner, parse_kafka_url
from ._errors import ErrorLog, is_auth, is_entry_error, reason
from ._fences import FenceLog, fence_record, incarnation_record, new_token
from ._reach import bounded_metadata
from ._topics import check_prefix, fence_topic, target_of
from ._wire import record_from_fields

__all__ = ["KafkaPublisher"]

DEFAULT_TIMEOUT = 10.0
_PUBLISHED = EntryOutcome(EntryStatus.PUBLISHED)
_SKIPPED = EntryOutcome(EntryStatus.SKIPPED)


@dataclass(slots=True)
class _Report:
    """The delivery report of one produced entry."""

    error: KafkaError | None = None
    offset: int | None = None
    done: bool = False


class KafkaPublisher:
    """Publish batches to Kafka (``kafka://``, ``kafka+ssl://``).

    Args:
        url: the ``kafka://`` URL (:func:`~brokers.kafka.parse_kafka_url`).
        key_prefix: the stream prefix; it also names the fence topic.
        timeout: seconds to wait for the brokers (reports, offsets) before a batch fails.

    .. versionadded:: 0.2
    """

    def __init__(
        self, url: str | KafkaConfig, *, key_prefix: str = "", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.config = url if isinstance(url, KafkaConfig) else parse_kafka_url(url)
        check_prefix(key_prefix)
        if timeout <= 0:
            msg = f"the Kafka timeout must be positive, got {timeout}"
            raise ConfigError(msg)
        self._timeout = timeout
        self._errors = ErrorLog()
        self._fences = FenceLog(self.config.client_settings(), fence_topic(key_prefix), self._errors,
                                timeout=timeout)  # fmt: skip
        self._fence_topic = fence_topic(key_prefix)
        self._explicit_partition = self.config.partitioner is Partitioner.OUTBOX
        self._producer: Producer | None = None
        self._in_transaction = False

    @property
    def description(self) -> str:
        """The URL without its password."""
        return self.config.description

    def _open(self) -> Producer:
        if self._producer is not None:
            return self._producer
        partitioner = "consistent_random" if self._explicit_partition else self.config.partitioner.value
        settings: dict[str, str | int | bool | object] = {
            **self.config.client_settings(),
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": partitioner,
            "linger.ms": 2,
            "message.timeout.ms": int(self._timeout * 1000),
            "error_cb": self._errors,
        }
        if self.config.transactional:
            settings["transactional.id"] = f"{self._fence_topic}-relay-{uuid.uuid4().hex}"
            settings["transaction.timeout.ms"] = max(int(self._timeout * 3000), 10000)
        producer = Producer(settings)
        if self.config.transactional:
            try:
                producer.init_transactions(self._timeout)
            except KafkaException as exc:
                raise self._broker_error("starting the transactional producer", exc.args[0]) from None
        self._producer = producer
        return producer

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        """Check the incarnation and fences, then produce the batch and wait for its reports."""
        state = self._fences.refresh()
        token = state.incarnation
        created = token is None
        if created:
            token = new_token()
        if incarnation != token:  # checked first, as the Redis script does
            if token is not None and created:
                self._send([], [incarnation_record(token)])
                token = self._fences.refresh().incarnation or token
            return PublishResult(outcomes=[_SKIPPED] * len(entries), incarnation=token)
        for fence in fences:
            newest = state.epochs.get(fence.name)
            if newest is not None and newest > fence.epoch:
                msg = f"fence {fence.name} is at epoch {newest}: another relay took over"
                raise FencedError(msg)
        advanced = [f for f in fences if f.epoch > state.epochs.get(f.name, -1)]
        extra = [fence_record(f.name, f.epoch) for f in advanced]
        result = self._send(entries, extra)
        for fence in advanced:  # ours now; the next refresh reads them back
            state.epochs[fence.name] = max(fence.epoch, state.epochs.get(fence.name, -1))
        return PublishResult(
            outcomes=result.outcomes, incarnation=token, transient_error=result.transient_error
        )

    def _send(self, entries: Sequence[OutgoingEntry], extra: Sequence[tuple[bytes, bytes]]) -> PublishResult:
        producer = self._open()
        transactional = self.config.transactional
        if transactional:
            self._begin(producer)
        reports: list[_Report | EntryOutcome] = []
        failed_keys: set[str] = set()
        for entry in entries:
            if entry.order_key is not None and entry.order_key in failed_keys:
                reports.append(_SKIPPED)
                continue
            outcome = self._produce(producer, entry)
            if isinstance(outcome, EntryOutcome) and entry.order_key is not None:
                failed_keys.add(entry.order_key)
            reports.append(outcome)
        for key, value in extra:
            producer.produce(self._fence_topic, key=key, value=value, partition=0)
        self._finish(producer, transactional=transactional)
        return self._outcomes(reports)

    def _produce(self, producer: Producer, entry: OutgoingEntry) -> _Report | EntryOutcome:
        try:
            target = target_of(entry.stream)
        except ConfigError as exc:
            return EntryOutcome(EntryStatus.REJECTED, error=str(exc))
        key, value, headers = record_from_fields(entry.fields)
        report = _Report()

        def delivered(error: KafkaError | None, message: Message) -> None:
            report.error, report.offset, report.done = error, message.offset(), True

        try:
            if self._explicit_partition:
                producer.produce(target.topic, value=value, key=key, headers=headers,
                                 partition=target.partition, on_delivery=delivered)  # fmt: skip
            else:
                producer.produce(target.topic, value=value, key=key, headers=headers, on_delivery=delivered)
        except BufferError:
            producer.flush(self._timeout)  # the local queue is full: drain it, then once more
            return self._produce(producer, entry)
        except KafkaException as exc:  # refused before sending (size, unknown partition)
            return EntryOutcome(EntryStatus.REJECTED, error=reason(exc.args[0]))
        return report

    def _begin(self, producer: Producer) -> None:
        try:
            producer.begin_transaction()
        except KafkaException as exc:
            self._reset()
            raise self._broker_error("beginning a transaction", exc.args[0]) from None

    def _finish(self, producer: Producer, *, transactional: bool) -> None:
        if transactional:
            try:
                producer.commit_transaction(self._timeout)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                self._abort(producer, error)
                raise self._broker_error("committing the batch's transaction", error) from None
            producer.poll(0)  # the commit flushed: serve the delivery reports it left queued
            return
        deadline = time.monotonic() + self._timeout
        while producer.flush(max(deadline - time.monotonic(), 0.0)) and time.monotonic() < deadline:
            pass
        if len(producer):
            # Not confirmed in time: drop what was not sent yet, so it is not
            # delivered behind the retry of this batch; the relay backs off.
            producer.purge(in_queue=True, in_flight=False, blocking=False)
            producer.poll(0)
            # A broker that lost its data no longer knows the idempotent producer's id and
            # never acknowledges it: the next batch starts with a fresh producer.
            self._reset()
            raise self._broker_error(f"waiting {self._timeout:g}s for delivery reports", self._errors.take())

    def _abort(self, producer: Producer, error: KafkaError) -> None:
        if error.fatal() or not error.txn_requires_abort():
            self._reset()
            return
        try:
            producer.abort_transaction(self._timeout)
        except KafkaException:
            self._reset()

    def _reset(self) -> None:
        """Forget a producer in a fatal state (a fenced transactional id): the next batch opens a new one."""
        self._producer = None

    def _outcomes(self, reports: Sequence[_Report | EntryOutcome]) -> PublishResult:
        outcomes: list[EntryOutcome] = []
        transient: str | None = None
        for report in reports:
            if isinstance(report, EntryOutcome):
                outcomes.append(report)
            elif report.error is None and report.done:
                outcomes.append(EntryOutcome(EntryStatus.PUBLISHED, entry_id=str(report.offset)))
            elif report.error is not None and is_auth(report.error):
                raise self._broker_error("a record", report.error)
            elif report.error is not None and is_entry_error(report.error):
                outcomes.append(EntryOutcome(EntryStatus.REJECTED, error=reason(report.error)))
            else:
                transient = reason(report.error) if report.error is not None else "no delivery report"
                outcomes.append(EntryOutcome(EntryStatus.SKIPPED, error=transient))
        if all(o.outcome is EntryStatus.PUBLISHED for o in outcomes):
            return PublishResult(outcomes=[_PUBLISHED] * len(outcomes))
        return PublishResult(outcomes=outcomes, transient_error=transient)

    def ping(self) -> None:
        """A metadata request: reaches the brokers and passes authentication, writes nothing.

        (``publish([])`` would create the fence topic and write an incarnation record.)
        """
        producer = self._open()
        try:
            bounded_metadata(producer, self._errors, self._timeout)
        except KafkaException as exc:
            raise self._broker_error("checking the broker", exc.args[0] if exc.args else None) from None

    def _broker_error(self, what: str, error: KafkaError | None) -> BrokerError:
        if self._producer is not None:
            self._producer.poll(0)  # error callbacks (a refused login) are served by poll() only
        seen = self._errors.take()
        for candidate in (error, seen):
            if candidate is not None and is_auth(candidate):
                return BrokerAuthError(
                    f"Kafka at {self.description} refused the relay while {what}: {reason(candidate)}:"
                    " check the user, password, TLS and ACLs"
                )
        if error is not None and error.code() in {KafkaError._FENCED, KafkaError.PRODUCER_FENCED}:  # noqa: SLF001
            self._reset()
            return FencedError(f"the transactional producer was fenced while {what}: {reason(error)}")
        detail = reason(error) if error is not None else (reason(seen) if seen is not None else "timed out")
        return BrokerError(f"Kafka at {self.description} unavailable while {what}: {detail}")

    def close(self) -> None:
        """Deliver what is queued (bounded by the timeout) and close the clients."""
        if self._producer is not None:
            self._producer.flush(self._timeout)
            self._producer = None
        self._fences.close()
