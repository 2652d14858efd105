"""The subscribe half of the Redis Streams broker: consumer groups, claims, leases.

Redis traps handled here, each in one place:

- ``NOGROUP``: the group vanished (Redis restarted without persistence, or the
  stream was deleted). The group is recreated from the start of the stream
  (``0``) and the read returns nothing this time; the consumer's inbox absorbs
  the entries it already processed.
- A blocking ``XREADGROUP`` longer than the client's socket timeout would fail
  with a timeout while Redis is fine: :attr:`max_block` stays one second below
  the socket timeout and longer blocks are refused.
- Entries are returned as raw bytes and decoded one by one by the caller, so a
  field that is not UTF-8 breaks only its own entry.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from outbox._redact import redact_url
from outbox.errors import ConfigError

from .._durability import split_durability
from .._subscriber import Delivery, GroupStatus, RedeliveryHorizon
from ._errors import AUTH_FAILURES, FAILURES, broker_error
from ._keys import lease_key, mark_key, members_key
from ._scripts import lua_source

__all__ = ["DEFAULT_SOCKET_TIMEOUT", "RedisStreamsSubscriber"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

DEFAULT_SOCKET_TIMEOUT = dt.timedelta(seconds=10)
_BLOCK_MARGIN = dt.timedelta(seconds=1)


def _ms(value: dt.timedelta) -> int:
    return max(int(value.total_seconds() * 1000), 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _age(now_ms: int, entry_id: bytes | str) -> dt.timedelta:
    millis = int(_text(entry_id).split("-")[0])
    return dt.timedelta(milliseconds=max(now_ms - millis, 0))


class RedisStreamsSubscriber:
    """Consumer groups on Redis Streams (``redis://``, ``rediss://``, ``unix://``).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        socket_timeout: dt.timedelta = DEFAULT_SOCKET_TIMEOUT,
        where: str = "redis",
    ) -> None:
        self._redis = client
        self._socket_timeout = socket_timeout
        self._where = where
        self._acquire = client.register_script(lua_source("acquire_lease"))
        self._release = client.register_script(lua_source("release_lease"))
        self._heartbeat = client.register_script(lua_source("heartbeat"))

    @classmethod
    def from_url(
        cls, url: str, *, socket_timeout: dt.timedelta = DEFAULT_SOCKET_TIMEOUT
    ) -> RedisStreamsSubscriber:
        """Connect to the Redis server at ``url`` (lazily: nothing is sent yet)."""
        if socket_timeout <= _BLOCK_MARGIN:
            msg = f"the Redis socket timeout must be over {_BLOCK_MARGIN.total_seconds():g}s"
            raise ConfigError(msg)
        url, _ = split_durability(url)  # the relay's setting: consumers only read
        try:
            client = aioredis.Redis.from_url(
                url,
                decode_responses=False,
                socket_timeout=socket_timeout.total_seconds(),
                socket_connect_timeout=socket_timeout.total_seconds(),
                health_check_interval=30,
                # No client-side retries: XREADGROUP ">" is not idempotent. A
                # retry after a reset link whose reply was lost silently returns
                # the *next* entries while the first ones sit pending for this
                # consumer, and a key's later event overtakes its earlier one
                # (issue 17). The runner sees the failure and claims them first.
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError as exc:
            msg = f"invalid Redis URL {redact_url(url)}: {exc.args[0] if exc.args else exc}"
            raise ConfigError(redact_url(msg)) from None
        return cls(client, socket_timeout=socket_timeout, where=redact_url(url))

    @property
    def max_block(self) -> dt.timedelta:
        """The longest blocking read: one second below the socket timeout."""
        return self._socket_timeout - _BLOCK_MARGIN

    async def _call(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        # ResponseError passes through: NOGROUP and BUSYGROUP are states the callers handle.
        try:
            return await action()
        except AUTH_FAILURES as exc:  # before ResponseError: NoPermissionError is one
            raise broker_error(exc, where=self._where, what=what) from exc
        except ResponseError:
            raise
        except FAILURES as exc:
            raise broker_error(exc, where=self._where, what=what) from exc

    def _refused(self, what: str, exc: ResponseError) -> Exception:
        return broker_error(exc, where=self._where, what=what)

    async def ensure_group(self, stream: str, group: str) -> None:
        """``XGROUP CREATE stream group 0 MKSTREAM``, ignoring ``BUSYGROUP``."""
        try:
            await self._call(
                "XGROUP CREATE", lambda: self._redis.xgroup_create(stream, group, id="0", mkstream=True)
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise self._refused("XGROUP CREATE", exc) from exc

    async def _recreate(self, stream: str, group: str) -> None:
        log.warning("inbox.group_recreated", stream=stream, group=group, start="0")
        await self.ensure_group(stream, group)

    async def read(
        self, stream: str, group: str, consumer: str, *, count: int, block: dt.timedelta
    ) -> list[Delivery]:
        """``XREADGROUP GROUP group consumer COUNT count BLOCK ms STREAMS stream >``."""
        if block > self.max_block:
            msg = f"blocking read of {block.total_seconds():g}s is not below the socket timeout"
            raise ConfigError(msg)
        response: Any = None
        for recreated in (False, True):
            try:
                response = await self._call(
                    "XREADGROUP",
                    lambda: self._redis.xreadgroup(
                        group, consumer, {stream: ">"}, count=count, block=_ms(block) or 1
                    ),
                )
                break
            except ResponseError as exc:
                if "NOGROUP" not in str(exc) or recreated:
                    raise self._refused("XREADGROUP", exc) from exc
                await self._recreate(stream, group)  # then read again, from the start of the stream
        deliveries: list[Delivery] = []
        for _name, entries in response or []:
            deliveries.extend(
                Delivery(stream=stream, entry_id=_text(entry_id), fields=fields or {}, deliveries=1)
                for entry_id, fields in entries
            )
        return deliveries

    async def claim(
        self, stream: str, group: str, consumer: str, *, min_idle: dt.timedelta, count: int
    ) -> list[Delivery]:
        """``XAUTOCLAIM`` from the start of the pending list, then ``XPENDING`` for the delivery counts."""
        try:
            response: Any = await self._call(
                "XAUTOCLAIM",
                lambda: self._redis.xautoclaim(
                    stream, group, consumer, min_idle_time=_ms(min_idle), start_id="0-0", count=count
                ),
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                await self._recreate(stream, group)
                return []
            raise self._refused("XAUTOCLAIM", exc) from exc
        entries = [(_text(entry_id), fields) for entry_id, fields in response[1] if fields is not None]
        deleted = response[2] if len(response) > 2 else []  # noqa: PLR2004 - Redis >= 7 adds deleted ids
        if deleted:
            log.warning("inbox.pending_entries_deleted", stream=stream, group=group, entries=len(deleted))
        if not entries:
            return []
        counts = await self._delivery_counts(
            stream, group, consumer, entries[0][0], entries[-1][0], len(entries)
        )
        return [
            Delivery(stream=stream, entry_id=entry_id, fields=fields, deliveries=counts.get(entry_id, 1))
            for entry_id, fields in entries
        ]

    async def _delivery_counts(
        self, stream: str, group: str, consumer: str, first: str, last: str, count: int
    ) -> dict[str, int]:
        rows: Any = await self._call(
            "XPENDING",
            lambda: self._redis.xpending_range(
                stream, group, min=first, max=last, count=count, consumername=consumer
            ),
        )
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    async def ack(self, stream: str, group: str, entry_ids: Sequence[str]) -> None:
        """``XACK``; acknowledging an entry of a vanished group is a no-op."""
        if entry_ids:
            await self._call("XACK", lambda: self._redis.xack(stream, group, *entry_ids))

    async def acquire_lease(self, group: str, name: str, owner: str, *, ttl: dt.timedelta) -> bool:
        """Take or renew the lease key (``SET PX`` if free or ours, atomically in Lua)."""
        key = lease_key(group, name)
        result: Any = await self._call("lease", lambda: self._acquire(keys=[key], args=[owner, _ms(ttl)]))
        return bool(result)

    async def release_lease(self, group: str, name: str, owner: str) -> None:
        """Delete the lease key if ``owner`` holds it."""
        key = lease_key(group, name)
        await self._call("lease release", lambda: self._release(keys=[key], args=[owner]))

    async def heartbeat(self, group: str, member: str, *, ttl: dt.timedelta) -> int:
        """Score ``member`` by its expiry in a sorted set; count the members not expired."""
        key = members_key(group)
        result: Any = await self._call(
            "heartbeat", lambda: self._heartbeat(keys=[key], args=[member, _ms(ttl)])
        )
        return int(result)

    async def group_status(self, stream: str, group: str) -> GroupStatus | None:
        """From ``XINFO GROUPS``: pending, lag (Redis >= 7) and consumers of the group."""
        for status in await self._groups_of(stream):
            if status.group == group:
                return status
        return None

    async def _groups_of(self, stream: str) -> list[GroupStatus]:
        try:
            groups: Any = await self._call("XINFO GROUPS", lambda: self._redis.xinfo_groups(stream))
        except ResponseError:  # no such key
            return []
        result = []
        for info in groups:
            lag = info.get("lag")
            result.append(
                GroupStatus(
                    stream=stream,
                    group=_text(info["name"]),
                    pending=int(info["pending"]),
                    behind=None if lag is None else int(lag),
                    consumers=int(info["consumers"]),
                )
            )
        return result

    async def list_groups(self, prefix: str = "") -> list[GroupStatus]:
        """``SCAN`` for streams starting with ``prefix``, then ``XINFO GROUPS`` on each."""

        async def scan() -> list[str]:
            return [
                _text(n) async for n in self._redis.scan_iter(match=f"{prefix}*", count=1000, _type="stream")
            ]

        streams = await self._call("SCAN", scan)
        result: list[GroupStatus] = []
        for stream in sorted(streams):
            result.extend(await self._groups_of(stream))
        return result

    async def list_streams(self, prefix: str = "") -> dict[str, int]:
        """``SCAN`` for streams starting with ``prefix``, then ``XLEN`` on each; empty ones are left out."""

        async def scan() -> list[str]:
            return [
                _text(n) async for n in self._redis.scan_iter(match=f"{prefix}*", count=1000, _type="stream")
            ]

        result: dict[str, int] = {}
        for stream in sorted(await self._call("SCAN", scan)):
            length: Any = await self._call("XLEN", lambda s=stream: self._redis.xlen(s))  # type: ignore[misc]
            if int(length):
                result[stream] = int(length)
        return result

    async def oldest_entry_time(self, stream: str) -> dt.datetime | None:
        """The time part of the first entry id of ``stream``."""
        first: Any = await self._call("XRANGE", lambda: self._redis.xrange(stream, "-", "+", count=1))
        if not first:
            return None
        millis = int(_text(first[0][0]).split("-")[0])
        return dt.datetime.fromtimestamp(millis / 1000, tz=dt.UTC)

    async def redelivery_horizon(self, stream: str, group: str) -> RedeliveryHorizon:
        """From ``XINFO STREAM`` and the ``XPENDING`` summary; ages from the entry ids, in Redis's clock."""
        try:
            info: Any = await self._call("XINFO STREAM", lambda: self._redis.xinfo_stream(stream))
        except ResponseError:  # no such key: nothing to deliver again
            return RedeliveryHorizon(stream, group, 0, None, 0, None)
        try:
            summary: Any = await self._call("XPENDING", lambda: self._redis.xpending(stream, group))
        except ResponseError:  # NOGROUP: nothing pending
            summary = {"pending": 0, "min": None}
        now: Any = await self._call("TIME", self._redis.time)
        now_ms = int(now[0]) * 1000 + int(now[1]) // 1000
        first = info.get("first-entry")
        added = info.get("entries-added")  # Redis >= 7
        length = int(info["length"])
        return RedeliveryHorizon(
            stream=stream,
            group=group,
            entries=length,
            oldest_entry_age=_age(now_ms, first[0]) if first else None,
            pending=int(summary["pending"]),
            oldest_pending_age=_age(now_ms, summary["min"]) if summary["min"] else None,
            removed=None if added is None else int(added) - length,
        )

    async def mark_once(self, scope: str, marker: str) -> bool:
        """``SET <scope>:outboxkit:mark:<marker> 1 NX``: atomic, so one of racing processes wins."""
        key = mark_key(scope, marker)
        result: Any = await self._call("SET", lambda: self._redis.set(key, b"1", nx=True))
        return bool(result)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
