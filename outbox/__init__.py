"""outboxkit's write side: publish messages in the caller's transaction.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._autogenerate import autogenerate_filter
from ._backoff import FailureBackoff, RetryWait
from ._crashpoints import CRASH_AT_ENV, CRASH_POINTS, CRASH_SKIP_ENV, crash_point
from ._dberrors import is_missing_table
from ._engine import SQLITE_BUSY_TIMEOUT, async_url, create_async_engine, create_engine, sync_url
from ._envelope import Envelope, key_hash
from ._migrate import (
    BRANCH_LABEL,
    VERSION_TABLE,
    current_revision,
    downgrade,
    head_revision,
    migrations_path,
    upgrade,
    upgrade_sql,
)
from ._publish import (
    TOPIC_PATTERN,
    Message,
    publish,
    publish_many,
    unawaited_publishes,
    watch_async_publishes,
)
from ._redact import redact_text, redact_url
from ._schema import use_schema
from ._serializer import JSONValue, Serializer, default_serializer
from ._tracing import add_trace_ids
from ._wire import decode_entry, encode_entry
from .config import OutboxConfig
from .errors import (
    BrokerAuthError,
    BrokerError,
    ConfigError,
    DecodeError,
    FencedError,
    HeadersError,
    JsonbIncompatibleError,
    KeyTooLongError,
    OutboxError,
    PayloadTooLargeError,
    PublishError,
    SagaError,
    SchemaMissingError,
    SerializationError,
    StorageError,
    TopicError,
    ValidationError,
    tables_missing,
)
from .tables import metadata, outbox_tables

__all__ = [
    "BRANCH_LABEL",
    "CRASH_AT_ENV",
    "CRASH_POINTS",
    "CRASH_SKIP_ENV",
    "SQLITE_BUSY_TIMEOUT",
    "TOPIC_PATTERN",
    "VERSION_TABLE",
    "BrokerAuthError",
    "BrokerError",
    "ConfigError",
    "DecodeError",
    "Envelope",
    "FailureBackoff",
    "FencedError",
    "HeadersError",
    "JSONValue",
    "JsonbIncompatibleError",
    "KeyTooLongError",
    "Message",
    "OutboxConfig",
    "OutboxError",
    "PayloadTooLargeError",
    "PublishError",
    "RetryWait",
    "SagaError",
    "SchemaMissingError",
    "SerializationError",
    "Serializer",
    "StorageError",
    "TopicError",
    "ValidationError",
    "add_trace_ids",
    "async_url",
    "autogenerate_filter",
    "crash_point",
    "create_async_engine",
    "create_engine",
    "current_revision",
    "decode_entry",
    "default_serializer",
    "downgrade",
    "encode_entry",
    "head_revision",
    "is_missing_table",
    "key_hash",
    "metadata",
    "migrations_path",
    "outbox_tables",
    "publish",
    "publish_many",
    "redact_text",
    "redact_url",
    "sync_url",
    "tables_missing",
    "unawaited_publishes",
    "upgrade",
    "upgrade_sql",
    "use_schema",
    "watch_async_publishes",
]

__version__ = "0.1.0"
