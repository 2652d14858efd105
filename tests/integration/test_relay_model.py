"""Property test: under random broker rejections, per-key order and dead-lettering hold exactly."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

import outbox
from brokers.memory import MemoryBroker, MemoryPublisher
from relay import Relay, RelayConfig

MAX_ATTEMPTS = 3

# Each message: (key index or None, how many times the broker rejects it).
messages_strategy = st.lists(
    st.tuples(st.one_of(st.none(), st.integers(0, 3)), st.integers(0, MAX_ATTEMPTS + 1)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=messages_strategy, batch_size=st.integers(1, 7))
def test_relay_model_rejections_keep_key_order_and_dead_letter_exactly(
    tmp_path_factory: object, messages: list[tuple[int | None, int]], batch_size: int
) -> None:
    """Random rejections: each message is published once (in key order) or dead-lettered after MAX_ATTEMPTS."""
    directory: Path = tmp_path_factory.mktemp("model")  # type: ignore[attr-defined]
    url = f"sqlite:///{directory / 'app.db'}"
    outbox.upgrade(url)
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        ids = outbox.publish_many(
            conn,
            [outbox.Message(topic="t", key=None if k is None else f"k{k}", payload={"n": n})
             for n, (k, _) in enumerate(messages)],
        )  # fmt: skip
    rejections = {str(i): r for i, (_, r) in zip(ids, messages, strict=True)}
    seen: Counter[str] = Counter()
    broker = MemoryBroker()

    def reject(entry: object) -> str | None:
        message_id = entry.fields["id"]  # type: ignore[attr-defined]
        seen[message_id] += 1
        return "ERR refused" if seen[message_id] <= rejections[message_id] else None

    broker.reject = reject
    config = RelayConfig(
        database_url=url, broker_url="memory://model", batch_size=batch_size, max_attempts=MAX_ATTEMPTS,
        retry_base=dt.timedelta(milliseconds=1), retry_max=dt.timedelta(milliseconds=2),
        replay_window=dt.timedelta(0), once=True, poll_interval=dt.timedelta(milliseconds=10),
        on_dead_letter="skip",  # the model: everything not dead-lettered is published (no parked keys)
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        Relay(config, publisher=MemoryPublisher(broker)).run()
        with engine.connect() as conn:
            left = conn.execute(text("SELECT count(*) FROM outbox")).scalar_one()
        if not left:
            break
        assert time.monotonic() < deadline
        time.sleep(0.005)
    with engine.connect() as conn:
        dead = {str(r[0]) for r in conn.execute(text("SELECT message_id FROM outbox_dead_letter"))}
    engine.dispose()
    published = [e["id"] for e in broker.entries("t")]
    assert len(published) == len(set(published))  # no crash, no fault: exactly once
    expected_dead = {m for m, r in rejections.items() if r >= MAX_ATTEMPTS}
    assert {m.replace("-", "") for m in dead} == {m.replace("-", "") for m in expected_dead}
    assert set(published) == set(rejections) - expected_dead
    position = {str(i): n for n, i in enumerate(ids)}
    by_key: dict[str, list[int]] = {}
    for fields in broker.entries("t"):
        if "subject" in fields:
            by_key.setdefault(fields["subject"], []).append(position[fields["id"]])
    for key, order in by_key.items():
        assert order == sorted(order), f"key {key} out of order: {order}"
