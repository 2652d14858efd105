"""Query-string and form values the pages accept, checked before any query runs.

Every value is bounded: an oversized or malformed one is a 400 page, never a
query. Values go to the database as bound parameters only.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.datastructures import ImmutableMultiDict

__all__ = [
    "MAX_IDS",
    "MAX_TEXT",
    "BadInput",
    "LetterFilter",
    "parse_ids",
    "parse_letter_filter",
    "parse_uuid",
]

MAX_TEXT = 200  # longer than any topic (249 is the broker's limit, nobody types that) or search
MAX_IDS = 500  # one confirmation page; more is a job for the CLI
_MAX_AGE_S = 10 * 365 * 86400.0


class BadInput(ValueError):  # noqa: N818 - shown to the user as "bad input"
    """A query or form value the page cannot use (shown as a 400 page)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class LetterFilter:
    """What the dead-letter lists are narrowed to."""

    topic: str | None = None
    key: str | None = None
    error: str | None = None
    group: str | None = None
    older_than: dt.timedelta | None = None
    newer_than: dt.timedelta | None = None
    include_retried: bool = False

    def query(self) -> dict[str, str]:
        """The filter as query-string values (to link back to the same list)."""
        values = {"topic": self.topic, "key": self.key, "error": self.error, "group": self.group}
        found = {k: v for k, v in values.items() if v is not None}
        if self.older_than is not None:
            found["older_than"] = f"{self.older_than.total_seconds():g}"
        if self.newer_than is not None:
            found["newer_than"] = f"{self.newer_than.total_seconds():g}"
        if self.include_retried:
            found["retried"] = "1"
        return found


def _text(params: ImmutableMultiDict[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value.strip() == "":
        return None
    if len(value) > MAX_TEXT:
        raise BadInput(f"the {name} filter is longer than {MAX_TEXT} characters")
    if "\x00" in value:
        raise BadInput(f"the {name} filter contains a NUL character")
    return value.strip()


def _age(params: ImmutableMultiDict[str, str], name: str) -> dt.timedelta | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise BadInput(f"{name} must be a number of seconds") from None
    if not 0 <= seconds <= _MAX_AGE_S:  # also refuses nan and inf
        raise BadInput(f"{name} must be between 0 and {_MAX_AGE_S:g} seconds")
    return dt.timedelta(seconds=seconds)


def parse_letter_filter(params: ImmutableMultiDict[str, str]) -> LetterFilter:
    """The filter in a dead-letter page's query string."""
    return LetterFilter(
        topic=_text(params, "topic"),
        key=_text(params, "key"),
        error=_text(params, "error"),
        group=_text(params, "group"),
        older_than=_age(params, "older_than"),
        newer_than=_age(params, "newer_than"),
        include_retried=params.get("retried") == "1",
    )


def parse_ids(values: Iterable[str]) -> list[int]:
    """Dead-letter ids from a form or query string: at least one, at most :data:`MAX_IDS`, all integers."""
    ids: list[int] = []
    for value in values:
        if len(value) > 20 or not value.strip().isdigit():  # noqa: PLR2004 - the digits of a 64-bit id
            raise BadInput(f"{value[:40]!r} is not a dead-letter id")
        ids.append(int(value))
        if len(ids) > MAX_IDS:
            raise BadInput(f"at most {MAX_IDS} dead letters at once; use the CLI for more")
    if not ids:
        raise BadInput("no dead letter selected")
    return sorted(set(ids))


def parse_uuid(value: str, what: str = "saga id") -> uuid.UUID:
    """A UUID from a path or form, or :class:`BadInput`."""
    if len(value) > 64:  # noqa: PLR2004 - a UUID in any accepted form is shorter
        raise BadInput(f"that is not a {what} (a UUID)")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadInput(f"{value[:40]!r} is not a {what} (a UUID)") from None
