"""Broker adapters, both halves of each broker.

The publish half (used by the relay) and the subscribe half (used by
consumers) live here, so relay and inbox never import each other.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._connect import connect_publisher
from ._connect_subscriber import connect_subscriber
from ._naming import MAX_PARTITIONS, StreamLayout
from ._publisher import EntryOutcome, EntryStatus, Fence, OutgoingEntry, Publisher, PublishResult
from ._subscriber import Delivery, GroupStatus, RedeliveryHorizon, Subscriber

__all__ = [
    "MAX_PARTITIONS",
    "Delivery",
    "EntryOutcome",
    "EntryStatus",
    "Fence",
    "GroupStatus",
    "OutgoingEntry",
    "PublishResult",
    "Publisher",
    "RedeliveryHorizon",
    "StreamLayout",
    "Subscriber",
    "connect_publisher",
    "connect_subscriber",
]
