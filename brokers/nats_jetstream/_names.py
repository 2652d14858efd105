"""Where each toolkit stream lives in JetStream: stream, subject, consumer and KV key names.

One JetStream stream per toolkit stream, that is per (topic, partition): each
stream has its own Raft group and leader, so partitions spread their leaders
(and their write load) over the cluster, a node failure elects new leaders
only for the streams it led, and a partition's order is the stream's order.
One stream per topic with a subject per partition would put every partition
of a topic behind one leader (docs/brokers.md).

Toolkit names use ``[A-Za-z0-9._:-]``; JetStream forbids ``.`` in stream and
consumer names and ``:`` in KV keys, so names are escaped reversibly: every
character outside ``[A-Za-z0-9-]`` (and ``:`` where allowed) becomes ``_`` and
two hex digits (``orders.created:3`` -> ``orders_2Ecreated:3``).

==========================================  ==========================================
JetStream object                            name
==========================================  ==========================================
stream of ``<prefix><topic>[:<p>]``         ``escape(name)``
its one subject                             ``outboxkit.<escape(name)>``
consumer group ``g``                        durable consumer ``escape(g)``
KV bucket of fences, leases, marks          ``outboxkit``
==========================================  ==========================================
"""

from __future__ import annotations

import re

__all__ = [
    "BUCKET",
    "SUBJECT_ROOT",
    "consumer_name",
    "fence_key",
    "incarnation_key",
    "lease_key",
    "mark_key",
    "members_key",
    "reset_key",
    "stream_name",
    "subject_of",
    "toolkit_stream",
]

SUBJECT_ROOT = "outboxkit"
BUCKET = "outboxkit"
_NAME_KEEP = re.compile(r"[^A-Za-z0-9:-]")
_KEY_KEEP = re.compile(r"[^A-Za-z0-9-]")
_ESCAPED = re.compile(r"_([0-9A-F]{2})")


def _escape(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(lambda m: f"_{ord(m.group()):02X}", text) if text else "_"


def stream_name(stream: str) -> str:
    """The JetStream stream holding toolkit stream ``stream``."""
    return _escape(_NAME_KEEP, stream)


def toolkit_stream(name: str) -> str:
    """The toolkit stream name of JetStream stream ``name`` (inverse of :func:`stream_name`)."""
    return _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), name)


def subject_of(stream: str) -> str:
    """The subject the relay publishes ``stream``'s entries to."""
    return f"{SUBJECT_ROOT}.{stream_name(stream)}"


def consumer_name(group: str) -> str:
    """The durable consumer of consumer group ``group``."""
    return _escape(_NAME_KEEP, group)


def _key(*parts: str) -> str:
    return ".".join(_escape(_KEY_KEEP, p) if i % 2 else p for i, p in enumerate(parts))


def incarnation_key(prefix: str) -> str:
    """The relay's incarnation token of ``prefix``."""
    return _key("relay", prefix, "incarnation")


def fence_key(prefix: str, name: str) -> str:
    """The relay fence ``name`` of ``prefix``."""
    return _key("relay", prefix, "fence", name)


def lease_key(scope: str, stream: str) -> str:
    """The consumer lease of ``stream`` within ``scope`` (``<prefix><group>``)."""
    return _key("consumer", scope, "lease", stream)


def members_key(scope: str) -> str:
    """The live members of ``scope``."""
    return _key("consumer", scope, "members")


def mark_key(scope: str, marker: str) -> str:
    """The record that ``marker`` happened for ``scope``."""
    return _key("consumer", scope, "mark", marker)


def reset_key(stream: str, group: str) -> str:
    """How often ``group`` was reset to the same first unacknowledged entry of ``stream`` (a takeover)."""
    return _key("group", stream, "resets", group)
