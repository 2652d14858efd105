"""Several services (databases) relaying into one broker, as in the order saga example.

Found while building `outboxkit demo` (issue 5): the relay's fences are named
``<outbox table>:<partition>`` only, so two services whose outbox tables share
a name share fences in the broker. Once one service's relay restarts (its
epochs grow), the other's relay is refused ("another relay took over") for
ever. Fence names now carry an id the first relay records in each database
(``outboxkit_relay_state``); this is the regression test.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

import outbox
from relay import Relay, RelayConfig


def _write(url: str) -> None:
    engine = create_engine(url)
    with Session(engine) as session, session.begin():
        outbox.publish(session, "t.x", {"n": 1}, key="k")
    engine.dispose()


def _relay_once(url: str, broker: str, timeout: float) -> bool:
    relay = Relay(RelayConfig(database_url=url, broker_url=broker, once=True))
    thread = threading.Thread(target=relay.run)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        relay.stop()
        thread.join(10)
        return False
    return relay.stats.published == 1


def test_relay_shared_broker_restart_of_one_service_does_not_fence_another(tmp_path: Path) -> None:
    """Two services with the default outbox table name share a broker; restarting one must not block the other."""
    a, b, broker = (f"sqlite:///{tmp_path / name}.db" for name in ("a", "b", "broker"))
    for url in (a, b, broker):
        outbox.upgrade(url)
    for _ in range(3):  # each new relay process takes the partitions with a higher epoch
        _write(a)
        assert _relay_once(a, broker, timeout=20)
    _write(b)
    assert _relay_once(b, broker, timeout=5)
    # The fencing path was reached: a's restarts raised its fences to epoch 3, b's stay apart at 1 (#9).
    engine = create_engine(broker)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name, epoch FROM outboxkit_stream_fence")).all()
    engine.dispose()
    epochs: dict[str, set[int]] = {}
    for name, epoch in rows:
        epochs.setdefault(str(name).split(":", 1)[0], set()).add(int(epoch))
    assert sorted(map(frozenset, epochs.values()), key=min) == [frozenset({1}), frozenset({3})]
