"""StorageError keeps the driver's reason and SQLSTATE, never values (issue #9)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import inbox
from outbox import StorageError, publish
from outbox._dberrors import driver_reason

PAYLOAD_SENTINEL = "card-sentinel-4242"


@pytest.fixture
def no_grant_url(pg_url: str) -> Iterator[str]:
    """A URL of a login role that may connect but holds no grant on the toolkit's tables."""
    role = f"nogrant_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(pg_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
    yield pg_url.replace("//outboxkit@", f"//{role}@", 1)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP OWNED BY {role}"))
        conn.execute(sa.text(f"DROP ROLE {role}"))
    admin.dispose()


def test_storage_error_publish_keeps_permission_denied_and_sqlstate(no_grant_url: str) -> None:
    """Publishing as a role without INSERT says "permission denied for table outbox" with SQLSTATE 42501 (#9)."""
    engine = sa.create_engine(no_grant_url)
    with Session(engine) as session, pytest.raises(StorageError) as caught:
        publish(session, "orders.created", {"card": PAYLOAD_SENTINEL})
        session.flush()
    engine.dispose()
    text = str(caught.value)
    assert "permission denied for table outbox" in text
    assert "SQLSTATE 42501" in text
    assert PAYLOAD_SENTINEL not in text
    assert "INSERT" not in text


def test_storage_error_inbox_record_keeps_permission_denied(no_grant_url: str) -> None:
    """Recording a message as a role without grants names the refused table and SQLSTATE (#9)."""
    engine = sa.create_engine(no_grant_url)
    with Session(engine) as session, pytest.raises(StorageError) as caught:
        inbox.record_message(session, "billing", uuid.uuid4(), topic="orders.created")
    engine.dispose()
    text = str(caught.value)
    assert "permission denied for table outboxkit_inbox" in text
    assert "SQLSTATE 42501" in text


def test_storage_error_reason_masks_quoted_values_and_detail(pg_url: str) -> None:
    """The driver reason drops DETAIL lines and masks a quoted input value (#9)."""
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
        conn.execute(sa.text("SELECT CAST(:v AS uuid)"), {"v": PAYLOAD_SENTINEL})
    engine.dispose()
    reason = driver_reason(caught.value)
    assert reason == 'invalid input syntax for type uuid: "***" (SQLSTATE 22P02)'
