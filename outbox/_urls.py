"""The one message for a database URL SQLAlchemy cannot use (issue #9)."""

from __future__ import annotations

from ._redact import redact_url
from .errors import ConfigError

__all__ = ["invalid_database_url"]

_PSYCOPG_HINT = "use postgresql+psycopg://user:password@host/db (outboxkit ships psycopg 3)"


def invalid_database_url(url: object, exc: BaseException) -> ConfigError:
    """A :class:`ConfigError` for ``url`` naming what to do, never its password."""
    scheme = str(url).partition("://")[0].lower()
    if scheme in {"postgres", "postgresql", "postgresql+psycopg2"}:
        return ConfigError(f"invalid database URL {redact_url(url)}: {_PSYCOPG_HINT}")
    return ConfigError(f"invalid database URL {redact_url(url)}: {type(exc).__name__}")
