"""NATS takeover: a new partition owner gets the previous owner's entries first, counted again (#11)."""

from __future__ import annotations

import datetime as dt

from brokers import connect_subscriber
from tests._inbox import entry
from tests._nats import nats_add

NOW = dt.timedelta(0)


async def test_nats_takeover_redelivers_pending_first_with_deliveries_counted(
    nats_url: str, stream_prefix: str
) -> None:
    """Each consumer that dies holding an entry raises its count, so the poison limit is reached."""
    stream = f"{stream_prefix}orders.created"
    for n in range(4):
        nats_add(nats_url, stream, entry(payload={"n": n}))
    counts = []
    for _owner in range(3):  # three processes in turn, each dying with entries 1-2 unacknowledged
        subscriber = connect_subscriber(nats_url)
        await subscriber.ensure_group(stream, "g")
        assert await subscriber.claim(stream, "g", "c", min_idle=NOW, count=10) == []
        got = await subscriber.read(stream, "g", "c", count=2, block=NOW)
        counts.append([(d.entry_id, d.deliveries) for d in got])
        await subscriber.aclose()  # dies: no ack
    assert counts == [[("1", 1), ("2", 1)], [("1", 2), ("2", 2)], [("1", 3), ("2", 3)]]
    last = connect_subscriber(nats_url)
    await last.claim(stream, "g", "c", min_idle=NOW, count=10)
    got = await last.read(stream, "g", "c", count=10, block=NOW)
    await last.ack(stream, "g", [d.entry_id for d in got])
    status = await last.group_status(stream, "g")
    await last.aclose()
    assert [d.entry_id for d in got] == ["1", "2", "3", "4"]  # the old ones first, then the rest
    assert status is not None
    assert status.lag == 0
