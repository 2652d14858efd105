"""outboxkit.testing on a real consumer: SIGKILL at each inbox crash point, recover, each effect once."""

from __future__ import annotations

import signal
import sys

import pytest
import redis
import sqlalchemy as sa

from outboxkit.testing import CRASH_POINTS, CrashHarness, crash_matrix, run_process
from tests._cli import cli_env
from tests._inbox import count_effects, domain, effect, entry

pytestmark = pytest.mark.e2e


def test_crashtest_consumer_applies_each_message_once_through_every_inbox_crash_point(
    pg_url: str, redis_url: str, stream_prefix: str, redis_client: redis.Redis
) -> None:
    """For each inbox crash point: the consumer dies there, a recovery run finishes, every effect exists once."""
    engine = sa.create_engine(pg_url)
    domain.create_all(engine)
    stream = f"{stream_prefix}orders.created"
    argv = [
        sys.executable, "-m", "outboxkit", "consume", "tests.e2e.inbox_app:registry", "--db", pg_url,
        "--broker", redis_url, "--group", "billing", "--consumer-name", "c1", "--stream-prefix", stream_prefix,
        "--lease-ttl", "1", "--claim-idle", "0.5", "--block", "0.2", "--retention", "0", "--once",
    ]  # fmt: skip

    def reset() -> None:
        redis_client.delete(stream)
        with engine.begin() as conn:
            conn.execute(sa.delete(effect))
            conn.execute(sa.text("DELETE FROM outboxkit_inbox"))
        for n in range(3):
            redis_client.xadd(stream, entry(payload={"n": n}, key=f"o-{n}"))

    def check() -> None:
        with engine.connect() as conn:
            ns = sorted(conn.execute(sa.select(effect.c.n)).scalars())
        assert ns == [0, 1, 2], f"effects {ns}"

    points = [p for p in CRASH_POINTS if p.startswith("inbox.")]
    failures = crash_matrix(argv, points=points, reset=reset, check=check, env=cli_env(), timeout=90)
    engine.dispose()
    assert failures == []
    assert count_effects(pg_url) == 3


def test_crashtest_reports_a_point_never_reached() -> None:
    """A command that never passes the crash point is reported, not silently accepted."""
    failures = crash_matrix(
        [sys.executable, "-c", "pass"], points=["inbox.after_commit"], reset=lambda: None, check=lambda: None
    )
    assert failures == ["inbox.after_commit: the process never reached the crash point (exit 0)"]
    with pytest.raises(ValueError, match="unknown crash point"):
        run_process([sys.executable, "-c", "pass"], crash_at="nowhere")


def test_crashtest_fixture_kills_consumer_after_commit_and_recovery_skips_duplicate(
    outboxkit_crash: CrashHarness, pg_url: str, redis_url: str, stream_prefix: str, redis_client: redis.Redis
) -> None:
    """The outboxkit_crash fixture: SIGKILL after commit, the recovery run skips the duplicate (#9)."""
    engine = sa.create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    stream = f"{stream_prefix}orders.created"
    redis_client.xadd(stream, entry(payload={"n": 1}, key="o-1"))
    argv = [
        sys.executable, "-m", "outboxkit", "--log-format", "json", "consume", "tests.e2e.inbox_app:registry",
        "--db", pg_url, "--broker", redis_url, "--group", "billing", "--consumer-name", "c1",
        "--stream-prefix", stream_prefix, "--lease-ttl", "1", "--claim-idle", "0.5", "--block", "0.2",
        "--retention", "0", "--once",
    ]  # fmt: skip
    outboxkit_crash.env = cli_env()
    crashed = outboxkit_crash.crash(argv, "inbox.after_commit")
    assert crashed.returncode == -signal.SIGKILL, crashed.output
    assert count_effects(pg_url) == 1  # committed, never acknowledged
    recovered = outboxkit_crash.recover(argv)
    assert recovered.returncode == 0, recovered.output
    assert count_effects(pg_url) == 1
    assert '"inbox.duplicate_skipped"' in recovered.output
    assert [run.crash_at for run in outboxkit_crash.runs] == ["inbox.after_commit", None]
