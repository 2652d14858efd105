"""Redis Streams broker: publish (relay) and subscribe (consumers) halves.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._subscribe import DEFAULT_SOCKET_TIMEOUT, RedisStreamsSubscriber

__all__ = ["DEFAULT_SOCKET_TIMEOUT", "RedisStreamsSubscriber"]
