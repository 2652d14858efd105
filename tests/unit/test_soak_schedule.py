"""The soak's fault plan picks each broker's own restart fault (#11)."""

from __future__ import annotations

import pytest

from outboxkit.soak import PROFILES
from outboxkit.soak._faults import NATS_NODES, schedule


def test_nats_plan_restarts_a_jetstream_node_and_never_redis() -> None:
    plan = schedule(PROFILES["full"], seed=3, broker="nats_jetstream")
    kinds = [fault.kind for fault in plan]
    assert kinds.count("nats_node_restart") == PROFILES["full"].nats_node_restarts
    assert "redis_restart" not in kinds
    assert {f.target for f in plan if f.kind == "nats_node_restart"} <= set(range(NATS_NODES))


def test_redis_plan_is_unchanged_by_the_broker_choice() -> None:
    """The default broker keeps the plan a seed has always produced (replayable runs)."""
    assert schedule(PROFILES["smoke"], seed=7) == schedule(PROFILES["smoke"], seed=7, broker="redis_streams")
    assert [f.kind for f in schedule(PROFILES["smoke"], seed=7)].count("redis_restart") == 1


def test_a_broker_without_faults_is_refused() -> None:
    with pytest.raises(ValueError, match="sql_table"):
        schedule(PROFILES["smoke"], seed=1, broker="sql_table")
