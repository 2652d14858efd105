"""Pure pieces of the relay: backoff, config, the memory broker's contract, URL dispatch."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from brokers import Fence, Outcome, OutgoingEntry, connect_publisher
from brokers.memory import MemoryBroker, MemoryPublisher, memory_broker
from outbox import BrokerError, ConfigError, FencedError
from outboxkit.cli._options import parse_topic_partitions
from relay import RelayConfig
from relay._backoff import Backoff, backoff_delay


def test_backoff_delay_grows_exponentially_with_jitter_and_cap() -> None:
    """Delays double per attempt, stay within [nominal/2, nominal], and never pass the cap."""
    rng = random.Random(1)
    for attempt in range(1, 12):
        nominal = min(30.0, 0.5 * 2 ** (attempt - 1))
        delay = backoff_delay(attempt, base=0.5, cap=30.0, rng=rng)
        assert nominal / 2 <= delay <= nominal
    assert backoff_delay(10_000, base=1, cap=5) <= 5


def test_backoff_counter_resets_after_success() -> None:
    """A reset starts the sequence over from the base delay."""
    backoff = Backoff(base=dt.timedelta(seconds=1), cap=dt.timedelta(seconds=60))
    first = [backoff.next_delay() for _ in range(5)]
    assert first[-1] >= 8
    backoff.reset()
    assert backoff.next_delay() <= 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"partitions": 0},
        {"max_attempts": 0},
        {"lease_ttl": dt.timedelta(milliseconds=10)},
        {"retry_base": dt.timedelta(seconds=10), "retry_max": dt.timedelta(seconds=1)},
        {"replay_window": dt.timedelta(seconds=-1)},
        {"max_len": 0},
    ],
)
def test_relay_config_refuses_bad_values(kwargs: dict[str, object]) -> None:
    """Invalid settings raise ConfigError at construction."""
    with pytest.raises(ConfigError):
        RelayConfig(database_url="sqlite://", broker_url="memory://", **kwargs)  # type: ignore[arg-type]


def test_memory_broker_fences_refuse_stale_batches_whole() -> None:
    """A batch with an older fence than the broker saw writes nothing."""
    broker = MemoryBroker()
    token = broker.incarnation
    entry = OutgoingEntry("s", {"id": "1"})
    broker.append([entry], [Fence("p0", 3)], token)
    with pytest.raises(FencedError):
        broker.append([entry, entry], [Fence("p0", 2)], token)
    assert len(broker.entries("s")) == 1


def test_memory_broker_rejection_skips_later_entries_of_the_key() -> None:
    """After an entry is rejected, later entries with its order key are skipped; others go through."""
    broker = MemoryBroker()
    broker.reject = lambda e: "too big" if e.fields["id"] == "a1" else None
    entries = [OutgoingEntry("s", {"id": i}, order_key=i[0]) for i in ("a1", "b1", "a2", "b2")]
    result = broker.append(entries, [], broker.incarnation)
    assert [o.outcome for o in result.outcomes] == [
        Outcome.REJECTED,
        Outcome.PUBLISHED,
        Outcome.SKIPPED,
        Outcome.PUBLISHED,
    ]


def test_memory_broker_reports_a_new_incarnation_without_writing() -> None:
    """A caller with an outdated incarnation token gets the new one and nothing is written."""
    broker = MemoryBroker()
    result = broker.append([OutgoingEntry("s", {"id": "1"})], [], "old")
    assert result.incarnation == broker.incarnation
    assert [o.outcome for o in result.outcomes] == [Outcome.SKIPPED]
    assert broker.entries("s") == []


def test_memory_broker_simulated_outage_raises_broker_error() -> None:
    """fail_next makes publishes raise BrokerError, then recovers."""
    publisher = MemoryPublisher(MemoryBroker())
    publisher.broker.fail_next(1)
    with pytest.raises(BrokerError):
        publisher.publish([])
    publisher.publish([], incarnation=publisher.broker.incarnation)


def test_connect_publisher_chooses_by_scheme_and_masks_passwords() -> None:
    """memory:// is shared by name; an unknown scheme is a ConfigError without the password."""
    publisher = connect_publisher("memory://unit-a")
    assert isinstance(publisher, MemoryPublisher)
    assert publisher.broker is memory_broker("unit-a")
    assert connect_publisher("redis://:pw@localhost:1/0").description == "redis://:***@localhost:1/0"
    with pytest.raises(ConfigError) as info:
        connect_publisher("amqp://user:hunter2@host/")
    assert "hunter2" not in str(info.value)


def test_parse_topic_partitions_reads_pairs() -> None:
    """`orders=4,payments=2` becomes a mapping; malformed items are a ConfigError."""
    assert parse_topic_partitions("orders=4, payments=2") == {"orders": 4, "payments": 2}
    assert parse_topic_partitions("") == {}
    with pytest.raises(ConfigError):
        parse_topic_partitions("orders")
