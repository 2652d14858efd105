"""Broker adapters, both halves of each broker.

The publish half (used by the relay) and the subscribe half (used by
consumers) live here, so relay and inbox never import each other.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._connect import connect_publisher
from ._connect_subscriber import connect_subscriber
from ._naming import MAX_PARTITIONS, StreamLayout
from ._publisher import EntryOutcome, Fence, Outcome, OutgoingEntry, Publisher, PublishResult
from ._subscriber import (
    Delivery,
    GroupStatus,
    PositionLookup,
    PositionTracking,
    RedeliveryHorizon,
    Subscriber,
)

__all__ = [
    "MAX_PARTITIONS",
    "Delivery",
    "EntryOutcome",
    "Fence",
    "GroupStatus",
    "Outcome",
    "OutgoingEntry",
    "PositionLookup",
    "PositionTracking",
    "PublishResult",
    "Publisher",
    "RedeliveryHorizon",
    "StreamLayout",
    "Subscriber",
    "connect_publisher",
    "connect_subscriber",
]
