"""Choose a broker's publish half by URL scheme.

==========================================  =====================================
URL                                         broker
==========================================  =====================================
``redis://[user:pw@]host[:port][/db]``      Redis Streams
``rediss://...``                            Redis Streams over TLS
``unix:///path/redis.sock[?db=0]``          Redis Streams over a Unix socket
``nats://[user:pw@]h1:4222,h2:4222[?...]``  NATS JetStream (``outboxkit[nats]``)
``tls://...``                               NATS JetStream over TLS
``memory://[name]``                         in-process broker (tests)
any SQLAlchemy URL (``sqlite:///b.db``,     SQL-table broker in that database
``postgresql+psycopg://...``)
==========================================  =====================================

.. versionadded:: 0.1
"""

from __future__ import annotations

from urllib.parse import urlsplit

from outbox._redact import redact_url
from outbox.errors import ConfigError

from ._publisher import Publisher

__all__ = ["connect_publisher"]

_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres")
NATS_SCHEMES = frozenset({"nats", "tls"})
NATS_EXTRA_HINT = "the NATS broker needs the nats extra: pip install 'outboxkit[nats]'"


def connect_publisher(
    url: str, *, key_prefix: str = "", max_len: int | None = None, schema: str | None = None
) -> Publisher:
    """Return the publisher for ``url``; ``key_prefix`` applies to Redis, ``max_len`` to Redis and SQL.

    ``schema`` is the database schema of the SQL-table broker's tables (PostgreSQL).

    Raises:
        ConfigError: the URL is malformed or its scheme unknown (password masked).
    """
    if not isinstance(url, str) or not url:
        msg = "no broker URL: pass --broker or set OUTBOXKIT_BROKER_URL"
        raise ConfigError(msg)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme in _REDIS_SCHEMES:
        from .redis_streams_publish import RedisStreamsPublisher  # noqa: PLC0415 - optional dependency

        return RedisStreamsPublisher(url, key_prefix=key_prefix, max_len=max_len)
    if scheme in NATS_SCHEMES:
        try:
            from .nats_jetstream import NatsJetStreamPublisher  # noqa: PLC0415 - optional dependency
        except ImportError:
            raise ConfigError(NATS_EXTRA_HINT) from None
        return NatsJetStreamPublisher(url, key_prefix=key_prefix, max_len=max_len)
    if scheme == "memory":
        from .memory import MemoryPublisher, memory_broker  # noqa: PLC0415

        name = url.split("://", 1)[1] or "default"
        return MemoryPublisher(memory_broker(name), name=name)
    if scheme.split("+", 1)[0] in _SQL_SCHEMES:
        from .sql_table_publish import SqlTablePublisher  # noqa: PLC0415

        return SqlTablePublisher(url, max_len=max_len, schema=schema)
    msg = (
        f"unsupported broker URL {redact_url(url)}: use redis://, rediss://, unix://, nats://, tls://, memory://"
        " or a SQLAlchemy URL (sqlite:///..., postgresql+psycopg://...)"
    )
    raise ConfigError(msg)
