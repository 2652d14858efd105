"""``redis+sentinel://s1:26379,s2:26379/<master>``: Redis Streams on the master the sentinels name.

Nothing here is a broker of its own: the keys, scripts and consumer groups are
those of one Redis (:mod:`brokers.redis_streams`). redis-py's
``SentinelConnectionPool`` asks the sentinels for the master whenever it opens
a connection, so after a failover the relay's next attempt (it backs off on
the failed one) and the consumers' next call reach the promoted replica.
With ``durability=replicas=1`` a batch is marked sent only once a replica has
it, so the promoted replica has every entry the relay marked.
"""

from __future__ import annotations

import datetime as dt

import redis.asyncio.sentinel as aiosentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from brokers.redis_streams import DEFAULT_SOCKET_TIMEOUT, RedisStreamsPublisher, RedisStreamsSubscriber
from brokers.redis_streams._seed_urls import SeedUrl, parse_seed_url
from outbox._redact import redact_url
from outbox.errors import ConfigError

__all__ = ["sentinel_publisher", "sentinel_subscriber"]


def _parse(url: str, durability: str | None = None) -> tuple[SeedUrl, str]:
    parsed = parse_seed_url(url, durability)
    if parsed.kind != "sentinel" or parsed.master is None:
        msg = f"not a redis+sentinel:// URL: {redact_url(url)}"
        raise ConfigError(msg)
    return parsed, parsed.master


def _sentinel_options(parsed: SeedUrl) -> dict[str, object]:
    options: dict[str, object] = {"username": parsed.sentinel_username, "password": parsed.sentinel_password}
    if parsed.tls:
        options["ssl"] = True
        options.update(parsed.tls_options)
    return options


def sentinel_publisher(
    url: str,
    *,
    key_prefix: str = "",
    max_len: int | None = None,
    durability: str | None = None,
    timeout: float = 5.0,
) -> RedisStreamsPublisher:
    """The Redis Streams publisher on the master named by the sentinels of ``url``.

    Raises:
        ConfigError: the URL is malformed (password masked).
    """
    parsed, master = _parse(url, durability)
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.seeds),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        sentinel_kwargs=_sentinel_options(parsed),
    )
    client = sentinel.master_for(  # type: ignore[no-untyped-call]
        master,
        db=parsed.db,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        # No client-side retries: the relay owns backoff and must see each failure.
        retry=Retry(NoBackoff(), 0),
        decode_responses=False,
        **parsed.client_options(),
    )
    return RedisStreamsPublisher(
        url, key_prefix=key_prefix, max_len=max_len, durability=durability, client=client
    )


def sentinel_subscriber(
    url: str, *, socket_timeout: dt.timedelta = DEFAULT_SOCKET_TIMEOUT
) -> RedisStreamsSubscriber:
    """The Redis Streams subscriber on the master named by the sentinels of ``url`` (lazily)."""
    parsed, master = _parse(url)
    seconds = socket_timeout.total_seconds()
    sentinel = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.seeds),
        socket_timeout=seconds,
        socket_connect_timeout=seconds,
        sentinel_kwargs=_sentinel_options(parsed),
    )
    client = sentinel.master_for(
        master,
        db=parsed.db,
        socket_timeout=seconds,
        socket_connect_timeout=seconds,
        decode_responses=False,
        **parsed.client_options(),  # type: ignore[arg-type]
    )
    subscriber = _SentinelSubscriber(client, socket_timeout=socket_timeout, where=redact_url(url))
    subscriber.sentinel = sentinel
    return subscriber


class _SentinelPublisher(RedisStreamsPublisher):
    """Closes the connections to the sentinels as well as the master's."""

    sentinel: redis.sentinel.Sentinel | None = None

    def close(self) -> None:
        super().close()
        for client in self.sentinel.sentinels if self.sentinel else ():
            client.close()


class _SentinelSubscriber(RedisStreamsSubscriber):
    """Closes the connections to the sentinels as well as the master's."""

    sentinel: aiosentinel.Sentinel | None = None

    async def aclose(self) -> None:
        await super().aclose()
        for client in self.sentinel.sentinels if self.sentinel else ():
            await client.aclose()
