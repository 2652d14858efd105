"""The soak's smoke profile inside the normal suite: real processes, real faults, a real checker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.soak import run_with_local_servers


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_soak_smoke_holds_every_guarantee(tmp_path: Path) -> None:
    """~10k events under SIGKILLs, a SIGSTOP, a Redis restart and network partitions: nothing lost, doubled or reordered."""
    verdict = run_with_local_servers("smoke", seed=7, out=tmp_path)
    report = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict.ok, report["violations"]
    assert verdict.counts is not None
    assert verdict.counts.expected >= 10_000
    assert verdict.counts.lost == verdict.counts.doubled == verdict.counts.order_violations == 0
    assert verdict.faults.get("relay_kill", 0) >= 1
    assert verdict.faults.get("redis_restart", 0) == 1
    for network in ("relay_broker_partition", "relay_db_partition", "consumer_db_partition", "relay_half_open",
                    "slow_links"):  # fmt: skip
        assert verdict.faults.get(network, 0) == 1, verdict.faults
    assert verdict.faults.get("link_drop", 0) >= 1
    assert verdict.drain_seconds is not None
    assert not verdict.secret_leaks
    assert all(code == 0 for code in verdict.stop_exit_codes.values()), verdict.stop_exit_codes


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(
    os.environ.get("OUTBOXKIT_NATS_LONG") != "1",
    reason="long variant: OUTBOXKIT_NATS_LONG=1 (docs/testing.md)",
)
def test_soak_smoke_on_nats_holds_every_guarantee(tmp_path: Path) -> None:
    """The smoke profile on a 3-node JetStream cluster, a node SIGKILLed and restarted: nothing lost, doubled or reordered.

    ~5 min on a loaded 2-core machine (docs/reliability.md), so outside the default suite.
    """
    verdict = run_with_local_servers("smoke", seed=7, out=tmp_path, broker="nats")
    report = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict.ok, report["violations"]
    assert verdict.counts is not None
    assert verdict.counts.expected >= 10_000
    assert verdict.counts.lost == verdict.counts.doubled == verdict.counts.order_violations == 0
    assert verdict.faults.get("relay_kill", 0) >= 1
    assert verdict.faults.get("nats_node_restart", 0) == 1
    assert "redis_restart" not in verdict.faults
    assert verdict.drain_seconds is not None
    assert not verdict.secret_leaks
    assert all(code == 0 for code in verdict.stop_exit_codes.values()), verdict.stop_exit_codes
