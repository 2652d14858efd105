"""An orchestrator process killed with SIGKILL mid-transition leaves no trace; the redelivered message resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

import saga
from tests._cli import REPO_ROOT, cli_env
from tests._saga import (
    INVENTORY,
    PAYMENT,
    answer,
    deliver,
    instance,
    kinds,
    last,
    make_engine,
    messages,
    orchestrator,
    order_status,
    start,
)

# The orchestrator's consumer, reduced to its transaction: handle one message and commit.
_HANDLE = """
import sys, uuid
from tests._saga import deliver, make_engine, messages, orchestrator
engine = make_engine(sys.argv[1])
(message,) = [m for m in messages(engine) if m.id == uuid.UUID(sys.argv[2])]
deliver(engine, orchestrator(), message)
print("committed")
"""


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _handle_in_process(url: str, message_id: uuid.UUID, crash_at: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _HANDLE, url, str(message_id)],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(OUTBOXKIT_CRASH_AT=crash_at),
        cwd=REPO_ROOT,
        check=False,
    )


def _snapshot(engine: sa.Engine, saga_id: uuid.UUID) -> tuple[object, ...]:
    return (instance(engine, saga_id), [m.id for m in messages(engine)], kinds(engine, saga_id))


def test_saga_sigkill_after_transition_then_redelivery_completes(db_url: str, engine: sa.Engine) -> None:
    """Killed after the transition was written but before COMMIT: nothing persisted; the retry completes once."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-k1")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    reply = answer(engine, last(engine, PAYMENT), data={"payment_id": "p-1"})
    before = _snapshot(engine, saga_id)
    result = _handle_in_process(db_url, reply.id, "saga.after_transition")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "committed" not in result.stdout
    assert _snapshot(engine, saga_id) == before
    assert order_status(engine, "o-k1") == "pending"
    assert deliver(engine, orch, reply).state is saga.SagaState.COMPLETED
    assert order_status(engine, "o-k1") == "approved"
    assert kinds(engine, saga_id).count(("local_done", 3)) == 1


def test_saga_sigkill_during_compensation_then_redelivery_compensates_once(
    db_url: str, engine: sa.Engine
) -> None:
    """Killed while issuing a compensation: no compensation was sent; the retry sends it exactly once."""
    orch = orchestrator()
    saga_id = start(engine, orch, order_id="o-k2")
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    declined = answer(engine, last(engine, PAYMENT), ok=False, reason="declined")
    before = _snapshot(engine, saga_id)
    result = _handle_in_process(db_url, declined.id, "saga.during_compensation")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _snapshot(engine, saga_id) == before
    assert [m.type for m in messages(engine, INVENTORY)] == ["ReserveStock"]
    deliver(engine, orch, declined)
    deliver(engine, orch, answer(engine, last(engine, INVENTORY)))
    assert instance(engine, saga_id).state is saga.SagaState.COMPENSATED
    assert [m.type for m in messages(engine, INVENTORY)] == ["ReserveStock", "ReleaseStock"]
    assert order_status(engine, "o-k2") == "cancelled"
