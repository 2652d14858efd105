"""The one place where librdkafka errors become the toolkit's errors, for both halves.

* credentials, TLS and cluster ACLs: :class:`~outbox.errors.BrokerAuthError`
  (retrying cannot help: the relay and consumers stop with one line);
* a record the broker refuses for itself (too large, a topic name or ACL it
  refuses, a partition the topic lacks): the entry is *rejected*, then retried
  and dead-lettered like any refused entry;
* anything else (timeouts, no leader, brokers down): transient, a
  :class:`~outbox.errors.BrokerError` the caller backs off from.

Messages name the error code and the broker's text, never settings: the
password lives only in the client configuration.
"""

from __future__ import annotations

import logging
import threading

import structlog
from confluent_kafka import KafkaError

__all__ = ["ClientLog", "ErrorLog", "is_auth", "is_entry_error", "reason"]

_AUTH_CODES = frozenset(
    {
        KafkaError._AUTHENTICATION,  # noqa: SLF001 - librdkafka's local error codes start with _
        KafkaError._SSL,  # noqa: SLF001
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.UNSUPPORTED_SASL_MECHANISM,
        KafkaError.ILLEGAL_SASL_STATE,
    }
)
_ENTRY_CODES = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,  # noqa: SLF001
        KafkaError._UNKNOWN_PARTITION,  # noqa: SLF001
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.POLICY_VIOLATION,
    }
)


def is_auth(error: KafkaError) -> bool:
    """Credentials, TLS or an ACL on the cluster, group or transactional id."""
    return error.code() in _AUTH_CODES


def is_entry_error(error: KafkaError) -> bool:
    """The broker refused this record for itself (size, topic, ACL on the topic)."""
    return error.code() in _ENTRY_CODES


def reason(error: KafkaError) -> str:
    """``CODE_NAME: broker text`` of one error."""
    return f"{error.name()}: {error.str()}"


class ErrorLog:
    """The client's last global error (``error_cb``: brokers down, authentication refused).

    A refused authentication is kept until taken even when later errors come
    (librdkafka follows it with "all brokers down"): it is the one that says
    what to do.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: KafkaError | None = None
        self._auth: KafkaError | None = None
        self._down = False  # librdkafka says "all brokers down" once, when the last one goes
        self._refused = False  # a connection failed since begin_probe(); these repeat while down

    def __call__(self, error: KafkaError) -> None:
        with self._lock:
            self._last = error
            if is_auth(error):
                self._auth = error
            if error.code() == KafkaError._ALL_BROKERS_DOWN:  # noqa: SLF001
                self._down = True
            self._refused = self._refused or error.code() == KafkaError._TRANSPORT or is_auth(error)  # noqa: SLF001

    def begin_probe(self) -> None:
        """Start watching for failed connections (:func:`._reach.bounded_metadata`)."""
        with self._lock:
            self._refused = False

    def brokers_answered(self) -> None:
        """A request succeeded: "all brokers down" is over."""
        with self._lock:
            self._down = False

    def refusing(self) -> bool:
        """Every broker went down (or refused the login), and connections failed since :meth:`begin_probe`."""
        with self._lock:
            return (self._down or self._auth is not None) and self._refused

    def take(self) -> KafkaError | None:
        """The refused authentication, else the last error, since the previous call; None if none."""
        with self._lock:
            found = self._auth or self._last
            self._auth = self._last = None
        return found


class ClientLog:
    """librdkafka's own log lines as ``kafka.client_log`` debug events, never on stderr.

    librdkafka prints to stderr unless given a logger: a broker being down
    would otherwise add lines to a CLI error that must be one line. Errors
    reach the toolkit through :class:`ErrorLog` and delivery reports instead.
    """

    def __init__(self) -> None:
        self._log = structlog.get_logger("brokers.kafka")

    def log(self, level: int, msg: str, *args: object) -> None:
        """Called by confluent-kafka like :meth:`logging.Logger.log`."""
        if level >= logging.DEBUG:
            self._log.debug(
                "kafka.client_log", client_level=logging.getLevelName(level), line=msg % args if args else msg
            )
