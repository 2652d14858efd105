"""One bounded metadata request: fail at once when every bootstrap server refused us.

``list_topics(timeout=10)`` waits its whole timeout even when the only broker
refused the connection in the first millisecond (librdkafka keeps
reconnecting). A command such as ``consume --once`` or ``relay --once`` must
not sit out that wait per attempt (#12). librdkafka reports
``_ALL_BROKERS_DOWN`` through ``error_cb`` as soon as every known broker is
down, so the request is made in short slices and stops once that report stands
and connections have kept failing for :data:`FAST_FAIL_S` (about one
second). A broker that is up but slow still gets the whole timeout;
a host that drops packets (no refusal) also takes the whole timeout, since
librdkafka reports nothing before its connection set-up timeout.
"""

from __future__ import annotations

import time
from typing import Protocol

from confluent_kafka import KafkaException
from confluent_kafka.admin._metadata import ClusterMetadata

from ._errors import ErrorLog

__all__ = ["FAST_FAIL_S", "SLICE_S", "bounded_metadata"]

SLICE_S = 0.25  # one metadata request's wait; the error callbacks are read in between
# Connections must keep failing this long before we give up: one slow answer from a broker
# that just came back (the "all down" report is not withdrawn by librdkafka) is not a refusal.
FAST_FAIL_S = 1.0


class _MetadataClient(Protocol):
    def list_topics(self, topic: str | None = None, timeout: float = -1) -> ClusterMetadata: ...

    def poll(self, timeout: float = -1) -> object: ...


def bounded_metadata(client: _MetadataClient, errors: ErrorLog, timeout: float) -> ClusterMetadata:
    """``client.list_topics()`` within ``timeout``, raising at once when every broker is down.

    Raises:
        KafkaException: the brokers did not answer (``_ALL_BROKERS_DOWN`` or
            the last slice's own error) or refused us (authentication).
    """
    errors.begin_probe()
    started = time.monotonic()
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            metadata = client.list_topics(timeout=max(min(SLICE_S, left), 0.001))
        except KafkaException:
            client.poll(0)  # error callbacks are served by poll() only
            now = time.monotonic()
            if now >= deadline or (now - started >= FAST_FAIL_S and errors.refusing()):
                raise
        else:
            errors.brokers_answered()
            return metadata
