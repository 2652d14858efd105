"""Redis Streams broker: the publish half (relay, sync) and the subscribe half (consumers, asyncio).

One key scheme (:mod:`._keys`), one mapping of redis-py errors to the toolkit's
errors (:mod:`._errors`), and the server-side scripts as ``.lua`` files beside
the code (:mod:`._scripts`).

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._publish import RedisStreamsPublisher
from ._subscribe import DEFAULT_SOCKET_TIMEOUT, RedisStreamsSubscriber

__all__ = ["DEFAULT_SOCKET_TIMEOUT", "RedisStreamsPublisher", "RedisStreamsSubscriber"]
