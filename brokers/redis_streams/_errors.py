"""The one boundary where redis-py's errors become the toolkit's, for both halves of the Redis broker.

Messages name the server (URL without its password) and the operation, never
an entry's fields: a Redis error text can quote the arguments of the command.
"""

from __future__ import annotations

from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from outbox.errors import BrokerAuthError, BrokerError

__all__ = ["AUTH_FAILURES", "FAILURES", "OUTAGES", "broker_error", "first_line"]

# Errors of the connection, not of the command: the caller backs off and tries again.
OUTAGES: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)
# Wrong credentials or ACL rules; NoPermissionError is also a ResponseError.
AUTH_FAILURES = (AuthenticationError, NoPermissionError)
# Everything redis-py raises, plus socket errors that escape it.
FAILURES: tuple[type[Exception], ...] = (RedisError, OSError)


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s text, or its class name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def broker_error(exc: Exception, *, where: str, what: str) -> BrokerError:
    """The toolkit error for a redis-py failure of ``what`` (``"XREADGROUP"``, ``"the relay"``) at ``where``.

    Credentials and ACL refusals are :class:`~outbox.errors.BrokerAuthError`
    (retrying cannot help, so nobody retries them); the rest is
    :class:`~outbox.errors.BrokerError`.
    """
    name = type(exc).__name__
    if isinstance(exc, AUTH_FAILURES):
        return BrokerAuthError(
            f"Redis at {where} refused {what}: {name}: check the user, password and ACL rules"
        )
    if isinstance(exc, ResponseError):
        return BrokerError(f"Redis at {where} refused {what}: {first_line(exc)}")
    if isinstance(exc, OUTAGES):
        return BrokerError(f"Redis at {where} unavailable during {what}: {name}")
    return BrokerError(f"Redis at {where} refused {what}: {name}: {first_line(exc)}")
