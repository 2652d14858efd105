"""A soak writer process: transactions of 1-5 events, some rolled back, some held open.

    python -m outboxkit.soak.writer URL WRITER_ID EVENTS KEYS RATE SEED ROLLBACK HOLD HOLD_MIN HOLD_MAX

Each event takes the next per-key sequence number under the key's row lock,
publishes through the outbox and records itself in ``soak_expected`` in the
same transaction, so the ledger holds exactly the committed events. Database
outages are retried with a fresh transaction; a commit whose outcome is
unknown is not counted, and the ledger stays truthful either way.
"""

from __future__ import annotations

import json
import random
import sys
import time
import uuid

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from outbox import publish
from outboxkit.soak._schema import soak_expected, soak_key
from outboxkit.soak.handlers import TOPIC

_MAX_EVENTS_PER_TX = 5


def _transaction(session: Session, rng: random.Random, keys: int) -> int:
    count = rng.randint(1, _MAX_EVENTS_PER_TX)
    # Lock keys in sorted order so concurrent writers never deadlock.
    chosen = sorted(f"k{rng.randrange(keys)}" for _ in range(count))
    for key in chosen:
        seq = session.execute(
            sa.update(soak_key)
            .where(soak_key.c.key == key)
            .values(seq=soak_key.c.seq + 1)
            .returning(soak_key.c.seq)
        ).scalar_one()
        event_id = uuid.uuid4()
        publish(session, TOPIC, {"event_id": str(event_id), "key": key, "seq": seq}, key=key)
        session.execute(soak_expected.insert().values(event_id=event_id, key=key, seq=seq))
    return count


def run(
    url: str, writer_id: int, events: int, keys: int, rate: float, seed: int, knobs: tuple[float, ...]
) -> dict[str, int]:
    """Write ``events`` committed events at about ``rate`` per second; return counters."""
    rollback_ratio, hold_ratio, hold_min, hold_max = knobs
    rng = random.Random(seed * 1000 + writer_id)  # noqa: S311 - a replayable workload, not a secret
    engine = sa.create_engine(url, pool_pre_ping=True)
    stats = {"committed_events": 0, "rolled_back_tx": 0, "held_tx": 0, "failed_tx": 0}
    started = time.monotonic()
    while stats["committed_events"] < events:
        due = started + stats["committed_events"] / rate
        if (delay := due - time.monotonic()) > 0:
            time.sleep(delay)
        try:
            with Session(engine) as session:
                count = _transaction(session, rng, keys)
                if rng.random() < rollback_ratio:
                    session.rollback()
                    stats["rolled_back_tx"] += 1
                    continue
                if rng.random() < hold_ratio:
                    stats["held_tx"] += 1
                    time.sleep(rng.uniform(hold_min, hold_max))  # the visibility gap
                session.commit()
                stats["committed_events"] += count
        except DBAPIError:
            stats["failed_tx"] += 1
            engine.dispose()
            time.sleep(rng.uniform(0.2, 1.0))
    engine.dispose()
    return stats


def main(argv: list[str]) -> int:
    """Parse the positional arguments, write, print the counters as JSON."""
    url, writer_id, events, keys, rate, seed = (
        argv[0],
        int(argv[1]),
        int(argv[2]),
        int(argv[3]),
        float(argv[4]),
        int(argv[5]),
    )
    knobs = tuple(float(v) for v in argv[6:10])
    stats = run(url, writer_id, events, keys, rate, seed, knobs)
    sys.stdout.write(json.dumps({"writer": writer_id, **stats}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
