"""No log line shows frame locals, payloads or URL passwords (issue #9)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from outbox import publish
from tests._cli import run_cli
from tests.e2e.leaky_app import PASSWORD_SENTINEL

pytestmark = pytest.mark.e2e
CARD_SENTINEL = "4111-sentinel-1111"


def _publish(url: str) -> None:
    engine = sa.create_engine(url)
    with Session(engine) as session, session.begin():
        publish(session, "orders.created", {"card": CARD_SENTINEL}, key="o-1")
    engine.dispose()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_log_handler_failed_hides_locals_payload_and_passwords(
    pg_url: str, redis_url: str, stream_prefix: str, fmt: str
) -> None:
    """A failing handler's traceback keeps file, line and function, never its locals or payload (#9)."""
    _publish(pg_url)
    relayed = run_cli(
        "--log-format", fmt, "relay", "--db", pg_url, "--broker", redis_url,
        "--stream-prefix", stream_prefix, "--once",
    )  # fmt: skip
    assert relayed.returncode == 0, relayed.stderr[-2000:]
    consumed = run_cli(
        "--log-format", fmt, "consume", "tests.e2e.leaky_app:registry", "--db", pg_url,
        "--broker", redis_url, "--group", "billing", "--stream-prefix", stream_prefix,
        "--block", "0.2", "--retention", "0", "--max-deliveries", "1", "--once",
    )  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr[-2000:]
    out = relayed.stdout + relayed.stderr + consumed.stdout + consumed.stderr
    assert "inbox.handler_failed" in out
    assert CARD_SENTINEL not in out
    assert PASSWORD_SENTINEL not in out
    assert "app:***@db.internal" in out  # exception text kept, password masked
    assert "leaky_app.py" in out
    assert "on_order" in out
    if fmt == "json":
        failed = next(
            json.loads(line) for line in consumed.stderr.splitlines() if "inbox.handler_failed" in line
        )
        frames = failed["exception"][0]["frames"]
        assert all("locals" not in frame for frame in frames)
        assert frames[-1]["name"] == "on_order"
