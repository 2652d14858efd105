"""Relay fences and the incarnation token on Kafka: a compacted topic, read to its end before each batch.

Kafka has no key-value store, so the newest epoch of every relay fence and
the broker's incarnation token are records of one compacted topic,
``<prefix>__outboxkit_fences`` (one partition), keyed ``fence:<name>`` and
``incarnation``. Before each batch the publisher reads it to its high
watermark (one ``ListOffsets`` round trip when nothing changed) and refuses a
batch whose fence is older than the newest epoch recorded; an advanced fence
is written with the batch (in the same transaction when transactional).

Unlike the Redis script, the check and the write are not one atomic step: a
former owner that passed the check a few milliseconds before the new owner
wrote its epoch can still append one batch. Those entries repeat rows the new
owner publishes too (the relay only claims unmarked rows), so consumers see
duplicates, which the inbox skips, and never an older row after a newer one
of its key for the first time. docs/brokers.md says so.

A broker that lost this topic (Tansu restarted, the topic deleted) has no
incarnation record: the next publisher writes a new token, so relays learn
that the broker lost data and replay their window, as on Redis.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from outbox.errors import BrokerAuthError, BrokerError

from ._errors import ErrorLog, is_auth, reason

__all__ = ["FenceLog", "FenceState", "fence_record", "incarnation_record"]

_FENCE = "fence:"
_INCARNATION = "incarnation"
# How librdkafka says the topic does not exist (the partition is unknown in the metadata).
_MISSING = frozenset(
    {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}  # noqa: SLF001
)


@dataclass(slots=True)
class FenceState:
    """What the fence topic holds: the newest epoch per fence name and the incarnation token."""

    epochs: dict[str, int] = field(default_factory=dict)
    incarnation: str | None = None


def fence_record(name: str, epoch: int) -> tuple[bytes, bytes]:
    """Key and value recording ``epoch`` as the newest of fence ``name``."""
    return f"{_FENCE}{name}".encode(), str(epoch).encode()


def incarnation_record(token: str) -> tuple[bytes, bytes]:
    """Key and value recording the broker's incarnation ``token``."""
    return _INCARNATION.encode(), token.encode()


def new_token() -> str:
    """A fresh incarnation token."""
    return uuid.uuid4().hex


class FenceLog:
    """Follows the fence topic: the state as of its end, read incrementally."""

    def __init__(
        self, settings: Mapping[str, object], topic: str, errors: ErrorLog, *, timeout: float
    ) -> None:
        self.topic = topic
        self._settings = dict(settings)
        self._errors = errors
        self._timeout = timeout
        self._consumer: Consumer | None = None
        self._position = 0
        self.state = FenceState()

    def refresh(self) -> FenceState:
        """Read the fence topic up to its end (creating it if missing) and return the state.

        Raises:
            BrokerAuthError: credentials or ACLs refused.
            BrokerError: the broker did not answer within the timeout.
        """
        consumer = self._open()
        partition = TopicPartition(self.topic, 0)
        for created in (False, True):
            try:
                _, high = consumer.get_watermark_offsets(partition, timeout=self._timeout, cached=False)
                break
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.code() not in _MISSING or created:
                    raise self._broker_error("reading the fence topic", error) from None
                self._create()
                consumer.list_topics(self.topic, timeout=self._timeout)  # learn the new topic's partition
        if high < self._position:  # the topic was recreated: everything it said is gone
            self.state, self._position = FenceState(), 0
            consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._read_to(consumer, high)
        return self.state

    def _read_to(self, consumer: Consumer, high: int) -> None:
        deadline = time.monotonic() + self._timeout
        while self._position < high:
            if time.monotonic() > deadline:
                msg = f"the fence topic {self.topic} was not read to its end within {self._timeout:g}s"
                raise BrokerError(msg)
            for message in consumer.consume(num_messages=500, timeout=0.2):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                        continue
                    raise self._broker_error("reading the fence topic", error)
                self._apply(message.key(), message.value())
                self._position = max(self._position, (message.offset() or 0) + 1)
            # Transaction markers take offsets but are never delivered: ask for the position.
            positions = consumer.position([TopicPartition(self.topic, 0)])
            if positions and positions[0].offset is not None and positions[0].offset >= 0:
                self._position = max(self._position, positions[0].offset)

    def _apply(self, key: bytes | str | None, value: bytes | str | None) -> None:
        if key is None or value is None:
            return
        name = key.decode(errors="replace") if isinstance(key, bytes) else key
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if name == _INCARNATION:
            self.state.incarnation = text
        elif name.startswith(_FENCE) and text.isdigit():
            fence = name[len(_FENCE) :]
            self.state.epochs[fence] = max(int(text), self.state.epochs.get(fence, 0))

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **self._settings,
                    # Never subscribes nor commits: the id only satisfies the client.
                    "group.id": "outboxkit-fence-reader",
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                    "isolation.level": "read_committed",
                    # An idle long-poll fetch holds the connection: the ListOffsets of the
                    # next batch waited behind it (500 ms a batch on Tansu).
                    "fetch.wait.max.ms": 5,
                    "error_cb": self._errors,
                }
            )
            self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        return self._consumer

    def _create(self) -> None:
        admin = AdminClient({**self._settings, "error_cb": self._errors})  # type: ignore[dict-item]
        topic = NewTopic(self.topic, num_partitions=1, replication_factor=-1,
                         config={"cleanup.policy": "compact"})  # fmt: skip
        future = admin.create_topics([topic], operation_timeout=self._timeout)[self.topic]
        try:
            future.result(timeout=self._timeout)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise self._broker_error(f"creating the fence topic {self.topic}", error) from None

    def _broker_error(self, what: str, error: KafkaError) -> BrokerError:
        if self._consumer is not None:
            # Error callbacks are served by poll() only; the record it may return is
            # dropped, so the reader starts over from the beginning next time.
            self._consumer.poll(0)
            self.close()
            self.state, self._position = FenceState(), 0
        seen = self._errors.take()
        for candidate in (error, seen):
            if candidate is not None and is_auth(candidate):
                return BrokerAuthError(
                    f"Kafka refused {what}: {reason(candidate)}: check the user, password, TLS and ACLs"
                )
        detail = reason(seen) if seen is not None and error.code() == KafkaError._TRANSPORT else reason(error)  # noqa: SLF001
        return BrokerError(f"Kafka unavailable while {what}: {detail}")

    def close(self) -> None:
        """Close the reader."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
