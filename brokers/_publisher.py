"""The publish half of every broker: one Protocol, one batch call, per-entry outcomes.

The relay hands a broker a whole batch at once (one round trip) together with
the *fences* of the partitions the batch comes from. A broker must:

* refuse the whole batch with :class:`~outbox.errors.FencedError`, writing
  nothing, when any fence it holds is newer than the one given (a relay that
  lost its lease is still running), and otherwise remember the given fences;
* append the entries in order, one outcome per entry: published, rejected (the
  broker refused that entry for itself: it will be retried, then dead-lettered)
  or skipped (not attempted: an earlier entry with the same ``order_key`` was
  rejected in this batch, or the broker failed part-way);
* report its *incarnation*: a token that changes when the broker loses its
  data (a Redis restarted without persistence). The caller passes the token
  it last saw; when the broker's differs it writes nothing and returns its
  token with every entry ``SKIPPED``, so the relay can first re-publish what
  it relayed within its replay window, in order, and only then the new rows;
* raise :class:`~outbox.errors.BrokerError` when it cannot be reached; the relay
  then backs off and retries the batch (nothing is lost: rows are kept until
  the broker has confirmed them).

.. versionadded:: 0.1
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = [
    "EntryOutcome",
    "EntryStatus",
    "Fence",
    "OutgoingEntry",
    "PublishResult",
    "Publisher",
]


@dataclass(frozen=True, slots=True)
class OutgoingEntry:
    """One entry to append to a stream.

    Attributes:
        stream: the stream name (see :class:`~brokers.StreamLayout`).
        fields: the wire fields (:func:`outbox.encode_entry`).
        order_key: entries sharing it must keep their order: after one is
            rejected, the later ones of the batch are skipped. ``None`` = unordered.
    """

    stream: str
    fields: Mapping[str, str]
    order_key: str | None = None


@dataclass(frozen=True, slots=True)
class Fence:
    """A partition lease's epoch: brokers refuse batches older than the newest they saw."""

    name: str
    epoch: int


class EntryStatus(enum.Enum):
    """What the broker did with one entry of a batch: published, rejected, or skipped (not taken)."""

    PUBLISHED = "published"
    REJECTED = "rejected"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    """The result for one entry: its status, its broker id when published, the error when rejected."""

    outcome: EntryStatus
    entry_id: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    """Outcomes in entry order, the broker's incarnation, and a transient failure if any.

    ``transient_error`` is set when the broker failed part-way for a reason
    that is not the entries' fault (out of memory, loading, read-only replica):
    the entries it did not take are ``SKIPPED`` and the relay backs off.
    """

    outcomes: Sequence[EntryOutcome]
    incarnation: str | None = None
    transient_error: str | None = None


@runtime_checkable
class Publisher(Protocol):
    """The publish half of a broker, as used by the relay."""

    @property
    def description(self) -> str:
        """The broker's URL without secrets, for logs and errors."""
        ...

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        """Append ``entries`` in order in one round trip, checking and advancing ``fences`` first.

        ``incarnation`` is the token the caller last saw (``None``: unknown);
        brokers without one ignore it and return ``incarnation=None``.

        Raises:
            FencedError: a fence is stale; nothing was written.
            BrokerError: the broker is unreachable; some entries may have been written.
        """
        ...

    def ping(self) -> None:
        """One round trip that writes nothing: is the broker there and does it let us in?

        ``outboxkit status --broker`` and ``relay --once`` ask this instead of
        looking at the adapter's class, so every broker answers the same way.

        Raises:
            BrokerAuthError: the broker refused the credentials or the ACL.
            BrokerError: the broker is unreachable.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
