"""Per-command variables in real processes: `relay` reads OUTBOXKIT_RELAY_*, not the consumer's nor the pre-#10 names."""

from __future__ import annotations

from tests._cli import run_cli


def test_relay_reads_its_own_batch_size_only(sqlite_url: str) -> None:
    """OUTBOXKIT_RELAY_BATCH_SIZE=0 stops the relay; the consumer's variable and the old shared name do not touch it."""
    args = ("relay", "--db", sqlite_url, "--broker", "memory://settings", "--once")
    refused = run_cli(*args, OUTBOXKIT_RELAY_BATCH_SIZE="0")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == "outboxkit: error: batch size must be 1..10000"
    others = run_cli(*args, OUTBOXKIT_CONSUME_BATCH_SIZE="0", OUTBOXKIT_BATCH_SIZE="0")
    assert others.returncode == 0, others.stderr
    # The old name meant two things before #10; now no option reads it, and the program says so (name only).
    assert "outboxkit: warning: unknown environment variable OUTBOXKIT_BATCH_SIZE is ignored" in others.stderr
    assert "OUTBOXKIT_CONSUME_BATCH_SIZE" not in others.stderr
