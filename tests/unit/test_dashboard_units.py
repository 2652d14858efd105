"""Dashboard pieces without I/O (issue 14): filter parsing bounds, the timeline's layout, the session guard."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from starlette.datastructures import ImmutableMultiDict

import saga
from outbox import ConfigError
from outboxkit.dashboard import DashboardConfig
from outboxkit.dashboard._filters import MAX_IDS, BadInput, parse_ids, parse_letter_filter, parse_uuid
from outboxkit.dashboard._timeline import lay_out


def _entry(n: int, kind: saga.StepLogKind, step: int | None, error: str | None = None) -> saga.StepLogEntry:
    return saga.StepLogEntry(
        id=n, saga_id=uuid.UUID(int=1), step=step, step_name=None if step is None else f"s{step}", attempt=1,
        kind=kind, message_id=None, detail=None, error=error,
        created_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=n),
    )  # fmt: skip


def test_dashboard_timeline_lanes_follow_steps_and_tones_say_what_happened() -> None:
    """One lane per step plus the saga's; a refused reply is red, a compensation orange; offsets from the start."""
    k = saga.StepLogKind
    picture = lay_out([
        _entry(0, k.STARTED, None), _entry(1, k.COMMAND_SENT, 1), _entry(2, k.REPLY_RECEIVED, 1, error="no"),
        _entry(3, k.COMPENSATING, None), _entry(4, k.COMPENSATED, 0), _entry(5, k.SAGA_COMPENSATED, None),
    ])  # fmt: skip
    assert [label for _, label in picture.lanes] == ["saga", "0 s0", "1 s1"]
    assert [m.tone for m in picture.markers] == ["send", "send", "fail", "undo", "undo", "undo"]
    assert [m.label for m in picture.markers][2] == "refused"
    assert picture.markers[5].offset == "+5.0s"
    assert len({m.x for m in picture.markers}) == 6  # one column per row
    assert picture.markers[1].y > picture.markers[0].y  # step lanes below the saga lane
    assert picture.path.startswith("M")
    assert lay_out([]).markers == []


def test_dashboard_filters_are_bounded_and_typed() -> None:
    """Oversized, NUL-bearing and non-numeric values are BadInput; good ones parse."""
    ok = parse_letter_filter(ImmutableMultiDict({"topic": " orders ", "older_than": "60", "retried": "1"}))
    assert (ok.topic, ok.older_than, ok.include_retried) == ("orders", dt.timedelta(seconds=60), True)
    for bad in ({"topic": "x" * 201}, {"key": "a\x00b"}, {"older_than": "-1"}, {"newer_than": "inf"},
                {"older_than": "1e99"}, {"older_than": "ten"}):  # fmt: skip
        with pytest.raises(BadInput):
            parse_letter_filter(ImmutableMultiDict(bad))
    assert parse_ids(["3", "1", "3"]) == [1, 3]
    for ids in ([], ["1;DROP"], ["9" * 30], [str(n) for n in range(MAX_IDS + 1)]):
        with pytest.raises(BadInput):
            parse_ids(ids)
    assert parse_uuid(str(uuid.UUID(int=5))) == uuid.UUID(int=5)
    with pytest.raises(BadInput):
        parse_uuid("x" * 100)


def test_dashboard_config_refuses_a_short_token_and_negative_refresh() -> None:
    """A guessable token or a negative refresh is a ConfigError before anything listens."""
    with pytest.raises(ConfigError, match="at least 16"):
        DashboardConfig(db_url="sqlite://", token="short")
    with pytest.raises(ConfigError, match="refresh"):
        DashboardConfig(db_url="sqlite://", refresh_s=-1)
    assert len(DashboardConfig(db_url="sqlite://").token) >= 16
    assert "s3cret" not in repr(DashboardConfig(db_url="sqlite://", token="s3cret-s3cret-s3cret"))
