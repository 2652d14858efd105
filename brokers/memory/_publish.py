"""An in-memory broker for unit tests: streams as ordered lists of entries.

:class:`MemoryBroker` holds the streams (``broker.streams[name]`` is a list of
``(entry_id, fields)`` in append order) so a subscriber can be written over the
same storage in a separate module. ``memory://<name>`` URLs resolve to one
shared instance per name within a process (:func:`memory_broker`).

Faults for tests: :meth:`MemoryBroker.fail_next` makes the next publishes
raise :class:`~outbox.errors.BrokerError`, :attr:`MemoryBroker.reject` refuses
chosen entries, :meth:`MemoryBroker.lose_everything` acts like a Redis
restarted without persistence (new incarnation, streams and fences gone).

.. versionadded:: 0.1
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from outbox.errors import BrokerError, FencedError

from .._publisher import EntryOutcome, EntryStatus, Fence, OutgoingEntry, PublishResult

__all__ = ["MemoryBroker", "MemoryPublisher", "memory_broker"]

StreamEntry = tuple[str, dict[str, str]]


@dataclass(slots=True)
class MemoryBroker:
    """Streams, fences and an incarnation token, guarded by one lock."""

    streams: dict[str, list[StreamEntry]] = field(default_factory=dict)
    fences: dict[str, int] = field(default_factory=dict)
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)
    reject: Callable[[OutgoingEntry], str | None] | None = None
    """Return an error text to reject an entry, ``None`` to accept it."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _failures: int = 0
    _seq: int = 0

    def fail_next(self, count: int = 1) -> None:
        """Make the next ``count`` publishes fail as if the broker were down."""
        with self.lock:
            self._failures = count

    def lose_everything(self) -> None:
        """Drop every stream and fence and start a new incarnation."""
        with self.lock:
            self.streams.clear()
            self.fences.clear()
            self.incarnation = uuid.uuid4().hex

    def entries(self, stream: str) -> list[dict[str, str]]:
        """The fields of every entry of ``stream``, in order."""
        with self.lock:
            return [fields for _, fields in self.streams.get(stream, [])]

    def append(
        self, entries: Sequence[OutgoingEntry], fences: Sequence[Fence], incarnation: str | None = None
    ) -> PublishResult:
        """Apply one batch atomically (see :class:`~brokers.Publisher`)."""
        with self.lock:
            if self._failures > 0:
                self._failures -= 1
                msg = "memory broker: simulated outage"
                raise BrokerError(msg)
            if incarnation != self.incarnation:
                skipped = [EntryOutcome(EntryStatus.SKIPPED) for _ in entries]
                return PublishResult(outcomes=skipped, incarnation=self.incarnation)
            for fence in fences:
                if self.fences.get(fence.name, -1) > fence.epoch:
                    msg = f"fence {fence.name} is at epoch {self.fences[fence.name]} > {fence.epoch}"
                    raise FencedError(msg)
            for fence in fences:
                self.fences[fence.name] = fence.epoch
            return PublishResult(outcomes=self._append(entries), incarnation=self.incarnation)

    def _append(self, entries: Sequence[OutgoingEntry]) -> list[EntryOutcome]:
        failed: set[str] = set()
        outcomes: list[EntryOutcome] = []
        for entry in entries:
            if entry.order_key is not None and entry.order_key in failed:
                outcomes.append(EntryOutcome(EntryStatus.SKIPPED))
                continue
            error = self.reject(entry) if self.reject is not None else None
            if error is not None:
                if entry.order_key is not None:
                    failed.add(entry.order_key)
                outcomes.append(EntryOutcome(EntryStatus.REJECTED, error=error))
                continue
            self._seq += 1
            entry_id = f"{self._seq}-0"
            self.streams.setdefault(entry.stream, []).append((entry_id, dict(entry.fields)))
            outcomes.append(EntryOutcome(EntryStatus.PUBLISHED, entry_id=entry_id))
        return outcomes


_BROKERS: dict[str, MemoryBroker] = {}
_BROKERS_LOCK = threading.Lock()


def memory_broker(name: str = "default") -> MemoryBroker:
    """The process-wide broker called ``name`` (what ``memory://<name>`` connects to)."""
    with _BROKERS_LOCK:
        return _BROKERS.setdefault(name, MemoryBroker())


class MemoryPublisher:
    """The publish half over a :class:`MemoryBroker`."""

    def __init__(self, broker: MemoryBroker, *, name: str = "default") -> None:
        self.broker = broker
        self._name = name

    @property
    def description(self) -> str:
        """``memory://<name>``."""
        return f"memory://{self._name}"

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        """Append the batch (see :class:`~brokers.Publisher`)."""
        return self.broker.append(entries, fences, incarnation)

    def ping(self) -> None:
        """An empty batch, so :meth:`MemoryBroker.fail_next` makes it fail like a dead broker."""
        self.broker.append([], (), None)

    def close(self) -> None:
        """Nothing to release."""

    def streams(self) -> Mapping[str, list[StreamEntry]]:
        """The broker's streams (read-only use)."""
        return self.broker.streams
