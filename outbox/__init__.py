"""outboxkit's write side: publish messages in the caller's transaction.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._autogenerate import autogenerate_filter
from ._crashpoints import CRASH_AT_ENV, CRASH_POINTS, CRASH_SKIP_ENV, crash_point
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
from ._publish import TOPIC_PATTERN, Message, publish, publish_many
from ._redact import redact_url
from ._schema import use_schema
from ._serializer import JSONValue, Serializer, default_serializer
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
)
from .tables import metadata, outbox_tables

__all__ = [
    "BRANCH_LABEL",
    "CRASH_AT_ENV",
    "CRASH_POINTS",
    "CRASH_SKIP_ENV",
    "TOPIC_PATTERN",
    "VERSION_TABLE",
    "BrokerAuthError",
    "BrokerError",
    "ConfigError",
    "DecodeError",
    "Envelope",
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
    "SagaError",
    "SchemaMissingError",
    "SerializationError",
    "Serializer",
    "StorageError",
    "TopicError",
    "ValidationError",
    "autogenerate_filter",
    "crash_point",
    "current_revision",
    "decode_entry",
    "default_serializer",
    "downgrade",
    "encode_entry",
    "head_revision",
    "key_hash",
    "metadata",
    "migrations_path",
    "outbox_tables",
    "publish",
    "publish_many",
    "redact_url",
    "upgrade",
    "upgrade_sql",
    "use_schema",
]

__version__ = "0.1.0"
