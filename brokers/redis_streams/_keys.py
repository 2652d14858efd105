"""The one Redis key scheme of both halves: every key the toolkit writes starts with the stream prefix.

So a Redis ACL user limited to ``~<prefix>*`` (docs/security.md) can run the
relay and the consumers, and services sharing one Redis never touch each
other's keys.

==========================================  ==========================================
key                                         written by
==========================================  ==========================================
``<prefix><topic>[:<partition>]``           relay: the streams (:class:`~brokers.StreamLayout`)
``<prefix>outboxkit:incarnation``           relay: detects a Redis that lost its data
``<prefix>outboxkit:fence:<name>``          relay: newest lease epoch per partition
``<scope>:outboxkit:lease:<stream>``        consumers: who reads ``stream`` (``SET PX``)
``<scope>:outboxkit:members``               consumers: live members (sorted set by expiry)
``<scope>:outboxkit:mark:<marker>``         consumers: a warning already given (``SET NX``)
==========================================  ==========================================

A consumer's *scope* is ``<prefix><group>``: :class:`inbox.ConsumerRunner`
passes it as the ``group`` of the lease calls, so it starts with the prefix.
``:`` cannot occur in a topic and partitions are digits, so these keys never
collide with a stream.
"""

from __future__ import annotations

__all__ = ["fence_key", "incarnation_key", "lease_key", "mark_key", "members_key"]

_NS = "outboxkit"


def incarnation_key(prefix: str) -> str:
    """The relay's incarnation token of ``prefix``."""
    return f"{prefix}{_NS}:incarnation"


def fence_key(prefix: str, name: str) -> str:
    """The relay fence ``name`` of ``prefix``."""
    return f"{prefix}{_NS}:fence:{name}"


def lease_key(scope: str, stream: str) -> str:
    """The consumer lease of ``stream`` within ``scope`` (``<prefix><group>``)."""
    return f"{scope}:{_NS}:lease:{stream}"


def members_key(scope: str) -> str:
    """The live members of ``scope`` (``<prefix><group>``)."""
    return f"{scope}:{_NS}:members"


def mark_key(scope: str, marker: str) -> str:
    """The record that ``marker`` happened for ``scope`` (``<prefix><group>``)."""
    return f"{scope}:{_NS}:mark:{marker}"
