"""Choose a broker's publish half by URL scheme.

==========================================  =====================================
URL                                         broker
==========================================  =====================================
``redis://[user:pw@]host[:port][/db]``      Redis Streams
``rediss://...``                            Redis Streams over TLS
``unix:///path/redis.sock[?db=0]``          Redis Streams over a Unix socket
``redis+cluster://[user:pw@]h:p[,h:p...]``  Redis Cluster (``rediss+cluster://``: TLS)
``redis+sentinel://h:p[,h:p...]/<master>``  Redis Sentinel (``rediss+sentinel://``: TLS)
``memory://[name]``                         in-process broker (tests)
any SQLAlchemy URL (``sqlite:///b.db``,     SQL-table broker in that database
``postgresql+psycopg://...``)
==========================================  =====================================

Every Redis form takes ``?durability=none|replicas=N|aof`` (docs/brokers.md).

.. versionadded:: 0.1
"""

from __future__ import annotations

from urllib.parse import urlsplit

from outbox._redact import redact_url
from outbox.errors import ConfigError

from ._publisher import Publisher

__all__ = ["connect_publisher", "needs_hash_tags"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
_CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
_SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def needs_hash_tags(url: str) -> bool:
    """Whether the broker at ``url`` needs ``StreamLayout(hash_tags=True)`` (Redis Cluster).

    .. versionadded:: 0.3
    """
    return _scheme(url) in _CLUSTER_SCHEMES


_SQL_SCHEMES = ("sqlite", "postgresql", "postgres")


def connect_publisher(
    url: str,
    *,
    key_prefix: str = "",
    max_len: int | None = None,
    schema: str | None = None,
    durability: str | None = None,
) -> Publisher:
    """Return the publisher for ``url``; ``key_prefix`` applies to Redis, ``max_len`` to Redis and SQL.

    ``schema`` is the database schema of the SQL-table broker's tables (PostgreSQL).
    ``durability`` (``none``, ``replicas=N``, ``aof``) applies to every Redis
    form and overrides the URL's ``durability`` option; other brokers refuse it.

    .. versionchanged:: 0.3 ``durability``, ``redis+cluster://``, ``redis+sentinel://``.

    Raises:
        ConfigError: the URL is malformed or its scheme unknown (password masked).
    """
    if not isinstance(url, str) or not url:
        msg = "no broker URL: pass --broker or set OUTBOXKIT_BROKER_URL"
        raise ConfigError(msg)
    scheme = _scheme(url)
    if scheme in _REDIS_SCHEMES:
        from .redis_streams_publish import RedisStreamsPublisher  # noqa: PLC0415 - optional dependency

        return RedisStreamsPublisher(url, key_prefix=key_prefix, max_len=max_len, durability=durability)
    if scheme in _CLUSTER_SCHEMES:
        from .redis_cluster import RedisClusterPublisher  # noqa: PLC0415 - optional dependency

        return RedisClusterPublisher(url, key_prefix=key_prefix, max_len=max_len, durability=durability)
    if scheme in _SENTINEL_SCHEMES:
        from .redis_sentinel import sentinel_publisher  # noqa: PLC0415 - optional dependency

        return sentinel_publisher(url, key_prefix=key_prefix, max_len=max_len, durability=durability)
    if durability not in (None, "none"):
        msg = f"--broker-durability applies to Redis brokers only, not {redact_url(url)}"
        raise ConfigError(msg)
    if scheme == "memory":
        from .memory import MemoryPublisher, memory_broker  # noqa: PLC0415

        name = url.split("://", 1)[1] or "default"
        return MemoryPublisher(memory_broker(name), name=name)
    if scheme.split("+", 1)[0] in _SQL_SCHEMES:
        from .sql_table_publish import SqlTablePublisher  # noqa: PLC0415

        return SqlTablePublisher(url, max_len=max_len, schema=schema)
    msg = (
        f"unsupported broker URL {redact_url(url)}: use redis://, rediss://, unix://,"
        " redis+cluster://, redis+sentinel://, memory://"
        " or a SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...)"
    )
    raise ConfigError(msg)
