"""Choose a broker by URL scheme: one table for both halves.

==========================================  =====================================
URL                                         broker
==========================================  =====================================
``redis://[user:pw@]host[:port][/db]``      Redis Streams
``rediss://...``                            Redis Streams over TLS
``unix:///path/redis.sock[?db=0]``          Redis Streams over a Unix socket
``redis+cluster://[user:pw@]h:p[,h:p...]``  Redis Cluster (``rediss+cluster://``: TLS)
``redis+sentinel://h:p[,h:p...]/<master>``  Redis Sentinel (``rediss+sentinel://``: TLS)
``kafka://host1:9092,host2:9092[?...]``     Kafka (``kafka+ssl://`` for TLS; extra ``kafka``)
``nats://[user:pw@]h1:4222,h2:4222[?...]``  NATS JetStream (``outboxkit[nats]``)
``tls://...``                               NATS JetStream over TLS
``memory://[name]``                         in-process broker (tests; publish half only)
any SQLAlchemy URL (``sqlite:///b.db``,     SQL-table broker in that database
``postgresql+psycopg://...``)
==========================================  =====================================

Every Redis form takes ``?durability=none|replicas=N|aof`` (docs/brokers.md).

Adapters are imported only when their scheme is asked for, so a new broker
(a sub-package of :mod:`brokers`) adds one row to :data:`_SCHEMES` and
nothing else changes here.

.. versionadded:: 0.1
"""

from __future__ import annotations

import datetime as dt
import importlib.util
from urllib.parse import urlsplit

from outbox._redact import redact_url
from outbox.errors import ConfigError

from ._publisher import Publisher
from ._subscriber import Subscriber

__all__ = ["KAFKA_EXTRA_HINT", "broker_kind", "connect_publisher", "connect_subscriber", "needs_hash_tags"]

NATS_EXTRA_HINT = "the NATS broker needs the nats extra: pip install 'outboxkit[nats]'"
KAFKA_EXTRA_HINT = "kafka:// needs the kafka extra: pip install 'outboxkit[kafka]'"

# Whole URL schemes naming a broker of their own (checked before the ``+driver`` rule).
_FULL_SCHEMES = {
    "redis+cluster": "redis_cluster",
    "rediss+cluster": "redis_cluster",
    "redis+sentinel": "redis_sentinel",
    "rediss+sentinel": "redis_sentinel",
}
# URL scheme (before any ``+driver``) -> broker sub-package.
_SCHEMES = {
    "redis": "redis_streams",
    "rediss": "redis_streams",
    "unix": "redis_streams",
    "kafka": "kafka",
    "kafka+ssl": "kafka",
    "nats": "nats_jetstream",
    "tls": "nats_jetstream",
    "memory": "memory",
    "sqlite": "sql_table",
    "postgresql": "sql_table",
    "postgres": "sql_table",
}


def broker_kind(url: str) -> str:
    """The broker sub-package serving ``url``.

    One of ``redis_streams``, ``redis_cluster``, ``redis_sentinel``, ``nats_jetstream``, ``kafka``,
    ``sql_table``, ``memory``.

    Raises:
        ConfigError: no URL, or its scheme is unknown (password masked).
    """
    if not isinstance(url, str) or not url:
        msg = "no broker URL: pass --broker or set OUTBOXKIT_BROKER_URL"
        raise ConfigError(msg)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    kind = _FULL_SCHEMES.get(scheme) or _SCHEMES.get(scheme.split("+", 1)[0])
    if kind is None:
        msg = (
            f"unsupported broker URL {redact_url(url)}: use redis://, rediss://, unix://, redis+cluster://,"
            " redis+sentinel://, nats://, tls://, kafka://, memory:// or a SQLAlchemy URL"
            " (sqlite:///..., postgresql+psycopg://...)"
        )
        raise ConfigError(msg)
    return kind


def needs_hash_tags(url: str) -> bool:
    """Whether the broker at ``url`` needs ``StreamLayout(hash_tags=True)`` (Redis Cluster).

    .. versionadded:: 0.3
    """
    try:
        return broker_kind(url) == "redis_cluster"
    except ConfigError:
        return False


