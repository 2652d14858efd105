"""What a driver error means, safe to show: its reason, and whether it is a missing table.

:func:`driver_reason` gives the message and SQLSTATE, no values (issue #9).

psycopg's primary message (``diag.message_primary``) leaves out DETAIL and
CONTEXT, which quote row values (``Key (id)=(42) already exists``, the failing
row of a NOT NULL violation); SQLAlchemy's own text adds the SQL and its
parameters, so only the driver exception is read. Values some primary
messages quote (``invalid input syntax for type uuid: "..."``) and URL
passwords are masked.
"""

from __future__ import annotations

import re

from ._redact import redact_text

__all__ = ["driver_reason", "is_missing_table"]

# PostgreSQL's undefined_table (psycopg's UndefinedTable).
_UNDEFINED_TABLE = "42P01"

_QUOTED_VALUE = re.compile(r': "[^"]*"$')


def driver_reason(exc: BaseException) -> str:
    """``"permission denied for table outbox (SQLSTATE 42501)"`` for a driver error or its wrapper."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    text = str(primary or orig).strip()
    first = text.splitlines()[0].strip() if text else ""
    first = redact_text(_QUOTED_VALUE.sub(': "***"', first))
    sqlstate = getattr(orig, "sqlstate", None)
    reason = first or type(orig).__name__
    return f"{reason} (SQLSTATE {sqlstate})" if sqlstate else reason


def is_missing_table(exc: BaseException) -> bool:
    """Whether a driver error (or SQLAlchemy's wrapper of it) says a table does not exist.

    The one test for it, on PostgreSQL by SQLSTATE 42P01 (the message is
    translated with ``lc_messages``) and on SQLite by its only signal, the
    text ``no such table``. A missing *database* is not a missing table.

    .. versionadded:: 0.1
    """
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) == _UNDEFINED_TABLE:
        return True
    text = str(orig).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)
