"""The soak's fault proxy against real PostgreSQL and Redis: latency, drops, half-open links, partitions, heal."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from outboxkit.soak._proxy import FaultProxy, proxied_url

pytestmark = pytest.mark.integration


def _proxy_for(url: str) -> FaultProxy:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return FaultProxy(parts.hostname, parts.port, name="test")


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[tuple[FaultProxy, str]]:
    with _proxy_for(redis_url) as proxy:
        yield proxy, proxied_url(redis_url, proxy.port)


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[FaultProxy, str]]:
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with _proxy_for(dsn) as proxy:
        yield proxy, proxied_url(dsn, proxy.port)


def _client(url: str) -> redis.Redis:
    # No client-side retry, like the relay's publisher: every fault must be seen.
    return redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


def test_proxied_url_keeps_credentials_and_path() -> None:
    """Only host and port change: user, password, database and query survive."""
    url = "postgresql://u:p%40ss@db.example:5433/soak?sslmode=disable"
    assert proxied_url(url, 9999) == "postgresql://u:p%40ss@127.0.0.1:9999/soak?sslmode=disable"
    assert proxied_url("redis://localhost:6379/0", 1) == "redis://127.0.0.1:1/0"


def test_redis_through_the_proxy_with_latency_and_drop(redis_proxy: tuple[FaultProxy, str]) -> None:
    """Commands pass; latency slows each round trip; a drop resets the link and the next connection works."""
    proxy, url = redis_proxy
    client = _client(url)
    try:
        assert client.ping()
        proxy.slow(0.15, 0.05)
        started = time.monotonic()
        client.set("fault-proxy:k", "v")
        assert 0.3 <= time.monotonic() - started < 2.0  # both directions delayed
        proxy.slow(0.0)
        raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
        raw.sendall(b"PING\r\n")
        assert raw.recv(64) == b"+PONG\r\n"
        assert proxy.drop() == 2  # the client's link and the raw one
        with contextlib.suppress(ConnectionResetError):
            assert raw.recv(64) == b""  # reset or closed: never an answer
        raw.close()
        # redis-py notices the dead pooled socket and connects again, through the proxy.
        assert client.get("fault-proxy:k") == b"v"
        assert proxy.connections == 3
    finally:
        client.delete("fault-proxy:k")
        client.close()


def test_half_open_link_hangs_until_the_client_times_out(redis_proxy: tuple[FaultProxy, str]) -> None:
    """A half-open link neither answers nor closes; a fresh connection is unaffected."""
    proxy, url = redis_proxy
    stuck, fresh = _client(url), _client(url)
    try:
        assert stuck.ping()
        assert proxy.half_open() == 1
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            stuck.ping()
        assert time.monotonic() - started >= 0.45
        assert fresh.ping()
    finally:
        stuck.close()
        fresh.close()


def test_partition_from_postgres_and_heal(pg_proxy: tuple[FaultProxy, str]) -> None:
    """Partitioned: an open transaction and a new connection both hang; healed: the old link is reset, a new one works."""
    proxy, dsn = pg_proxy
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    conn = psycopg.connect(dsn)
    try:
        conn.execute("SELECT 1")  # a transaction is open
        proxy.partition()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=1)
        proxy.heal()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 2")  # the partitioned link did not survive
    finally:
        conn.close()
    with psycopg.connect(dsn, autocommit=True) as again:
        assert again.execute("SELECT 3").fetchone() == (3,)
