"""Stream names and partitions, shared by every broker's publish and subscribe halves.

A topic maps to one stream, ``<prefix><topic>``, or, when it is given ``n``
partitions, to ``n`` streams ``<prefix><topic>:<p>`` for ``p`` in ``0..n-1``;
a message goes to partition ``key_hash % n`` (see :func:`outbox.key_hash`), so
all messages of one key share a stream and keep their order. ``:`` cannot
occur in a topic, so names never collide.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from outbox._publish import TOPIC_PATTERN
from outbox.errors import ConfigError

__all__ = ["MAX_PARTITIONS", "StreamLayout"]

MAX_PARTITIONS = 1024
_TOPIC = re.compile(TOPIC_PATTERN)
_PREFIX = re.compile(r"[A-Za-z0-9._:-]{0,64}")


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamLayout:
    """How topics map to streams: the same layout must be used by relay and consumers.

    Attributes:
        prefix: prepended to every stream name (e.g. ``"orders-svc:"``).
        partitions: partitions per topic; topics not listed use ``default_partitions``.
        default_partitions: partitions of any other topic (1 = one stream, no suffix).

    .. versionadded:: 0.1
    """

    prefix: str = ""
    partitions: Mapping[str, int] = field(default_factory=dict)
    default_partitions: int = 1

    def __post_init__(self) -> None:
        if not _PREFIX.fullmatch(self.prefix):
            msg = f"stream prefix {self.prefix!r} must be at most 64 of A-Z a-z 0-9 . _ : -"
            raise ConfigError(msg)
        for topic, count in {**self.partitions, "*": self.default_partitions}.items():
            if topic != "*" and not _TOPIC.fullmatch(topic):
                msg = f"partitions given for invalid topic {topic!r}"
                raise ConfigError(msg)
            if not isinstance(count, int) or not 1 <= count <= MAX_PARTITIONS:
                msg = f"partitions of {topic!r} must be between 1 and {MAX_PARTITIONS}, got {count!r}"
                raise ConfigError(msg)

    def partitions_of(self, topic: str) -> int:
        """Number of partitions (streams) of ``topic``."""
        return self.partitions.get(topic, self.default_partitions)

    def stream_for(self, topic: str, key_hash: int) -> str:
        """The stream a message of ``topic`` with ``key_hash`` goes to."""
        count = self.partitions_of(topic)
        if count == 1:
            return f"{self.prefix}{topic}"
        return f"{self.prefix}{topic}:{key_hash % count}"

    def streams_of(self, topic: str) -> list[str]:
        """Every stream of ``topic``, partition 0 first."""
        count = self.partitions_of(topic)
        if count == 1:
            return [f"{self.prefix}{topic}"]
        return [f"{self.prefix}{topic}:{p}" for p in range(count)]
