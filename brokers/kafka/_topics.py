"""How outbox streams map onto Kafka topics and partitions, in one place for both halves.

A stream of :class:`~brokers.StreamLayout` is one Kafka *partition*:

=================================  =============================================
stream                             Kafka
=================================  =============================================
``<prefix><topic>``                topic ``<prefix><topic>``, partition 0 (one partition)
``<prefix><topic>:<p>``            topic ``<prefix><topic>``, partition ``p`` (``n`` partitions)
=================================  =============================================

So a layout with ``n`` partitions for a topic needs a Kafka topic with exactly
``n`` partitions (the consumers create missing topics so, and refuse a topic
with another count: partitions nobody reads would be skipped silently).

Kafka topic names are at most 249 characters of ``A-Z a-z 0-9 . _ -``: a stream
prefix for Kafka must not contain ``:`` (use ``orders-svc.``). The toolkit's
own fence topic is ``<prefix>__outboxkit_fences``; outbox topics start with a
letter or digit, so it never collides with one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from outbox.errors import ConfigError

__all__ = ["MAX_TOPIC_LENGTH", "KafkaTarget", "check_prefix", "fence_topic", "stream_name", "target_of"]

MAX_TOPIC_LENGTH = 249
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_PARTITIONED = re.compile(r"(.+):(\d{1,4})")
_FENCE_TOPIC = "__outboxkit_fences"


@dataclass(frozen=True, slots=True)
class KafkaTarget:
    """The Kafka topic and partition of one stream."""

    topic: str
    partition: int


def target_of(stream: str) -> KafkaTarget:
    """The Kafka topic and partition of ``stream``.

    Raises:
        ConfigError: the name is not a valid Kafka topic name (characters, 249 at most).
    """
    match = _PARTITIONED.fullmatch(stream)
    topic, partition = (match.group(1), int(match.group(2))) if match else (stream, 0)
    if not _TOPIC.fullmatch(topic) or topic in {".", ".."}:
        length = (
            f" ({len(topic)} characters, at most {MAX_TOPIC_LENGTH})" if len(topic) > MAX_TOPIC_LENGTH else ""
        )
        msg = f"{topic[:80]!r} is not a valid Kafka topic name{length}: use A-Z a-z 0-9 . _ - (no ':')"
        raise ConfigError(msg)
    return KafkaTarget(topic, partition)


def stream_name(topic: str, partition: int, partitions: int) -> str:
    """The stream of Kafka ``topic``/``partition`` in a topic of ``partitions`` partitions."""
    return topic if partitions == 1 else f"{topic}:{partition}"


def check_prefix(prefix: str) -> None:
    """Refuse a stream prefix that cannot start a Kafka topic name."""
    if prefix and not _TOPIC.fullmatch(prefix):
        msg = (
            f"stream prefix {prefix!r} cannot start a Kafka topic name:"
            " use A-Z a-z 0-9 . _ - (e.g. 'orders-svc.')"
        )
        raise ConfigError(msg)


def fence_topic(prefix: str) -> str:
    """The compacted topic holding the newest fence epochs and the incarnation token of ``prefix``."""
    return f"{prefix}{_FENCE_TOPIC}"
