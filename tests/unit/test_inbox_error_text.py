"""What a consumer writes into its logs and dead letters about an error carries no payload values."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from inbox._handling import error_text


def test_a_statement_error_loses_its_sql_and_parameters() -> None:
    """SQLAlchemy appends the statement and its parameters: a handler's payload values (soak finding, #17)."""
    orig = Exception("server closed the connection unexpectedly\n\tThis probably means the server terminated")
    exc = OperationalError(
        "INSERT INTO applied (key, seq) VALUES (%(key)s, %(seq)s)", {"key": "SENTINEL-KEY"}, orig
    )
    text = error_text(exc)
    assert text == "OperationalError: server closed the connection unexpectedly"
    assert "SENTINEL-KEY" not in text
    assert "INSERT" not in text


def test_other_errors_keep_their_message() -> None:
    assert error_text(ValueError("card declined")) == "ValueError: card declined"
    assert error_text(RuntimeError()) == "RuntimeError"
