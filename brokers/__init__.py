"""The broker stage: the ports and one sub-package per broker holding both halves.

:class:`Publisher` is the port the relay publishes through (sync);
:class:`Subscriber` the one consumers read through (asyncio). Each broker is a
sub-package (:mod:`brokers.redis_streams`, :mod:`brokers.redis_cluster`, :mod:`brokers.redis_sentinel`,
:mod:`brokers.nats_jetstream`, :mod:`brokers.kafka`, :mod:`brokers.sql_table`,
:mod:`brokers.memory`) implementing both, so relay and inbox never import each
other; :func:`connect_publisher` / :func:`connect_subscriber` pick one by URL.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._connect import broker_kind, connect_publisher, connect_subscriber, needs_hash_tags
from ._durability import Durability
from ._naming import MAX_PARTITIONS, StreamLayout
from ._publisher import EntryOutcome, EntryStatus, Fence, OutgoingEntry, Publisher, PublishResult
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
    "Durability",
    "EntryOutcome",
    "EntryStatus",
    "Fence",
    "GroupStatus",
    "OutgoingEntry",
    "PositionLookup",
    "PositionTracking",
    "PublishResult",
    "Publisher",
    "RedeliveryHorizon",
    "StreamLayout",
    "Subscriber",
    "broker_kind",
    "connect_publisher",
    "connect_subscriber",
    "needs_hash_tags",
]
