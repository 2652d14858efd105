"""One Kafka consumer-group member per group: a poll thread, per-partition buffers, a pending list.

Kafka's group coordinator decides which process reads a partition; the
consumer runner's per-stream tasks then read from this member's buffers
instead of the network. What Redis keeps on the server, this member keeps
for its own partitions, in memory:

* **pending**: records delivered and not acknowledged (Redis's PEL), with
  their delivery count and time, so :meth:`claim` can hand a record left by a
  task back again after ``min_idle``. The offset committed to Kafka is the
  lowest pending offset, so whatever was not acknowledged is read again by
  the next owner after a crash or a rebalance (with a delivery count of 1:
  Kafka does not keep counts);
* **assignment**: a partition revoked by a rebalance is dropped at once
  (buffer and pending list): the runner's next lease renewal for it fails,
  and the revocation waits (bounded) for a batch in hand to finish, so the
  next owner starts after it;
* **start positions**: on assignment the partitions start at the offsets the
  application's database recorded with the inbox rows (:class:`PositionStore`),
  when it has them, and at the group's committed offsets otherwise.

The poll thread keeps polling while tasks are slow (so the member never
exceeds ``max.poll.interval.ms``) and pauses a partition whose buffer is full
(memory stays bounded). It is also the only thread that calls the consumer:
other threads hand it commands (subscribe, commit, resume) and wait for the
result, because a synchronous commit from a second thread while the first
is inside ``consume`` was seen to never return.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

# Relative: the broker ports move with this package to brokers/ (#10) by a plain rename.
from .._subscriber import PositionLookup
from ._errors import ErrorLog, reason

__all__ = ["GroupMember", "Key", "Pending"]

log = structlog.get_logger(__name__)

SESSION_TIMEOUT_MS = 6000  # the brokers' default group.min.session.timeout.ms; Tansu needs it short
_BUFFER_LIMIT = 1000  # records buffered per partition before it is paused
_REVOKE_WAIT_S = 5.0  # how long a revocation waits for a batch in hand
_ASSIGN_WAIT_S = 30.0

Key = tuple[str, int]  # (topic, partition)


@dataclass(slots=True)
class Pending:
    """A record delivered and not acknowledged yet."""

    message: Message
    deliveries: int
    since: float  # time.monotonic() of the last delivery
    consumer: str


@dataclass(slots=True)
class _Partition:
    buffer: deque[Message] = field(default_factory=deque)
    pending: dict[int, Pending] = field(default_factory=dict)
    next_offset: int | None = None  # the offset after the last record delivered
    paused: bool = False
    busy: int = 0  # batches handed out and not acknowledged yet


class GroupMember:
    """This process's member of one consumer group, polled by its own thread."""

    def __init__(
        self,
        settings: Mapping[str, object],
        group: str,
        errors: ErrorLog,
        *,
        stream_of: Callable[[str, int], str],
        positions: PositionLookup | None,
    ) -> None:
        self.group = group
        self._stream_of = stream_of
        self._positions = positions
        self._errors = errors
        self._consumer = Consumer(
            {
                **settings,
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": SESSION_TIMEOUT_MS,
                "heartbeat.interval.ms": SESSION_TIMEOUT_MS // 3,
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                "error_cb": errors,
            }
        )
        self._lock = threading.Condition()
        self._topics: set[str] = set()
        self._partitions: dict[Key, _Partition] = {}
        self._generation = 0
        self._wanted = 0  # subscription changes requested
        self._closed = threading.Event()
        self._failure: KafkaError | None = None
        self._commands: queue.SimpleQueue[tuple[Callable[[], object], Future[object]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._poll, name=f"outboxkit-kafka-{group}", daemon=True)
        self._thread.start()

    # -- subscription ------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        """Add ``topics`` to the subscription and wait until the group has assigned them (to anyone)."""
        with self._lock:
            if set(topics) <= self._topics:
                return
            self._topics.update(topics)
            generation = self._generation
            subscription = sorted(self._topics)
        callbacks = {"on_assign": self._assigned, "on_revoke": self._revoked, "on_lost": self._revoked}
        self._run(lambda: self._consumer.subscribe(subscription, **callbacks))
        with self._lock:
            assigned = self._lock.wait_for(
                lambda: self._generation > generation or self._closed.is_set(), timeout=_ASSIGN_WAIT_S
            )
        if not assigned:
            failure = self._errors.take()
            detail = reason(failure) if failure is not None else "no assignment from the group coordinator"
            msg = f"group {self.group!r} did not assign {', '.join(topics)} within {_ASSIGN_WAIT_S:g}s"
            raise TimeoutError(f"{msg}: {detail}")

    @property
    def topics(self) -> frozenset[str]:
        """The topics subscribed."""
        with self._lock:
            return frozenset(self._topics)

    def owns(self, key: Key) -> bool:
        """Whether the group assigned partition ``key`` to this member."""
        with self._lock:
            return key in self._partitions

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition): self._stream_of(tp.topic, tp.partition) for tp in partitions}
        starts: Mapping[str, int] = {}
        if self._positions is not None and keys:
            try:
                starts = self._positions(self.group, list(keys.values()))
            except Exception as exc:  # noqa: BLE001 - the committed offsets are a safe fallback
                log.warning("inbox.positions_unavailable", group=self.group, error=type(exc).__name__)
        for tp in partitions:
            start = starts.get(keys[(tp.topic, tp.partition)])
            if start is not None:
                tp.offset = start
                log.info("inbox.partition_positioned", group=self.group,
                         stream=keys[(tp.topic, tp.partition)], offset=start, source="database")  # fmt: skip
        consumer.assign(partitions)
        with self._lock:
            for tp in partitions:
                self._partitions[(tp.topic, tp.partition)] = _Partition()
            self._generation += 1
            self._lock.notify_all()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        deadline = time.monotonic() + _REVOKE_WAIT_S
        with self._lock:
            # A batch in hand finishes (commits, acknowledges) before the next owner starts.
            self._lock.wait_for(
                lambda: (
                    self._closed.is_set() or not any(self._partitions.get(k, _Partition()).busy for k in keys)
                ),
                timeout=max(deadline - time.monotonic(), 0.0),
            )
            for key in keys:
                self._partitions.pop(key, None)
            self._generation += 1
            self._lock.notify_all()
        consumer.unassign()

    # -- the poll thread -----------------------------------------------------------------

    def _run(self, command: Callable[[], object], timeout: float = _ASSIGN_WAIT_S) -> object:
        """Run ``command`` on the poll thread and return its result (or raise its exception)."""
        future: Future[object] = Future()
        self._commands.put((command, future))
        return future.result(timeout=timeout)

    def _serve_commands(self) -> None:
        while True:
            try:
                command, future = self._commands.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(command())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(exc)

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._serve_commands()
            if not self._topics:
                self._closed.wait(0.02)
                continue
            try:
                messages = self._consumer.consume(num_messages=500, timeout=0.05)
            except (KafkaException, RuntimeError) as exc:
                if self._closed.is_set():
                    return
                log.warning("inbox.broker_unavailable", group=self.group, error=str(exc))
                self._closed.wait(0.5)
                continue
            self._take(messages)

    def _take(self, messages: list[Message]) -> None:
        full: list[TopicPartition] = []
        with self._lock:
            for message in messages:
                error = message.error()
                if error is not None:
                    self._failure = error
                    continue
                state = self._partitions.get((message.topic() or "", message.partition() or 0))
                if state is None:
                    continue  # revoked meanwhile: its next owner reads it
                state.buffer.append(message)
                if len(state.buffer) >= _BUFFER_LIMIT and not state.paused:
                    state.paused = True
                    full.append(TopicPartition(message.topic() or "", message.partition() or 0))
            if messages:
                self._lock.notify_all()
        if full:
            self._consumer.pause(full)  # on the poll thread already

    # -- records -------------------------------------------------------------------------

    def take(self, key: Key, count: int, consumer: str, timeout: float) -> list[Pending]:
        """Up to ``count`` buffered records of ``key``, waiting up to ``timeout`` for the first."""
        with self._lock:
            self._lock.wait_for(lambda: self._has_records(key), timeout=timeout)
            state = self._partitions.get(key)
            if state is None or not state.buffer:
                return []
            now = time.monotonic()
            out: list[Pending] = []
            while state.buffer and len(out) < count:
                message = state.buffer.popleft()
                offset = message.offset() or 0
                pending = Pending(message, deliveries=1, since=now, consumer=consumer)
                state.pending[offset] = pending
                state.next_offset = offset + 1
                out.append(pending)
            state.busy += 1
            resume = state.paused and len(state.buffer) < _BUFFER_LIMIT // 2
            if resume:
                state.paused = False
        if resume:
            self._commands.put((lambda: self._consumer.resume([TopicPartition(key[0], key[1])]), Future()))
        return out

    def _has_records(self, key: Key) -> bool:
        state = self._partitions.get(key)
        return state is None or bool(state.buffer) or self._closed.is_set()

    def claim(self, key: Key, consumer: str, min_idle: float, count: int) -> list[Pending]:
        """Pending records of ``key`` idle for ``min_idle`` seconds, oldest first, one delivery more each."""
        now = time.monotonic()
        with self._lock:
            state = self._partitions.get(key)
            if state is None:
                return []
            idle = [p for _, p in sorted(state.pending.items()) if now - p.since >= min_idle][:count]
            for pending in idle:
                pending.deliveries += 1
                pending.since, pending.consumer = now, consumer
            if idle:
                state.busy += 1
            return idle

    def ack(self, key: Key, offsets: Sequence[int]) -> int | None:
        """Forget acknowledged records; return the offset to commit (``None``: nothing to commit)."""
        with self._lock:
            state = self._partitions.get(key)
            if state is None:
                return None
            for offset in offsets:
                state.pending.pop(offset, None)
            state.busy = max(state.busy - 1, 0)
            self._lock.notify_all()
            if state.pending:
                return min(state.pending)
            return state.next_offset

    def commit(self, key: Key, offset: int) -> None:
        """Commit ``offset`` (the next to read) of ``key`` to Kafka, synchronously."""
        self._run(lambda: self._consumer.commit(offsets=[TopicPartition(key[0], key[1], offset)],
                                                asynchronous=False))  # fmt: skip

    def status(self, key: Key) -> tuple[int, int | None, float | None] | None:
        """``(pending, next offset to deliver, oldest pending age in s)`` of an owned partition, else None."""
        with self._lock:
            state = self._partitions.get(key)
            if state is None:
                return None
            next_offset = state.buffer[0].offset() if state.buffer else state.next_offset
            oldest = min((p.message.timestamp()[1] for p in state.pending.values()), default=None)
        age = None if oldest is None else max(time.time() - oldest / 1000, 0.0)
        return len(state.pending), next_offset, age

    def close(self) -> None:
        """Stop polling and leave the group (its partitions go to the other members at once)."""
        self._closed.set()
        with self._lock:
            self._lock.notify_all()
        self._thread.join(timeout=5)
        self._serve_commands()
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError):
            log.debug("inbox.consumer_close_failed", group=self.group)
