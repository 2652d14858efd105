"""Compare-and-set on the ``outboxkit`` KV bucket, with the server's write time of each key.

nats-py's ``KeyValue.get`` does not return when a key was written, and the
leases need it (a lease is expired when its last renewal is older than its
TTL). So reads here are a stream ``MSG.GET`` of the key's last message through
the stream leader (never a possibly stale replica: a compare-and-set loop must
see the newest revision), and writes are publishes with
``Nats-Expected-Last-Subject-Sequence``, exactly what the KV layer does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats.js.errors

from ._names import BUCKET

if TYPE_CHECKING:
    from ._connection import NatsConnection

__all__ = ["Conflict", "KvEntry", "KvStore"]

_STREAM = f"KV_{BUCKET}"
# "wrong last sequence": 10071 for the stream's, 10164 for the subject's (nats-server 2.12+).
_WRONG_LAST_SEQUENCE = frozenset({10071, 10164})
_OPERATION = "KV-Operation"


class Conflict(Exception):  # noqa: N818 - an outcome, not a failure
    """The key changed since it was read: read again."""


@dataclass(frozen=True, slots=True)
class KvEntry:
    """A key's newest value (``None``: deleted) with its revision and the server's write time."""

    value: bytes | None
    revision: int
    written: dt.datetime


class KvStore:
    """Read and conditionally write keys of the toolkit's bucket."""

    def __init__(self, connection: NatsConnection) -> None:
        self._connection = connection

    async def get(self, key: str) -> KvEntry | None:
        """The key's newest entry, or None if it was never written (or purged)."""
        await self._connection.bucket()
        js = await self._connection.jetstream()
        try:
            raw = await js.get_msg(_STREAM, subject=f"$KV.{BUCKET}.{key}", direct=False)
        except nats.js.errors.NotFoundError:
            return None
        operation = (raw.headers or {}).get(_OPERATION)
        value = None if operation in {"DEL", "PURGE"} else (raw.data or b"")
        written = raw.time or dt.datetime.now(dt.UTC)
        return KvEntry(value=value, revision=raw.seq or 0, written=written)

    async def put(self, key: str, value: bytes, *, revision: int) -> None:
        """Write ``value`` if the key is still at ``revision`` (0: never written).

        Raises:
            Conflict: it was written since.
        """
        await self._publish(key, value, revision, headers={})

    async def delete(self, key: str, *, revision: int) -> None:
        """Delete the key (a tombstone) if it is still at ``revision``."""
        await self._publish(key, b"", revision, headers={_OPERATION: "DEL"})

    async def _publish(self, key: str, value: bytes, revision: int, *, headers: dict[str, str]) -> None:
        await self._connection.bucket()
        js = await self._connection.jetstream()
        headers = headers | {"Nats-Expected-Last-Subject-Sequence": str(revision)}
        try:
            await js.publish(f"$KV.{BUCKET}.{key}", value, headers=headers)
        except nats.js.errors.APIError as exc:
            if exc.err_code in _WRONG_LAST_SEQUENCE:
                raise Conflict(key) from None
            raise
