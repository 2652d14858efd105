"""The real-server harness: PostgreSQL and Redis start, isolate tests, restart and crash as promised."""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests._db import unique_database_name
from tests._servers import NO_RETRY, ExternalPostgres

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests._servers import PostgresAdmin, PostgresServer, RedisServer

pytestmark = pytest.mark.integration


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    """Open an autocommit psycopg connection to a ``postgresql+psycopg://`` URL."""
    u = make_url(url)
    return psycopg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database, autocommit=True
    )


def _tables(url: str) -> set[str]:
    with _connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    return {str(row[0]) for row in rows}


def test_postgres_server_reports_version_15_or_newer(pg_server: PostgresAdmin) -> None:
    """The session's PostgreSQL accepts a superuser connection and is version 15 or newer."""
    assert pg_server.server_version_num() >= 150000


def test_pg_empty_url_databases_are_isolated(pg_server: PostgresAdmin, pg_empty_url: str) -> None:
    """A table created in one test database is invisible in another one."""
    other = unique_database_name()
    other_url = pg_server.create_database(other)
    try:
        with _connect(pg_empty_url) as conn:
            conn.execute("CREATE TABLE only_here (id int)")
        assert _tables(pg_empty_url) == {"only_here"}
        assert _tables(other_url) == set()
    finally:
        pg_server.drop_database(other)


def test_pg_url_databases_are_isolated_copies_of_the_template(
    pg_server: PostgresAdmin, pg_template: str, pg_url: str
) -> None:
    """Each pg_url starts with the template's tables, and its changes do not reach a sibling copy."""
    sibling = unique_database_name()
    sibling_url = pg_server.create_database(sibling, template=pg_template)
    try:
        migrated = _tables(sibling_url)
        assert migrated, "the template has no tables: outbox.upgrade created nothing"
        assert _tables(pg_url) == migrated
        with _connect(pg_url) as conn:
            conn.execute("CREATE TABLE only_here (id int)")
        assert _tables(sibling_url) == migrated
    finally:
        pg_server.drop_database(sibling)


def test_pg_server_drop_database_terminates_open_sessions(pg_server: PostgresAdmin) -> None:
    """drop_database succeeds while a session is still connected to the database."""
    name = unique_database_name()
    url = pg_server.create_database(name)
    with _connect(url) as conn:
        pg_server.drop_database(name)
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pg_server.connect() as admin:
        assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_external_postgres_administers_databases_by_url(pg_server: PostgresAdmin) -> None:
    """ExternalPostgres built from a superuser URL creates, reaches and drops databases."""
    external = ExternalPostgres(pg_server.url("postgres"))
    name = unique_database_name()
    url = external.create_database(name)
    try:
        assert make_url(url).database == name
        assert _tables(url) == set()
    finally:
        external.drop_database(name)


def test_postgres_restart_accepts_connections_and_keeps_committed_rows(
    pg_server_factory: Callable[..., PostgresServer],
) -> None:
    """After an immediate-mode restart the server answers on the same port with the committed rows."""
    server = pg_server_factory(durable=True)
    port, old_pid = server.port, server.pid
    with server.connect() as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (1)")
    server.restart()
    assert (server.port, server.pid != old_pid) == (port, True)
    with server.connect() as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(1,)]


def test_postgres_kill_then_start_recovers_committed_rows(
    pg_server_factory: Callable[..., PostgresServer],
) -> None:
    """After SIGKILL of the whole server, start() runs crash recovery and the committed rows are back."""
    server = pg_server_factory(durable=True)
    with server.connect() as conn:
        conn.execute("CREATE TABLE kept (id int)")
        conn.execute("INSERT INTO kept VALUES (1)")
        server.kill()
        assert not server.running
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    server.start()
    with server.connect() as conn:
        assert conn.execute("SELECT id FROM kept").fetchall() == [(1,)]


def test_redis_server_answers_ping(redis_client: redis.Redis) -> None:
    """The session's Redis answers PING."""
    assert redis_client.ping() is True


def test_redis_stream_entries_added_are_read_back_in_order(
    redis_client: redis.Redis, stream_prefix: str
) -> None:
    """XRANGE returns the XADDed entries, as bytes, in insertion order."""
    stream = f"{stream_prefix}orders"
    first = redis_client.xadd(stream, {"n": "1"})
    second = redis_client.xadd(stream, {"n": "2"})
    assert redis_client.xrange(stream) == [(first, {b"n": b"1"}), (second, {b"n": b"2"})]


def test_redis_restart_without_persistence_loses_streams(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A crash-restart of a Redis without persistence comes back empty on the same port."""
    server = redis_server_factory(persistence="none")
    port = server.port
    with server.client() as client:
        client.xadd("s", {"n": "1"})
    server.restart(persistence="none")
    assert server.port == port
    with server.client() as client:
        assert client.xlen("s") == 0


def test_redis_restart_with_aof_keeps_streams(redis_server_factory: Callable[..., RedisServer]) -> None:
    """A crash-restart (SIGKILL) of a Redis with an fsync-always AOF keeps every acknowledged entry."""
    server = redis_server_factory(persistence="aof")
    with server.client() as client:
        ids = [client.xadd("s", {"n": str(n)}) for n in range(3)]
    server.restart(persistence="aof")
    with server.client() as client:
        assert [entry_id for entry_id, _ in client.xrange("s")] == ids


def test_redis_server_with_password_rejects_anonymous_clients(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A password-protected Redis refuses a client without the password and accepts the URL's."""
    server = redis_server_factory(password="s3cret/pw")
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, retry=NO_RETRY)
    with anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with server.client() as client:
        assert client.ping() is True
