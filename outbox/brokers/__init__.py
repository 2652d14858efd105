"""Broker adapters, both halves of each broker.

The publish half (used by the relay) and the subscribe half (used by
consumers) live here, so relay and inbox never import each other.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._connect import connect_publisher
from ._naming import MAX_PARTITIONS, StreamLayout
from ._publisher import EntryOutcome, Fence, Outcome, OutgoingEntry, Publisher, PublishResult

__all__ = [
    "MAX_PARTITIONS",
    "EntryOutcome",
    "Fence",
    "Outcome",
    "OutgoingEntry",
    "PublishResult",
    "Publisher",
    "StreamLayout",
    "connect_publisher",
]
