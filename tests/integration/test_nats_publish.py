"""NATS publish half: atomic batches, and re-sent message ids stored once, in order (#11)."""

from __future__ import annotations

from brokers import EntryStatus, OutgoingEntry, connect_publisher
from tests._nats import nats_entries


def _entries(stream: str, first: int, last: int) -> list[OutgoingEntry]:
    return [
        OutgoingEntry(stream, {"id": f"m{i}", "subject": f"k{i % 3}", "data": f'{{"seq": {i}}}'}, f"k{i % 3}")
        for i in range(first, last)
    ]


def test_nats_resent_ids_are_stored_once_in_order(nats_url: str, stream_prefix: str) -> None:
    """A batch re-sending ids already stored (a relay retry) stores only the new ones, after the old ones."""
    stream = f"{stream_prefix}orders"
    publisher = connect_publisher(nats_url, key_prefix=stream_prefix)
    try:
        token = publisher.publish([]).incarnation
        first = publisher.publish(_entries(stream, 0, 10), incarnation=token)
        again = publisher.publish(_entries(stream, 5, 15), incarnation=token)  # 5..9 were stored already
    finally:
        publisher.close()
    assert {o.outcome for o in [*first.outcomes, *again.outcomes]} == {EntryStatus.PUBLISHED}
    assert [e["id"] for e in nats_entries(nats_url, stream)] == [f"m{i}" for i in range(15)]


def test_nats_entry_that_cannot_be_a_header_is_rejected_alone(nats_url: str, stream_prefix: str) -> None:
    """A key with a line break cannot travel as a NATS header: that entry and its key's later ones only."""
    stream = f"{stream_prefix}orders"
    entries = _entries(stream, 0, 6)
    entries[1] = OutgoingEntry(stream, {"id": "bad", "subject": "k\nx", "data": "{}"}, "k1")
    publisher = connect_publisher(nats_url, key_prefix=stream_prefix)
    try:
        token = publisher.publish([]).incarnation
        result = publisher.publish(entries, incarnation=token)
    finally:
        publisher.close()
    outcomes = [o.outcome for o in result.outcomes]
    assert outcomes == [EntryStatus.PUBLISHED, EntryStatus.REJECTED, EntryStatus.PUBLISHED, EntryStatus.PUBLISHED,
                        EntryStatus.SKIPPED, EntryStatus.PUBLISHED]  # fmt: skip
    assert [e["id"] for e in nats_entries(nats_url, stream)] == ["m0", "m2", "m3", "m5"]
