"""The relay's claim -> publish -> mark loop on SQLite and PostgreSQL, with the in-memory broker."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from structlog.testing import capture_logs

import brokers
import outbox
from brokers.memory import MemoryBroker, MemoryPublisher
from relay import Relay, RelayConfig
from tests._relay_support import (
    assert_complete_and_ordered,
    outbox_count,
    relay_thread,
    seq_of,
    wait_until,
    write_events,
)


def _config(db_url: str, **kw: object) -> RelayConfig:
    defaults: dict[str, object] = {
        "database_url": db_url,
        "broker_url": "memory://unused",
        "poll_interval": dt.timedelta(seconds=0.05),
        "replay_window": dt.timedelta(0),
    }
    return RelayConfig(**{**defaults, **kw})  # type: ignore[arg-type]


def _drain(db_url: str, broker: MemoryBroker, **kw: object) -> Relay:
    daemon = Relay(_config(db_url, once=True, **kw), publisher=MemoryPublisher(broker))
    daemon.run()
    return daemon


def test_relay_publishes_every_row_in_id_order_and_deletes_it(db_url: str) -> None:
    """--once drains the backlog: every row reaches its stream in per-key order and leaves the outbox."""
    ids = write_events(db_url, 1234, keys=7)
    broker = MemoryBroker()
    daemon = _drain(db_url, broker, batch_size=100)
    entries = broker.entries("orders")
    assert [e["id"] for e in entries] == ids  # one relay, no failure: exactly once, in id order
    assert_complete_and_ordered(entries, ids)
    assert outbox_count(db_url, "1=1") == 0
    assert daemon.stats.published == 1234


def test_relay_entry_carries_the_documented_wire_fields(db_url: str) -> None:
    """An entry has the CloudEvents fields of docs/wire-format.md and decodes to the envelope."""
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.begin() as conn:
        message_id = outbox.publish(
            conn, "payments", {"amount": "12.50"}, key="order-7", type="payment.requested",
            headers={"correlation_id": "c-1"},
        )  # fmt: skip
    engine.dispose()
    broker = MemoryBroker()
    _drain(db_url, broker)
    [fields] = broker.entries("payments")
    assert fields["specversion"] == "1.0"
    assert fields["id"] == str(message_id)
    assert fields["subject"] == "order-7"
    assert fields["type"] == "payment.requested"
    assert fields["datacontenttype"] == "application/json"
    envelope = outbox.decode_entry(fields)
    assert envelope.payload == {"amount": "12.50"}
    assert envelope.headers == {"correlation_id": "c-1"}


def test_relay_topic_partitions_route_by_key_hash(db_url: str) -> None:
    """A topic with 4 partitions goes to 4 streams; all events of one key share one stream."""
    ids = write_events(db_url, 200, keys=13)
    broker = MemoryBroker()
    layout = brokers.StreamLayout(prefix="svc:", partitions={"orders": 4})
    _drain(db_url, broker, layout=layout)
    assert sorted(broker.streams) == [f"svc:orders:{p}" for p in range(4)]
    streams_of_key: dict[str, set[str]] = {}
    every: list[dict[str, str]] = []
    for stream, entries in broker.streams.items():
        for _, fields in entries:
            streams_of_key.setdefault(fields["subject"], set()).add(stream)
            every.append(fields)
    assert all(len(s) == 1 for s in streams_of_key.values())
    assert_complete_and_ordered(sorted(every, key=lambda f: f["id"]), ids)


def test_relay_keeps_published_rows_for_the_replay_window(db_url: str) -> None:
    """With a replay window rows are stamped published_at instead of deleted, and retention removes them later."""
    write_events(db_url, 50)
    broker = MemoryBroker()
    _drain(db_url, broker, replay_window=dt.timedelta(seconds=30))
    assert outbox_count(db_url, "published_at IS NOT NULL") == 50
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE outbox SET published_at = :t"),
            {"t": dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)},
        )
    engine.dispose()
    _drain(db_url, broker, replay_window=dt.timedelta(seconds=30))
    assert outbox_count(db_url, "1=1") == 0
    assert len(broker.entries("orders")) == 50


def test_relay_delayed_message_waits_until_available(db_url: str) -> None:
    """A message with available_at in the future is not relayed before then; the others are."""
    write_events(db_url, 3, delay=dt.timedelta(seconds=1.0))
    now_ids = write_events(db_url, 2, start=100)
    broker = MemoryBroker()
    _drain(db_url, broker)
    assert [e["id"] for e in broker.entries("orders")] == now_ids
    assert outbox_count(db_url) == 3
    with relay_thread(_config(db_url), publisher=MemoryPublisher(broker)):
        wait_until(lambda: len(broker.entries("orders")) == 5, timeout=10)


def test_relay_rejected_message_blocks_only_its_key_then_dead_letters(db_url: str) -> None:
    """A rejected message is retried with backoff while later messages of its key wait and other keys flow; then it is dead-lettered."""
    ids = write_events(db_url, 20, keys=4)  # k0..k3; seq 1 is k1
    poison = ids[1]
    broker = MemoryBroker()
    broker.reject = lambda e: "ERR too large" if e.fields["id"] == poison else None
    cfg = _config(
        db_url,
        max_attempts=3,
        retry_base=dt.timedelta(seconds=0.3),
        retry_max=dt.timedelta(seconds=0.3),
        on_dead_letter="skip",  # park-key (the default) would hold k1 after the dead letter
    )
    with capture_logs() as logs, relay_thread(cfg, publisher=MemoryPublisher(broker)):
        wait_until(lambda: len(broker.entries("orders")) == 15)  # every k0, k2, k3 row
        published_keys = {e["subject"] for e in broker.entries("orders")}
        assert published_keys == {"k0", "k2", "k3"}  # k1 is parked behind its first row
        wait_until(lambda: len(broker.entries("orders")) == 19, timeout=10)  # dead-lettered, k1 flows
    events = [e["event"] for e in logs]
    assert events.count("relay.message_rejected") == 3
    assert "relay.dead_lettered" in events
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT id, attempts, last_error FROM outbox_dead_letter")).one()
    engine.dispose()
    assert row.attempts == 3
    assert row.last_error == "ERR too large"
    assert row.id == 2  # the original outbox id
    k1 = [seq_of(e) for e in broker.entries("orders") if e["subject"] == "k1"]
    assert k1 == sorted(k1)


def test_relay_broker_outage_backs_off_and_resumes(db_url: str) -> None:
    """While the broker fails the relay keeps the rows and backs off; afterwards it publishes them all."""
    ids = write_events(db_url, 30)
    broker = MemoryBroker()
    broker.fail_next(4)
    with capture_logs() as logs, relay_thread(_config(db_url), publisher=MemoryPublisher(broker)):
        wait_until(lambda: len(broker.entries("orders")) == 30, timeout=20)
    assert [e["id"] for e in broker.entries("orders")] == ids
    failures = [e for e in logs if e["event"] == "relay.publish_failed"]
    assert len(failures) == 4
    delays = [e["delay_s"] for e in failures]
    assert delays[-1] > delays[0]  # exponential


def test_relay_broker_data_loss_republishes_the_replay_window(db_url: str) -> None:
    """A broker that lost its data (new incarnation) gets every row of the replay window again."""
    ids = write_events(db_url, 40)
    broker = MemoryBroker()
    cfg = _config(db_url, replay_window=dt.timedelta(minutes=5))
    with relay_thread(cfg, publisher=MemoryPublisher(broker)) as daemon:
        wait_until(lambda: len(broker.entries("orders")) == 40)
        broker.lose_everything()
        more = write_events(db_url, 5, start=40)
        wait_until(lambda: len(broker.entries("orders")) == 45)
    assert_complete_and_ordered(broker.entries("orders"), ids + more)
    assert daemon.stats.replayed == 40


def test_relay_wrong_database_schema_is_one_clear_error(sqlite_empty_url: str) -> None:
    """A database without the tables gives SchemaMissingError naming the migrate command."""
    with pytest.raises(outbox.SchemaMissingError, match="outboxkit migrate"):
        Relay(_config(sqlite_empty_url), publisher=MemoryPublisher(MemoryBroker())).run()


def test_relay_stops_promptly_when_idle(db_url: str) -> None:
    """stop() ends an idle relay within a second and it leaves its leases free."""
    broker = MemoryBroker()
    with relay_thread(
        _config(db_url, poll_interval=dt.timedelta(seconds=5)), publisher=MemoryPublisher(broker)
    ) as d:
        wait_until(lambda: bool(d.leases.view.epochs))
    engine = create_engine(db_url, poolclass=NullPool)
    with engine.connect() as conn:
        owners = conn.execute(
            text("SELECT count(*) FROM outboxkit_relay_lease WHERE owner IS NOT NULL")
        ).scalar()
        members = conn.execute(text("SELECT count(*) FROM outboxkit_relay_member")).scalar()
    engine.dispose()
    assert owners == 0
    assert members == 0


def test_relay_replay_window_counts_from_the_last_confirmed_batch(db_url: str) -> None:
    """A broker away longer than the window comes back empty: rows it took just before going are re-published, not deleted (#9)."""
    ids = write_events(db_url, 20)
    broker = MemoryBroker()
    window = dt.timedelta(seconds=30)
    _drain(db_url, broker, replay_window=window)
    engine = create_engine(db_url, poolclass=NullPool)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    with engine.begin() as conn:
        # As if the broker took these rows ten minutes ago and has been unreachable ever since.
        conn.execute(text("UPDATE outbox SET published_at = :t"), {"t": long_ago})
        conn.execute(
            text("UPDATE outboxkit_relay_state SET updated_at = :t WHERE name LIKE 'broker_incarnation:%'"),
            {"t": long_ago + dt.timedelta(seconds=1)},
        )
    engine.dispose()
    broker.lose_everything()
    with capture_logs() as logs:
        daemon = _drain(db_url, broker, replay_window=window)
    assert daemon.stats.replayed == 20
    assert [e["id"] for e in broker.entries("orders")] == ids
    lost = [e for e in logs if e["event"] == "relay.broker_data_lost"]
    assert len(lost) == 1
    assert lost[0]["last_confirmed_s_ago"] > 590
