"""Fixtures for real PostgreSQL and Redis servers, databases and stream prefixes.

The suite starts its own servers (tests/_servers.py), one of each per pytest
session and so one per xdist worker. ``OUTBOXKIT_TEST_DATABASE_URL`` (a
``postgresql+psycopg://`` superuser URL) and ``OUTBOXKIT_TEST_REDIS_URL``
point the suite at existing servers instead.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest
import redis

from tests._db import migrate, sqlite_file_url, template_database_name, unique_database_name
from tests._kafka import KAFKA_BOOTSTRAP_ENV, ExternalKafka, KafkaEndpoint, KafkaServer
from tests._nats import NatsCluster
from tests._redis_cluster import RedisClusterServer
from tests._redis_sentinel import RedisSentinelSetup
from tests._servers import (
    ExternalPostgres,
    ExternalRedis,
    PostgresAdmin,
    PostgresServer,
    RedisEndpoint,
    RedisServer,
    ServerPool,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

PG_URL_ENV = "OUTBOXKIT_TEST_DATABASE_URL"
REDIS_URL_ENV = "OUTBOXKIT_TEST_REDIS_URL"
# Tests using these fixtures talk to real servers: they get the `integration` mark.
SERVER_FIXTURES = frozenset(
    {
        "pg_server",
        "redis_server",
        "pg_server_factory",
        "redis_server_factory",
        "redis_cluster",
        "redis_sentinel",
        "kafka_server",
        "nats_cluster",
        "nats_cluster_factory",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a real server as ``integration``."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# -- PostgreSQL --------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresAdmin]:
    """The session's PostgreSQL server: started by the suite, or the one in OUTBOXKIT_TEST_DATABASE_URL."""
    if external := os.environ.get(PG_URL_ENV):
        yield ExternalPostgres(external)
        return
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresAdmin) -> Iterator[str]:
    """Name of a database migrated once with outbox.upgrade, the template of every ``pg_url``."""
    name = template_database_name(shared_server=isinstance(pg_server, ExternalPostgres))
    pg_server.drop_database(name)  # left over by an interrupted run on an external server
    url = pg_server.create_database(name)
    try:
        migrate(url)
        pg_server.terminate_sessions(name)  # CREATE DATABASE ... TEMPLATE needs it idle
    except BaseException:
        pg_server.drop_database(name)
        raise
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def pg_url(pg_server: PostgresAdmin, pg_template: str) -> Iterator[str]:
    """URL of a migrated PostgreSQL database private to this test."""
    name = unique_database_name()
    url = pg_server.create_database(name, template=pg_template)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def pg_empty_url(pg_server: PostgresAdmin) -> Iterator[str]:
    """URL of an empty PostgreSQL database (no tables) private to this test."""
    name = unique_database_name()
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def pg_server_factory() -> Iterator[Callable[..., PostgresServer]]:
    """Start private PostgreSQL servers a test may kill or restart: ``pg_server_factory(durable=True)``."""
    with ServerPool(PostgresServer, skip_if_set=PG_URL_ENV) as pool:
        yield pool.start


# -- SQLite and both backends ------------------------------------------------


@pytest.fixture
def sqlite_empty_url(tmp_path: Path) -> str:
    """URL of an empty SQLite file in the test's temporary directory."""
    return sqlite_file_url(tmp_path / "app.db")


@pytest.fixture
def sqlite_url(sqlite_empty_url: str) -> str:
    """URL of a migrated SQLite file in the test's temporary directory."""
    migrate(sqlite_empty_url)
    return sqlite_empty_url


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.integration),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """URL of a migrated database, once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


# -- Redis -------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisEndpoint]:
    """The session's Redis server: started by the suite, or the one in OUTBOXKIT_TEST_REDIS_URL."""
    if external := os.environ.get(REDIS_URL_ENV):
        yield ExternalRedis(external)
        return
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisEndpoint) -> str:
    """URL of the session's Redis server (database 0)."""
    return redis_server.url


@pytest.fixture
def stream_prefix() -> str:
    """A key prefix private to this test, like ``t1a2b3c4d:``, so parallel tests never share streams."""
    return f"t{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the session's Redis server returning bytes, closed after the test."""
    client = redis.Redis.from_url(redis_url, decode_responses=False)
    yield client
    client.close()


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start private Redis servers a test may kill or restart: ``redis_server_factory(persistence="aof")``."""
    with ServerPool(RedisServer, skip_if_set=REDIS_URL_ENV) as pool:
        yield pool.start


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServer]:
    """The session's Redis Cluster: 3 masters and 3 replicas on loopback, started on first use (~5 s)."""
    with RedisClusterServer() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSetup]:
    """The session's Redis Sentinel set-up: master, replica, 3 sentinels on loopback (~3 s on first use)."""
    with RedisSentinelSetup() as setup:
        yield setup


# -- Kafka (Tansu) -------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[KafkaEndpoint]:
    """The session's Kafka-protocol broker: Tansu started by the suite, or OUTBOXKIT_TEST_KAFKA_BOOTSTRAP."""
    if external := os.environ.get(KAFKA_BOOTSTRAP_ENV):
        yield ExternalKafka(external)
        return
    with KafkaServer() as server:
        yield server


@pytest.fixture
def kafka_url(kafka_server: KafkaEndpoint) -> str:
    """``kafka://`` URL of the session's broker."""
    return kafka_server.url


@pytest.fixture
def kafka_prefix() -> str:
    """A topic prefix private to this test, like ``t1a2b3c4d.`` (Kafka topic names have no ``:``)."""
    return f"t{uuid.uuid4().hex[:8]}."


# -- NATS JetStream ------------------------------------------------------------


@pytest.fixture(scope="session")
def nats_cluster() -> Iterator[NatsCluster]:
    """The session's 3-node JetStream cluster on loopback (nats-server from the dev extras)."""
    with NatsCluster() as cluster:
        yield cluster


@pytest.fixture
def nats_url(nats_cluster: NatsCluster) -> str:
    """``nats://admin:...@h1,h2,h3`` of the session's cluster (every permission)."""
    return nats_cluster.url()


@pytest.fixture
def nats_cluster_factory() -> Iterator[Callable[..., NatsCluster]]:
    """Start private clusters a test may kill nodes of: ``nats_cluster_factory(size=3)``."""
    started: list[NatsCluster] = []

    def start(**kwargs: int) -> NatsCluster:
        cluster = NatsCluster(**kwargs)
        started.append(cluster)
        cluster.start()
        return cluster

    yield start
    for cluster in started:
        cluster.close()
