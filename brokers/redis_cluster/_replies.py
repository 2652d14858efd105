"""What the cluster publisher sends and reads back: slot calls, per-master replies, outcomes.

Pure functions over redis-py's replies (no I/O), split from the publisher so
each module keeps one job.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from brokers._publisher import EntryOutcome, EntryStatus, OutgoingEntry
from outbox.errors import ConfigError, FencedError

from ._topology import slot_of

__all__ = [
    "SKIPPED",
    "NodeReply",
    "SlotCall",
    "cluster_token",
    "decoded",
    "entry_transient",
    "fill",
    "group",
    "is_new",
    "raise_fenced",
]

_TRANSIENT = ("OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN")
_PUBLISHED = EntryOutcome(EntryStatus.PUBLISHED)
SKIPPED = EntryOutcome(EntryStatus.SKIPPED)


@dataclass(slots=True)
class SlotCall:
    slot: int
    indices: list[int] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)


@dataclass(slots=True)
class NodeReply:
    node: str
    value: str | None = None  # the master's incarnation token
    created: bool = False
    replies: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    error: str | None = None  # the whole master failed (transient)

    def failure(self, slot: int) -> str | None:
        return self.error or self.errors.get(slot)


def group(entries: Sequence[OutgoingEntry]) -> list[SlotCall]:
    calls: dict[int, SlotCall] = {}
    for index, entry in enumerate(entries):
        if not _has_tag(entry.stream):
            msg = (
                f"stream {entry.stream!r} has no hash tag: Redis Cluster needs"
                " StreamLayout(hash_tags=True), which the command line sets for redis+cluster://"
            )
            raise ConfigError(msg)
        slot = slot_of(entry.stream)
        call = calls.setdefault(slot, SlotCall(slot))
        call.indices.append(index)
        if entry.stream not in call.streams:
            call.streams.append(entry.stream)
    return list(calls.values())


def _has_tag(stream: str) -> bool:
    start = stream.find("{")
    return start >= 0 and stream.find("}", start + 2) > start


def is_new(answer: object) -> bool:
    return isinstance(answer, list) and bool(answer) and answer[0] == b"NEW"


def raise_fenced(replies: Iterable[NodeReply]) -> None:
    for reply in replies:
        for answer in reply.replies.values():
            if isinstance(answer, list) and answer and answer[0] == b"FENCED":
                msg = f"fence {decoded(answer[1])} is at epoch {decoded(answer[2])}: another relay took over"
                raise FencedError(msg)


def cluster_token(replies: list[NodeReply], expected: str | None) -> tuple[str | None, bool]:
    """The cluster's token (sorted masters' tokens) and whether it differs from ``expected``."""
    values = {r.value for r in replies if r.value is not None}
    unreachable = any(r.value is None for r in replies)
    known = set(expected.split(",")) if expected else set()
    if expected and values <= known:
        return expected, False  # fewer masters answering (or fewer masters) is no data loss
    if not values or (not expected and unreachable):
        return expected, False  # not known yet: decide when every master answers
    return ",".join(sorted(values | (known if unreachable else set()))), True


def fill(outcomes: list[EntryOutcome], indices: list[int], answer: list[bytes]) -> None:
    if answer[0] == b"ALL":
        for index in indices:
            outcomes[index] = _PUBLISHED
        return
    for index, item in zip(indices, answer[1:], strict=True):
        text = decoded(item)
        if text == "-":
            outcomes[index] = SKIPPED
        elif text.startswith("!"):
            kind = EntryStatus.SKIPPED if text[1:].startswith(_TRANSIENT) else EntryStatus.REJECTED
            outcomes[index] = EntryOutcome(kind, error=text[1:])
        else:
            outcomes[index] = EntryOutcome(EntryStatus.PUBLISHED, entry_id=text)


def entry_transient(outcomes: list[EntryOutcome], indices: list[int]) -> str | None:
    return next(
        (
            outcomes[i].error
            for i in indices
            if outcomes[i].outcome is EntryStatus.SKIPPED and outcomes[i].error
        ),
        None,
    )


def decoded(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