def connect_publisher(
    url: str,
    *,
    key_prefix: str = "",
    max_len: int | None = None,
    schema: str | None = None,
    durability: str | None = None,
) -> Publisher:
    """Return the publish half for ``url``; ``key_prefix`` applies to Redis, ``max_len`` to Redis and SQL.

    ``schema`` is the database schema of the SQL-table broker's tables (PostgreSQL).
    ``durability`` (``none``, ``replicas=N``, ``aof``) applies to every Redis
    form and overrides the URL's ``durability`` option; other brokers refuse it.

    .. versionchanged:: 0.3 ``durability``, ``redis+cluster://``, ``redis+sentinel://``.

    Raises:
        ConfigError: the URL is malformed or its scheme unknown (password masked).
    """
    kind = broker_kind(url)
    if kind in _REDIS_KINDS:
        return _redis_publisher(kind, url, key_prefix=key_prefix, max_len=max_len, durability=durability)
    if durability not in (None, "none"):
        msg = f"--broker-durability applies to Redis brokers only, not {redact_url(url)}"
        raise ConfigError(msg)
    if kind == "nats_jetstream":
        try:
            from .nats_jetstream import NatsJetStreamPublisher  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise ConfigError(NATS_EXTRA_HINT) from None
        return NatsJetStreamPublisher(url, key_prefix=key_prefix, max_len=max_len)
    if kind == "kafka":
        if max_len is not None:
            msg = (
                "a stream max length does not apply to Kafka: set the topics' retention.ms or retention.bytes"
            )
            raise ConfigError(msg)
        _require_kafka_extra()
        from .kafka import KafkaPublisher  # noqa: PLC0415 - optional dependency

        return KafkaPublisher(url, key_prefix=key_prefix)
    if kind == "memory":
        from .memory import MemoryPublisher, memory_broker  # noqa: PLC0415

        name = url.split("://", 1)[1] or "default"
        return MemoryPublisher(memory_broker(name), name=name)
    from .sql_table import SqlTablePublisher  # noqa: PLC0415

    return SqlTablePublisher(url, max_len=max_len, schema=schema)


def connect_subscriber(
    url: str, *, socket_timeout: dt.timedelta | None = None, schema: str | None = None
) -> Subscriber:
    """Return the subscribe half for ``url``; nothing is sent until the first call.

    ``socket_timeout`` applies to Redis (default
    :data:`brokers.redis_streams.DEFAULT_SOCKET_TIMEOUT`); ``schema`` is the
    database schema of the SQL-table broker's tables (PostgreSQL), ignored by Redis.

    Raises:
        ConfigError: the URL is malformed, its scheme unknown (password masked),
            or ``memory://``, whose subscribe half tests build directly
            (:class:`brokers.memory.MemorySubscriber`).
    """
    kind = broker_kind(url)
    if kind == "redis_streams":
        from .redis_streams import DEFAULT_SOCKET_TIMEOUT, RedisStreamsSubscriber  # noqa: PLC0415

        return RedisStreamsSubscriber.from_url(url, socket_timeout=socket_timeout or DEFAULT_SOCKET_TIMEOUT)
    if kind == "redis_cluster":
        from .redis_cluster import RedisClusterSubscriber  # noqa: PLC0415
        from .redis_streams import DEFAULT_SOCKET_TIMEOUT  # noqa: PLC0415

        return RedisClusterSubscriber.from_url(url, socket_timeout=socket_timeout or DEFAULT_SOCKET_TIMEOUT)
    if kind == "redis_sentinel":
        from .redis_sentinel import sentinel_subscriber  # noqa: PLC0415
        from .redis_streams import DEFAULT_SOCKET_TIMEOUT  # noqa: PLC0415

        return sentinel_subscriber(url, socket_timeout=socket_timeout or DEFAULT_SOCKET_TIMEOUT)
    if kind == "kafka":
        _require_kafka_extra()
        from .kafka import KafkaSubscriber  # noqa: PLC0415 - optional dependency

        return KafkaSubscriber(url)
    if kind == "nats_jetstream":
        try:
            from .nats_jetstream import NatsJetStreamSubscriber  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise ConfigError(NATS_EXTRA_HINT) from None
        return NatsJetStreamSubscriber.from_url(url)
    if kind == "memory":
        msg = "memory:// has no subscribe half by URL: build brokers.memory.MemorySubscriber directly"
        raise ConfigError(msg)
    from .sql_table import SqlTableSubscriber  # noqa: PLC0415

    return SqlTableSubscriber.from_url(url, schema=schema)


def _require_kafka_extra() -> None:
    """One clear error when the ``kafka`` extra (confluent-kafka) is not installed."""
    if importlib.util.find_spec("confluent_kafka") is None:
        raise ConfigError(KAFKA_EXTRA_HINT)


_REDIS_KINDS = frozenset({"redis_streams", "redis_cluster", "redis_sentinel"})


def _redis_publisher(
    kind: str, url: str, *, key_prefix: str, max_len: int | None, durability: str | None
) -> Publisher:
    """The publish half of one of the Redis forms (each takes the durability setting)."""
    if kind == "redis_cluster":
        from .redis_cluster import RedisClusterPublisher  # noqa: PLC0415 - only the broker asked for

        return RedisClusterPublisher(url, key_prefix=key_prefix, max_len=max_len, durability=durability)
    if kind == "redis_sentinel":
        from .redis_sentinel import sentinel_publisher  # noqa: PLC0415

        return sentinel_publisher(url, key_prefix=key_prefix, max_len=max_len, durability=durability)
    from .redis_streams import RedisStreamsPublisher  # noqa: PLC0415

    return RedisStreamsPublisher(url, key_prefix=key_prefix, max_len=max_len, durability=durability)
