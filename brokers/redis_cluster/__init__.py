"""Redis Cluster broker: publish (relay) and subscribe (consumers) halves.

Streams carry one hash tag per (topic, partition), so partitions spread over
the masters; the relay sends one script per slot, one pipeline per master.

.. versionadded:: 0.3
"""

from __future__ import annotations

from ._publish import RedisClusterPublisher
from ._subscribe import RedisClusterSubscriber

__all__ = ["RedisClusterPublisher", "RedisClusterSubscriber"]
