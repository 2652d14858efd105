"""The one exception hierarchy of outboxkit.

Every error the toolkit raises on purpose derives from :class:`OutboxError`;
builtins are mixed in where callers already expect them::

    OutboxError
    ├── ConfigError(ValueError)          bad setting, table name, URL
    ├── ValidationError(ValueError)      a message refused at publish
    │   ├── TopicError                   topic does not match TOPIC_PATTERN
    │   ├── KeyTooLongError              key over the configured length
    │   ├── HeadersError                 headers not a str -> str mapping
    │   ├── PayloadTooLargeError         serialized payload over the size limit
    │   └── SerializationError           payload not encodable as JSON
    │       └── JsonbIncompatibleError   NaN/Infinity, NUL, lone surrogate
    ├── DecodeError(ValueError)          a broker entry that is not a valid envelope
    ├── StorageError                     database unreachable or refusing
    │   └── SchemaMissingError           toolkit tables not created yet
    ├── BrokerError                      broker unreachable or refusing
    │   ├── BrokerAuthError              credentials or ACL refused (not retried)
    │   ├── PublishError                 the broker rejected a message
    │   └── FencedError                  a newer relay owns the partition (stale lease)
    └── SagaError                        saga definition or state problem

The class docstring is the default message, so ``raise SchemaMissingError()``
already tells the user what to do.

.. versionadded:: 0.1
"""

from __future__ import annotations

__all__ = [
    "MIGRATE_HINT",
    "BrokerAuthError",
    "BrokerError",
    "ConfigError",
    "DecodeError",
    "FencedError",
    "HeadersError",
    "JsonbIncompatibleError",
    "KeyTooLongError",
    "OutboxError",
    "PayloadTooLargeError",
    "PublishError",
    "SagaError",
    "SchemaMissingError",
    "SerializationError",
    "StorageError",
    "TopicError",
    "ValidationError",
    "tables_missing",
]


class OutboxError(Exception):
    """An outboxkit error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip().splitlines()[0])


class ConfigError(OutboxError, ValueError):
    """Invalid outboxkit configuration."""


class ValidationError(OutboxError, ValueError):
    """The message was refused before anything was written."""


class TopicError(ValidationError):
    """The topic does not match the documented topic pattern."""


class KeyTooLongError(ValidationError):
    """The message key is longer than the configured limit."""


class HeadersError(ValidationError):
    """Headers must be a mapping of str to str."""


class PayloadTooLargeError(ValidationError):
    """The serialized payload is larger than the configured limit."""


class SerializationError(ValidationError):
    """The payload cannot be serialized to JSON."""


class JsonbIncompatibleError(SerializationError):
    """The payload holds a value PostgreSQL jsonb refuses (NaN, Infinity, NUL, lone surrogate)."""


class DecodeError(OutboxError, ValueError):
    """A broker entry is not a valid outboxkit envelope."""


class StorageError(OutboxError):
    """The database is unreachable or refused the operation."""


MIGRATE_HINT = (
    "run `outboxkit migrate --db URL`"
    " (or `alembic upgrade heads` where the toolkit's revisions are in your own Alembic history)"
)
"""What every missing-table error tells the user to run, for both ways of adopting (docs/adopting.md)."""


class SchemaMissingError(StorageError):
    """The outboxkit tables are missing: run `outboxkit migrate` (or your `alembic upgrade heads`)."""


def tables_missing(what: str, where: str | None = None) -> SchemaMissingError:
    """The one missing-table error: ``"<what> is missing in <where>: <MIGRATE_HINT>"``.

    ``what`` names the tables (``"inbox table 'outboxkit_inbox'"``); ``where``
    is a redacted URL when the caller has one.
    """
    place = f" in {where}" if where else ""
    return SchemaMissingError(f"{what} is missing{place}: {MIGRATE_HINT}")


class BrokerError(OutboxError):
    """The broker is unreachable or refused the operation."""


class BrokerAuthError(BrokerError):
    """The broker refused the credentials or the command: check the user, password and ACL rules."""


class PublishError(BrokerError):
    """The broker rejected the message."""


class FencedError(BrokerError):
    """The broker refused a batch: another relay has taken over its partition."""


class SagaError(OutboxError):
    """Invalid saga definition or saga state."""
