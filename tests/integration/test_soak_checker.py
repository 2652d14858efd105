"""The soak checker counts each kind of violation it is meant to catch."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from outboxkit.soak import _checker, _schema


def test_soak_checker_counts_lost_phantom_doubled_and_reordered(pg_url: str) -> None:
    """Synthetic ledgers with one loss, one phantom, one double and one reorder are counted exactly."""
    _schema.create(pg_url, keys=2)
    ids = [uuid.uuid4() for _ in range(6)]
    expected = [
        {"event_id": ids[0], "key": "k0", "seq": 1},
        {"event_id": ids[1], "key": "k0", "seq": 2},
        {"event_id": ids[2], "key": "k0", "seq": 3},  # lost
        {"event_id": ids[3], "key": "k1", "seq": 1},
        {"event_id": ids[4], "key": "k1", "seq": 2},
    ]
    applied = [
        {"grp": "g", "event_id": ids[0], "key": "k0", "seq": 1, "pid": 1},
        {"grp": "g", "event_id": ids[1], "key": "k0", "seq": 2, "pid": 1},
        {"grp": "g", "event_id": ids[1], "key": "k0", "seq": 2, "pid": 2},  # doubled (and not increasing)
        {"grp": "g", "event_id": ids[4], "key": "k1", "seq": 2, "pid": 1},
        {"grp": "g", "event_id": ids[3], "key": "k1", "seq": 1, "pid": 1},  # out of order
        {"grp": "g", "event_id": ids[5], "key": "k1", "seq": 9, "pid": 1},  # phantom
    ]
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(_schema.soak_expected.insert(), expected)
        for row in applied:  # one by one: the identity order is the applied order
            conn.execute(_schema.soak_applied.insert().values(**row))
    engine.dispose()
    counts = _checker.count(pg_url)
    assert counts.expected == 5
    assert counts.lost == 1
    assert counts.unexpected == 1
    assert counts.doubled == 1
    assert counts.order_violations == 2  # the double (2 after 2) and the reorder (1 after 2)
    assert _checker.applied_distinct(pg_url) == (5, 5)


def test_soak_checker_clean_ledgers_have_no_violations(pg_url: str) -> None:
    """Ledgers where everything was applied once and in order give zero on every check."""
    _schema.create(pg_url, keys=1)
    rows = [{"event_id": uuid.uuid4(), "key": "k0", "seq": n} for n in range(1, 4)]
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(_schema.soak_expected.insert(), rows)
        for row in rows:
            conn.execute(_schema.soak_applied.insert().values(grp="g", pid=1, **row))
    engine.dispose()
    counts = _checker.count(pg_url)
    assert (counts.lost, counts.unexpected, counts.doubled, counts.order_violations) == (0, 0, 0, 0)
