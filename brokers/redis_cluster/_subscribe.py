"""The subscribe half of the Redis Cluster broker: the Redis Streams subscriber on a cluster client.

Every call of :class:`~brokers.redis_streams.RedisStreamsSubscriber`
touches one key (a stream, a lease, the member set), so redis-py's
``RedisCluster`` routes each to the master serving its slot, follows
``MOVED``/``ASK`` and reads the slot map again after a failover; ``SCAN``
(status, lag) runs on every master. What is added here: the cluster URL, a
clear error for streams without a hash tag, and the cluster client's own
errors at the same boundary as the others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio.cluster as aiocluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from brokers._subscriber import Delivery
from brokers.redis_streams import DEFAULT_SOCKET_TIMEOUT, RedisStreamsSubscriber
from brokers.redis_streams._seed_urls import parse_seed_url
from outbox._redact import redact_url
from outbox.errors import BrokerError, ConfigError

__all__ = ["RedisClusterSubscriber"]

T = TypeVar("T")
_BLOCK_MARGIN = dt.timedelta(seconds=1)


class RedisClusterSubscriber(RedisStreamsSubscriber):
    """Consumer groups on Redis Cluster (``redis+cluster://h:p[,h:p...]``).

    .. versionadded:: 0.3
    """

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: dt.timedelta = DEFAULT_SOCKET_TIMEOUT
    ) -> RedisClusterSubscriber:
        """Connect to the cluster seeded by ``url`` (lazily: nothing is sent yet)."""
        if socket_timeout <= _BLOCK_MARGIN:
            msg = f"the Redis socket timeout must be over {_BLOCK_MARGIN.total_seconds():g}s"
            raise ConfigError(msg)
        parsed = parse_seed_url(url)
        if parsed.kind != "cluster":
            msg = f"not a redis+cluster:// URL: {redact_url(url)}"
            raise ConfigError(msg)
        client = aiocluster.RedisCluster(
            startup_nodes=[aiocluster.ClusterNode(host, port) for host, port in parsed.seeds],
            decode_responses=False,
            socket_timeout=socket_timeout.total_seconds(),
            socket_connect_timeout=socket_timeout.total_seconds(),
            # No client-side retries of XREADGROUP ">" (see redis_streams/_subscribe.py, issue 17).
            retry=Retry(NoBackoff(), 0),
            **parsed.client_options(),  # type: ignore[arg-type]
        )
        return cls(client, socket_timeout=socket_timeout, where=redact_url(url))  # type: ignore[arg-type]

    async def _call(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        try:
            return await super()._call(what, action)
        except RedisClusterException as exc:  # no seed answered, slots not covered
            msg = f"Redis Cluster at {self._where} unavailable during {what}: {type(exc).__name__}"
            raise BrokerError(msg) from exc

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: dt.timedelta
    ) -> list[Delivery]:
        """As on one Redis; a stream without a hash tag is a configuration error."""
        start = stream.find("{")
        if start < 0 or stream.find("}", start + 2) < 0:
            msg = (
                f"stream {stream!r} has no hash tag: Redis Cluster needs StreamLayout(hash_tags=True),"
                " which the command line sets for redis+cluster://"
            )
            raise ConfigError(msg)
        return await super().read(stream, group, consumer, count=count, block=block)
