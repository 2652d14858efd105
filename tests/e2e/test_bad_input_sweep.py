"""The bad-input sweep: every boundary gets garbage and answers with one clear error or a dead letter.

Boundaries: publish arguments, stream entries, command-line flags and URLs,
table and schema names shaped like SQL injection. Each case checks the user's
view — the typed exception, the dead letter's reason, the single stderr line
and exit status 2 — and that nothing already committed was lost.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

import inbox
from outbox import Message, OutboxError, ValidationError, publish, publish_many
from tests._cli import run_cli
from tests._inbox import domain, entry

pytestmark = pytest.mark.e2e

INJECTION_NAMES = [
    "outbox; DROP TABLE users",
    'outbox" --',
    "outbox'/*",
    "Robert'); DROP TABLE students;--",
    "a" * 80,
]

BAD_PUBLISH_ARGUMENTS = [
    pytest.param({"topic": None}, id="topic-none"),
    pytest.param({"topic": 42}, id="topic-int"),
    pytest.param({"topic": ""}, id="topic-empty"),
    pytest.param({"topic": "ünïcode"}, id="topic-unicode"),
    pytest.param({"topic": "a\x00b"}, id="topic-nul"),
    pytest.param({"topic": "x" * 10_000}, id="topic-huge"),
    pytest.param({"key": b"bytes"}, id="key-bytes"),
    pytest.param({"key": "k\x00"}, id="key-nul"),
    pytest.param({"key": "\udc80"}, id="key-lone-surrogate"),
    pytest.param({"key": "k" * 100_000}, id="key-huge"),
    pytest.param({"type": 7}, id="type-int"),
    pytest.param({"type": "t\x00"}, id="type-nul"),
    pytest.param({"headers": {"a": None}}, id="header-none"),
    pytest.param({"headers": {1: "a"}}, id="header-int-name"),
    pytest.param({"headers": {"": "a"}}, id="header-empty-name"),
    pytest.param({"headers": "a=b"}, id="headers-str"),
    pytest.param({"payload": {"v": math.inf}}, id="payload-inf"),
    pytest.param({"payload": {"v": -math.nan}}, id="payload-nan"),
    pytest.param({"payload": {"v": "\x00"}}, id="payload-nul"),
    pytest.param({"payload": {"\udfff": 1}}, id="payload-lone-surrogate-key"),
    pytest.param({"payload": {"v": b"\xff"}}, id="payload-bytes"),
    pytest.param({"payload": {"v": {1, 2j}}}, id="payload-complex"),
    pytest.param({"payload": "é" * 600_000}, id="payload-over-1-mib-in-utf8"),
    pytest.param({"delay": 5}, id="delay-int"),
    pytest.param({"available_at": "tomorrow"}, id="available-at-str"),
    pytest.param({"delay": dt.timedelta(1), "available_at": dt.datetime.now(dt.UTC)}, id="delay-and-at"),
]


@pytest.mark.parametrize("bad", BAD_PUBLISH_ARGUMENTS)
def test_sweep_publish_arguments_raise_typed_errors_and_keep_committed_rows(
    db_url: str, bad: dict[str, object]
) -> None:
    """Each bad argument raises a ValidationError (a ValueError); earlier committed events stay; the session goes on."""
    engine = sa.create_engine(db_url)
    with Session(engine) as session, session.begin():
        publish(session, "orders.created", {"committed": True})
    args: dict[str, object] = {"topic": "orders.created", "payload": {"ok": 1}, **bad}
    with Session(engine) as session, session.begin():
        with pytest.raises(ValidationError) as info:
            publish(session, **args)  # type: ignore[call-overload]
        assert isinstance(info.value, ValueError)
        assert str(info.value)  # a message, not an empty error
        publish(session, "orders.created", {"after": True})
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one() == 2
    engine.dispose()


def test_sweep_publish_many_rejects_non_messages(sqlite_url: str) -> None:
    """publish_many with wrong element types refuses the whole call before writing."""
    engine = sa.create_engine(sqlite_url)
    with Session(engine) as session, session.begin():
        for bad in ("not a list", [{"topic": "t"}], [Message(topic="t", payload=1), None]):
            with pytest.raises(ValidationError):
                publish_many(session, bad)  # type: ignore[call-overload]
    engine.dispose()


GARBAGE_ENTRIES = [
    pytest.param({"data": "{}"}, "missing field", id="missing-fields"),
    pytest.param({**entry(), "data": "{not json"}, "not valid JSON", id="bad-json"),
    pytest.param({**entry(), "id": "42"}, "not a UUID", id="bad-id"),
    pytest.param({**entry(), "time": "yesterday"}, "RFC 3339", id="bad-time"),
    pytest.param({**entry(), "specversion": "0.3"}, "specversion", id="wrong-spec"),
    pytest.param({**entry(), "headers": "[1, 2]"}, "headers", id="headers-not-object"),
]


def test_sweep_stream_entries_are_dead_lettered_with_reasons(
    pg_url: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """Malformed, mistyped, non-UTF-8 and oversized entries each become a dead letter with its reason; good ones are handled."""
    engine = sa.create_engine(pg_url)
    domain.create_all(engine)
    stream = f"{stream_prefix}orders.created"
    expected_reasons = []
    for param in GARBAGE_ENTRIES:
        fields, reason = param.values
        redis_client.xadd(stream, fields)  # type: ignore[arg-type]
        expected_reasons.append(reason)
    redis_client.xadd(stream, {**entry(), "data": b"\xff\xfe\xfd"})  # type: ignore[dict-item]
    expected_reasons.append("not valid UTF-8")
    redis_client.xadd(stream, {**entry(), "data": json.dumps("x" * 2_000_000)})  # oversize but valid: handled
    redis_client.xadd(stream, entry(payload={"n": 1}, key="good"))
    result = run_cli(
        "consume", "tests.e2e.inbox_app:registry", "--db", pg_url, "--broker", redis_url, "--group", "billing",
        "--stream-prefix", stream_prefix, "--block", "0.2", "--retention", "0", "--once", timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    letters = inbox.select_dead_letters(engine, consumer="billing")
    assert len(letters) == len(expected_reasons)
    for letter, reason in zip(sorted(letters, key=lambda d: d.entry_id), expected_reasons, strict=True):
        assert reason in letter.error, (reason, letter.error)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM test_effect")).scalar_one() == 2
    assert redis_client.xpending(stream, "billing")["pending"] == 0  # everything acknowledged
    engine.dispose()


BAD_COMMAND_LINES = [
    pytest.param(["relay", "--db", "not a url", "--broker", "redis://127.0.0.1:1/0"], id="relay-db-garbage"),
    pytest.param(
        ["relay", "--db", "mysql://u@h/db", "--broker", "redis://127.0.0.1:1/0"], id="relay-db-wrong-scheme"
    ),
    pytest.param(
        ["relay", "--db", "{sqlite}", "--broker", "amqp://broker:5672"], id="relay-broker-wrong-scheme"
    ),
    pytest.param(["relay", "--db", "{sqlite}", "--broker", "redis://[::1"], id="relay-broker-malformed"),
    pytest.param(
        [
            "relay",
            "--db",
            "postgresql+psycopg://u:SECRET-1@127.0.0.1:1/db",
            "--broker",
            "redis://127.0.0.1:1/0",
            "--once",
        ],
        id="relay-db-unreachable",
    ),
    pytest.param(
        ["relay", "--db", "{sqlite}", "--broker", "redis://127.0.0.1:1/0", "--batch-size", "-5"],
        id="relay-negative-batch",
    ),
    pytest.param(
        ["relay", "--db", "{sqlite}", "--broker", "redis://127.0.0.1:1/0", "--batch-size", "many"],
        id="relay-batch-not-int",
    ),
    pytest.param(
        ["relay", "--db", "{sqlite}", "--broker", "redis://127.0.0.1:1/0", "--topic-partitions", "orders=x"],
        id="relay-bad-partitions",
    ),
    pytest.param(
        ["relay", "--db", "{sqlite}", "--broker", "redis://127.0.0.1:1/0", "--on-dead-letter", "drop"],
        id="relay-bad-on-dead-letter",
    ),
    pytest.param(
        ["relay", "--db", "{sqlite}", "--broker", "redis://127.0.0.1:1/0", "--table", INJECTION_NAMES[0]],
        id="relay-table-injection",
    ),
    pytest.param(
        ["relay", "--db", "{sqlite}", "--broker", "redis://127.0.0.1:1/0", "--schema", INJECTION_NAMES[1]],
        id="relay-schema-injection",
    ),
    pytest.param(["relay"], id="relay-no-urls"),
    pytest.param(
        [
            "consume",
            "tests.e2e.inbox_app:registry",
            "--db",
            "mysql://u@h/db",
            "--broker",
            "{sqlite}",
            "--group",
            "g",
        ],
        id="consume-db-no-driver",
    ),
    pytest.param(["status", "--db", "oracle://u:SECRET-1@h/db"], id="status-db-no-driver"),
    pytest.param(["migrate", "--db", "mssql+pyodbc://u@h/db"], id="migrate-db-no-driver"),
    pytest.param(
        ["consume", "no.such.module:registry", "--db", "{sqlite}", "--broker", "{sqlite}", "--group", "g"],
        id="consume-bad-target",
    ),
    pytest.param(
        ["consume", "tests.e2e.inbox_app", "--db", "{sqlite}", "--broker", "{sqlite}", "--group", "g"],
        id="consume-target-no-colon",
    ),
    pytest.param(
        ["consume", "tests.e2e.inbox_app:registry", "--db", "{sqlite}", "--broker", "{sqlite}"],
        id="consume-no-group",
    ),
    pytest.param(
        [
            "consume",
            "tests.e2e.inbox_app:registry",
            "--db",
            "{sqlite}",
            "--broker",
            "{sqlite}",
            "--group",
            "g",
            "--on-dead-letter",
            "drop",
        ],
        id="consume-bad-on-dead-letter",
    ),
    pytest.param(
        [
            "consume",
            "tests.e2e.inbox_app:registry",
            "--db",
            "{sqlite}",
            "--broker",
            "{sqlite}",
            "--group",
            "g",
            "--max-deliveries",
            "0",
        ],
        id="consume-zero-deliveries",
    ),
    pytest.param(["status", "--db", "{sqlite}", "--table", INJECTION_NAMES[3]], id="status-table-injection"),
    pytest.param(["status", "--db", "sqlite:///{tmp}/missing/dir/x.db"], id="status-missing-file"),
    pytest.param(
        ["migrate", "--db", "{sqlite}", "--schema", INJECTION_NAMES[2]], id="migrate-schema-injection"
    ),
    pytest.param(["migrate", "--db", "{sqlite}", "--table", INJECTION_NAMES[4]], id="migrate-table-too-long"),
    pytest.param(
        ["dead-letters", "list", "--db", "{sqlite}", "--table", INJECTION_NAMES[0]],
        id="dead-letters-injection",
    ),
    pytest.param(["saga", "show", "not-a-uuid", "--db", "{sqlite}"], id="saga-bad-id"),
    pytest.param(["--log-level", "loud", "status", "--db", "{sqlite}"], id="bad-log-level"),
]


@pytest.mark.parametrize("argv", BAD_COMMAND_LINES)
def test_sweep_command_line_errors_are_one_line_exit_2(
    argv: list[str], sqlite_url: str, tmp_path: object
) -> None:
    """Every bad flag, URL or name: exit status 2, one line on stderr, no traceback, no password, tables intact."""
    args = [a.replace("{sqlite}", sqlite_url).replace("{tmp}", str(tmp_path)) for a in argv]
    result = run_cli(*args, timeout=90)
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # JSON log events aside
    assert result.returncode == 2, result.stderr[-1500:]
    assert len(lines) == 1, result.stderr[-1500:]
    assert lines[0].startswith("outboxkit: error:")
    assert "Traceback" not in result.stderr
    assert "SECRET-1" not in result.stderr + result.stdout
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:  # nothing was dropped or changed by the injection-shaped names
        assert {"outbox", "outbox_dead_letter"} <= set(sa.inspect(conn).get_table_names())
    engine.dispose()


def test_sweep_library_errors_share_one_root() -> None:
    """Every error a user can catch from the toolkit derives from OutboxError."""
    import outbox.errors  # noqa: PLC0415

    exported = {n: getattr(outbox.errors, n) for n in outbox.errors.__all__}
    # The module also exports the hint text and the one helper that builds the missing-tables error.
    classes = {n: v for n, v in exported.items() if n not in {"MIGRATE_HINT", "tables_missing"}}
    assert isinstance(outbox.errors.tables_missing("the outbox table", None), OutboxError)
    assert len(classes) >= 10
    for name, cls in classes.items():
        assert isinstance(cls, type), name
        assert issubclass(cls, OutboxError), name
