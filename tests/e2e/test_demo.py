"""`outboxkit demo`, run as a real program: it exits 0 when consistent, and its check catches planted bugs."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests._cli import REPO_ROOT, cli_env, run_cli
from tests._servers import PostgresAdmin, RedisEndpoint

pytestmark = pytest.mark.e2e

# Shorter waits than the defaults keep the suite fast; the story is the same.
FAST = ("--step-timeout", "2", "--pace", "0.2", "--timeout", "90")
OUTCOMES = {
    "#1001": "confirmed",  # success
    "#1002": "cancelled",  # payment declined
    "#1003": "cancelled",  # out of stock
    "#1004": "confirmed",  # relay crash, recovered
    "#1005": "cancelled",  # payment never answers: timeout
}


def _status(stdout: str, order: str) -> str:
    """The result column of ``order`` in the summary table."""
    (line,) = [line for line in stdout.splitlines() if line.startswith(f"  {order} ")]
    words = line.split()
    return next(w for w in words if w in {"confirmed", "cancelled", "pending", "missing"})


@pytest.mark.parametrize("style", ["orchestrated", "choreographed"])
def test_demo_default_run_exits_0_with_every_outcome(style: str) -> None:
    """The embedded default shows each outcome, the relay crash and its skipped duplicate, and ends consistent."""
    result = run_cli("demo", "--style", style, *FAST, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert {order: _status(out, order) for order in OUTCOMES} == OUTCOMES
    assert "crashed after the broker took" in out
    assert "restarted" in out
    assert "skipped a duplicate" in out
    assert "All consistent" in out
    assert "\x1b[" not in out  # no colour when stdout is not a terminal
    for line in ("money charged = money of confirmed orders", "no order left pending"):
        assert line in out


@pytest.mark.parametrize(
    ("fault", "failing"),
    [
        ("skip-refund", "money charged = money of confirmed orders"),
        ("skip-release", "stock reserved = items of confirmed orders"),
    ],
)
def test_demo_planted_bug_fails_the_check_with_exit_1(fault: str, failing: str) -> None:
    """A participant that only pretends to compensate is caught by the check computed from the databases."""
    result = run_cli("demo", "--fault", fault, *FAST, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert failing in result.stderr
    assert "FAILED" in result.stdout
    assert "All consistent" not in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--orders", "0"], "--orders must be at least 1"),
        (["--decline-rate", "1.5"], "--decline-rate must be between 0 and 1"),
        (["--db", "sqlite:///x.db"], "--db must be a PostgreSQL server URL"),
        (["--style", "telepathic"], "--style"),
    ],
)
def test_demo_bad_option_exits_2_with_one_line(args: list[str], expected: str) -> None:
    """Wrong options are one line on stderr and exit status 2."""
    result = run_cli("demo", *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("broker", ["redis", "sql-table"])
def test_demo_on_postgresql_exits_0_and_cleans_up(
    pg_server: PostgresAdmin, redis_server: RedisEndpoint, broker: str
) -> None:
    """With --db (a PostgreSQL server) and Redis or the SQL-table broker the run is consistent and drops its databases."""
    brokers = ("--broker", redis_server.url) if broker == "redis" else ()
    result = run_cli("demo", "--orders", "8", "--db", pg_server.url("postgres"), *brokers, *FAST, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All consistent" in result.stdout
    with pg_server.connect() as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'outboxkit_demo_%'"
        ).fetchall()
    assert left == []


def test_demo_dashboard_serves_the_runs_sagas_until_sigterm() -> None:
    """`demo --dashboard` keeps the run's data and serves it: the compensated sagas' timelines load; SIGTERM ends it with 0 (#14)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "outboxkit", "demo", "--dashboard", "--dashboard-port", "0", *FAST],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 110
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the demo ended before serving the dashboard"
            if match := re.search(r"Dashboard of the order service on (http://127\.0\.0\.1:\d+/)", line):
                url = match.group(1)
        assert url is not None
        with urllib.request.urlopen(f"{url}sagas?state=compensated", timeout=10) as response:
            page = response.read().decode()
        saga_ids = re.findall(r'href="/sagas/([0-9a-f-]{36})"', page)
        assert len(saga_ids) >= 3  # declined card, out of stock, payment timeout
        with urllib.request.urlopen(f"{url}sagas/{saga_ids[0]}", timeout=10) as response:
            assert '<svg id="timeline"' in response.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "All consistent" in out
