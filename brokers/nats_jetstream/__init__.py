"""NATS JetStream broker: publish (relay) and subscribe (consumers) halves.

Needs the ``nats`` extra (``pip install 'outboxkit[nats]'``) and nats-server
2.14 or later with JetStream. URLs: :mod:`brokers.nats_jetstream._config`;
how the toolkit's streams, fences and groups map onto JetStream: docs/brokers.md.

.. versionadded:: 0.2
"""

from __future__ import annotations

from ._config import NATS_SCHEMES, NatsConfig, parse_nats_url
from ._publish import NatsJetStreamPublisher
from ._subscribe import NatsJetStreamSubscriber

__all__ = [
    "NATS_SCHEMES",
    "NatsConfig",
    "NatsJetStreamPublisher",
    "NatsJetStreamSubscriber",
    "parse_nats_url",
]
