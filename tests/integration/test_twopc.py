"""The 2PC baseline on real PostgreSQL: commit, a "no" vote, a SIGKILLed coordinator, idempotent recovery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from outbox import ConfigError
from outboxkit.twopc import TwoPhaseCoordinator, VoteNo, conninfo, create_log, read_decision, recover
from tests._db import unique_database_name
from tests._servers import PostgresAdmin, PostgresServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dbs(pg_server: PostgresAdmin) -> Iterator[dict[str, str]]:
    names = {role: unique_database_name() for role in ("log", "a", "b")}
    urls = {role: pg_server.create_database(name) for role, name in names.items()}
    for role in ("a", "b"):
        with psycopg.connect(conninfo(urls[role]), autocommit=True) as conn:
            conn.execute("CREATE TABLE item (name text)")
    yield urls
    for url in urls.values():  # a failed test may leave prepared transactions: drop would wait on them
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            for (gid,) in conn.execute(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()"
            ).fetchall():
                conn.execute(f"ROLLBACK PREPARED '{gid}'")
    for name in names.values():
        pg_server.drop_database(name)


def _count(url: str) -> int:
    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute("SELECT count(*) FROM item").fetchone()
    assert row is not None
    return int(row[0])


def _prepared(url: str) -> int:
    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _insert(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO item (name) VALUES ('x')")


def _refuse(conn: psycopg.Connection) -> None:
    raise VoteNo("card declined")


def _coordinator(dbs: dict[str, str]) -> TwoPhaseCoordinator:
    with psycopg.connect(conninfo(dbs["log"]), autocommit=True) as log:
        create_log(log)
    return TwoPhaseCoordinator(dbs["log"], {"a": dbs["a"], "b": dbs["b"]})


def test_commit_reaches_every_participant(dbs: dict[str, str]) -> None:
    outcome = _coordinator(dbs).run({"a": _insert, "b": _insert})
    assert outcome.committed
    assert (_count(dbs["a"]), _count(dbs["b"])) == (1, 1)
    assert (_prepared(dbs["a"]), _prepared(dbs["b"])) == (0, 0)


def test_a_no_vote_rolls_back_the_prepared_participant(dbs: dict[str, str]) -> None:
    outcome = _coordinator(dbs).run({"a": _insert, "b": _refuse})
    assert not outcome.committed
    assert outcome.reason == "b: card declined"
    assert (_count(dbs["a"]), _count(dbs["b"])) == (0, 0)
    assert _prepared(dbs["a"]) == 0


def _crash_at(dbs: dict[str, str], phase: str) -> str:
    """Run the coordinator in a process, SIGKILL it at ``phase``; return the global transaction id."""
    _coordinator(dbs)  # the log table
    env = {**os.environ, "TWOPC_LOG": dbs["log"], "TWOPC_A": dbs["a"], "TWOPC_B": dbs["b"]}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "twopc_child.py"), phase],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        gtrid = proc.stdout.readline().strip()
        assert gtrid, "the coordinator ended before the phase"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    return gtrid


@pytest.mark.parametrize(("phase", "committed"), [("prepared", False), ("decided", True)])
def test_recovery_after_a_sigkilled_coordinator_is_idempotent(
    dbs: dict[str, str], phase: str, committed: bool
) -> None:
    gtrid = _crash_at(dbs, phase)
    assert (_prepared(dbs["a"]), _prepared(dbs["b"])) == (1, 1)  # in doubt, holding their locks
    participants = {"a": dbs["a"], "b": dbs["b"]}
    done = recover(dbs["log"], participants)
    assert sorted((r.participant, r.committed) for r in done) == [("a", committed), ("b", committed)]
    assert (_count(dbs["a"]), _count(dbs["b"])) == ((1, 1) if committed else (0, 0))
    with psycopg.connect(conninfo(dbs["log"])) as log:
        assert read_decision(log, gtrid) == ("commit" if committed else "abort")
    assert recover(dbs["log"], participants) == []  # nothing left in doubt
    assert (_count(dbs["a"]), _count(dbs["b"])) == ((1, 1) if committed else (0, 0))


def test_recover_command_finishes_in_doubt_transactions(dbs: dict[str, str]) -> None:
    from outboxkit.cli._main import main  # noqa: PLC0415 - the command line under test

    _crash_at(dbs, "decided")
    args = ["twopc", "recover", "--db", dbs["log"], "--participant", f"a={dbs['a']}"]
    assert main([*args, "--participant", f"b={dbs['b']}"]) == 0
    assert (_count(dbs["a"]), _count(dbs["b"])) == (1, 1)
    assert main(["twopc", "recover", "--db", dbs["log"], "--participant", "nonsense"]) == 2


def test_a_server_without_prepared_transactions_is_one_clear_error(
    pg_server_factory: Callable[..., PostgresServer],
) -> None:
    server = pg_server_factory(settings={"max_prepared_transactions": "0"})
    url = server.url("postgres")
    with pytest.raises(ConfigError, match=r"max_prepared_transactions > 0 on the a database"):
        TwoPhaseCoordinator(url, {"a": url}).check()
