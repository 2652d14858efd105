"""The consume side: inbox table, idempotent handlers and the consumer runner.

Handlers get ``(message, session)``; the inbox row ``(consumer, message_id)``
is inserted in the handler's transaction, so its effects (and the follow-up
messages it publishes through the outbox) commit once per message. See
docs/consumers.md.

.. versionadded:: 0.1
"""

from __future__ import annotations

from brokers import GroupStatus

from ._config import ConsumerConfig, Mode, default_consumer_name
from ._dead_letters import DeadLetter, purge_dead_letters, retry_dead_letter, select_dead_letters
from ._dedup import (
    AsyncHandler,
    Outcome,
    SyncHandler,
    process,
    process_async,
    record_message,
    record_message_async,
    record_messages,
    record_messages_async,
)
from ._follow_up import follow_up_headers, publish_follow_up, publish_follow_up_async
from ._guard import HandlerContractError
from ._parking import PARKED_ERROR
from ._registry import HandlerSpec, Registry, Reject
from ._retention import purge_inbox
from ._runner import ConsumerRunner
from ._status import consumer_group_status, consumer_group_status_async
from .tables import inbox, inbox_dead_letter

__all__ = [
    "PARKED_ERROR",
    "AsyncHandler",
    "ConsumerConfig",
    "ConsumerRunner",
    "DeadLetter",
    "GroupStatus",
    "HandlerContractError",
    "HandlerSpec",
    "Mode",
    "Outcome",
    "Registry",
    "Reject",
    "SyncHandler",
    "consumer_group_status",
    "consumer_group_status_async",
    "default_consumer_name",
    "follow_up_headers",
    "inbox",
    "inbox_dead_letter",
    "process",
    "process_async",
    "publish_follow_up",
    "publish_follow_up_async",
    "purge_dead_letters",
    "purge_inbox",
    "record_message",
    "record_message_async",
    "record_messages",
    "record_messages_async",
    "retry_dead_letter",
    "select_dead_letters",
]
