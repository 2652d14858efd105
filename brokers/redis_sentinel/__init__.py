"""Redis Sentinel broker: the Redis Streams halves on the master that the sentinels name.

.. versionadded:: 0.3
"""

from __future__ import annotations

from ._connect import sentinel_publisher, sentinel_subscriber

__all__ = ["sentinel_publisher", "sentinel_subscriber"]
