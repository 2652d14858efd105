"""Kafka broker (``kafka://``, ``kafka+ssl://``): publish (relay) and subscribe (consumers) halves.

Needs the ``kafka`` extra (``pip install 'outboxkit[kafka]'``, confluent-kafka);
nothing imports this package unless a ``kafka://`` URL is used.

.. versionadded:: 0.2
"""

from __future__ import annotations

from ._config import KafkaConfig, Partitioner, parse_kafka_url
from ._publish import KafkaPublisher
from ._subscribe import KafkaSubscriber

__all__ = [
    "KafkaConfig",
    "KafkaPublisher",
    "KafkaSubscriber",
    "Partitioner",
    "parse_kafka_url",
]
