"""Broker adapters, both halves of each broker.

The publish half (used by the relay) and the subscribe half (used by
consumers) live here, so relay and inbox never import each other.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._connect_subscriber import connect_subscriber
from ._naming import MAX_PARTITIONS, StreamLayout
from ._subscriber import Delivery, GroupStatus, Subscriber

__all__ = ["MAX_PARTITIONS", "Delivery", "GroupStatus", "StreamLayout", "Subscriber", "connect_subscriber"]
