"""redact_url never lets a password through."""

from __future__ import annotations

import pytest

import outbox
from outbox import redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://app:s3cret@db:5432/orders", "postgresql+psycopg://app:***@db:5432/orders"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://relay:s3cret@cache:6380/1", "rediss://relay:***@cache:6380/1"),
        ("sqlite:///app.db", "sqlite:///app.db"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("nats://relay:s3cret@n1:4222,n2:4222,n3", "nats://relay:***@n1:4222,n2:4222,n3"),
        ("nats://s3cret@n1:4222", "nats://***@n1:4222"),  # a user alone is a NATS token
        ("tls://relay:s3cret@n1:4222?ca=/etc/ca.pem", "tls://relay:***@n1:4222?ca=/etc/ca.pem"),
    ],
)
def test_redact_url_masks_password(url: str, expected: str) -> None:
    """The password is replaced by *** and everything else is kept."""
    assert redact_url(url) == expected
    assert "s3cret" not in redact_url(url)


def test_redact_url_handles_percent_encoded_and_odd_urls() -> None:
    """Encoded passwords and unparseable text do not leak either."""
    assert "p%40ss" not in redact_url("postgresql://u:p%40ss@h/db")
    assert "s3cret" not in redact_url("redis://u:s3cret@[::1]:6379")
    assert "s3cret" not in redact_url("redis://u:s3cret@host:notaport/0")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://app@db/orders?password=s3cret",
        "redis://127.0.0.1:6379/0?password=s3cret&ssl_ca_certs=/ca.pem",
        "postgresql://u@h/db?sslmode=require&sslpassword=s3cret",
    ],
)
def test_redact_url_masks_passwords_in_query_parameters(url: str) -> None:
    """Passwords given as query parameters are masked too; other parameters stay."""
    redacted = redact_url(url)
    assert "s3cret" not in redacted
    assert "***" in redacted


def test_redact_text_masks_every_url_password_inside_a_text() -> None:
    """The one URL-password mask, shared by log rendering and driver reasons (#10)."""
    text = "connect to postgresql+psycopg://app:Pw-1@db/x failed; fallback redis://:Pw-2@cache:6379/0 too"
    masked = outbox.redact_text(text)
    assert (
        masked
        == "connect to postgresql+psycopg://app:***@db/x failed; fallback redis://:***@cache:6379/0 too"
    )
    assert outbox.redact_text("no url here: a:b@c") == "no url here: a:b@c"
