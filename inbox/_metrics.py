"""Prometheus metrics of the consumer runner (the default registry; served by ``--metrics-port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "DEAD_LETTERED",
    "FAILURES",
    "HANDLER_SECONDS",
    "LAG",
    "MESSAGES",
    "PENDING",
    "TRACE_CONTEXT_IGNORED",
]

MESSAGES = Counter(
    "outboxkit_inbox_messages",
    "Messages finished by a consumer, by outcome (processed, duplicate, dead_lettered, ignored).",
    ["consumer", "topic", "outcome"],
)
FAILURES = Counter(
    "outboxkit_inbox_handler_failures",
    "Handler attempts that raised (each retry counts).",
    ["consumer", "topic"],
)
DEAD_LETTERED = Counter(
    "outboxkit_inbox_dead_letters",
    "Entries set aside as dead letters (undecodable, rejected, or over the delivery limit).",
    ["consumer", "stream"],
)
HANDLER_SECONDS = Histogram(
    "outboxkit_inbox_handler_seconds",
    "Time from the start of a message's transaction to its commit.",
    ["consumer", "topic"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LAG = Gauge(
    "outboxkit_inbox_lag",
    "Entries the group still has to finish on a stream: pending plus not yet delivered.",
    ["consumer", "stream"],
)
PENDING = Gauge(
    "outboxkit_inbox_pending",
    "Entries delivered to the group and not acknowledged yet.",
    ["consumer", "stream"],
)
TRACE_CONTEXT_IGNORED = Counter(
    "outboxkit_inbox_trace_context_ignored",
    "Incoming trace context ignored (malformed or oversized); the message is processed as usual.",
    ["consumer", "reason"],
)
