"""The publish half of the Redis Streams broker: a whole batch in one Lua call.

One ``EVALSHA`` per batch does, atomically on the server:

1. read (or create) the *incarnation* key ``<prefix>outboxkit:incarnation``,
   a random token; a Redis that lost its data (restarted without persistence,
   ``FLUSHALL``) no longer has it. When it differs from the token the relay
   last saw, nothing is written and the new token is returned: the relay
   first re-publishes its replay window, then the new rows, so per-key order
   holds in the new streams too;
2. check every fence ``<prefix>outboxkit:fence:<name>`` against the batch's
   epochs and refuse the whole batch, writing nothing, when one is newer (the
   relay lost its lease while paused); otherwise advance them;
3. ``XADD`` each entry (``MAXLEN ~ n`` when configured) with ``pcall``, so an
   entry Redis refuses (``WRONGTYPE``, ...) is reported for itself, later
   entries of the same order key are skipped, and the rest goes through.
   When every entry went in, the reply is just ``ALL`` (the relay needs no
   entry ids), which keeps the reply small.

Because a script is atomic, a fence check and the appends it guards cannot be
interleaved with another relay's batch: this is what makes fencing exact.
With a durability setting (``?durability=replicas=1``, see
:mod:`brokers._durability`) a ``WAIT`` follows the script, and a batch the
replicas did not acknowledge in time fails as a whole. Redis Cluster has its
own publisher, which sends one script per slot (:mod:`brokers.redis_cluster`).
The script is ``publish_batch.lua`` beside this module.

.. versionadded:: 0.1
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from itertools import chain

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from outbox._redact import redact_url
from outbox.errors import BrokerError, ConfigError, FencedError

from .._durability import Durability, split_durability
from .._publisher import EntryOutcome, EntryStatus, Fence, OutgoingEntry, PublishResult
from ._errors import broker_error
from ._keys import fence_key, incarnation_key
from ._scripts import lua_source

__all__ = ["RedisStreamsPublisher"]

# Errors that are the server's state, not the entry's: back off, do not count an attempt.
_TRANSIENT_PREFIXES = (
    "OOM",
    "LOADING",
    "BUSY",
    "READONLY",
    "MASTERDOWN",
    "NOREPLICAS",
    "CLUSTERDOWN",
    "TRYAGAIN",
)


class RedisStreamsPublisher:
    """Publish batches to Redis Streams (``redis://``, ``rediss://`` for TLS, ``unix://``).

    Args:
        url: Redis URL; passwords and ACL users (``redis://user:pw@host``) are supported.
        key_prefix: prefix of the toolkit's own keys (incarnation, fences),
            normally the stream prefix.
        max_len: approximate ``MAXLEN`` of every stream, or ``None`` (keep
            everything). Trimming deletes entries consumers may not have read:
            a data-loss trade-off, see docs/relay.md.
        timeout: socket timeout in seconds.
        durability: ``none``, ``replicas=N`` or ``aof``; overrides the URL's
            ``durability`` option.
        client: an existing client (Redis Sentinel's master); ``url`` then only
            describes it.

    .. versionchanged:: 0.3 ``durability`` and ``client``.
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "",
        max_len: int | None = None,
        timeout: float = 5.0,
        durability: str | None = None,
        client: redis.Redis | None = None,
    ) -> None:
        if max_len is not None and max_len <= 0:
            msg = f"stream max length must be positive, got {max_len}"
            raise ConfigError(msg)
        self._description = redact_url(url)
        url, self._durability = split_durability(url, durability)
        try:
            # No client-side retries: the relay owns backoff and must see each failure.
            self._client = client or redis.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
            )
        except (ValueError, redis.RedisError) as exc:
            msg = f"invalid broker URL {self._description}: {type(exc).__name__}"
            raise ConfigError(msg) from None
        self._script = self._client.register_script(lua_source("publish_batch"))
        self._prefix = key_prefix
        self._max_len = "" if max_len is None else str(max_len)

    @property
    def description(self) -> str:
        """The URL without its password."""
        return self._description

    @property
    def durability(self) -> Durability:
        """When a batch counts as published (``none``, ``replicas=N``, ``aof``)."""
        return self._durability

    def ping(self) -> None:
        """``PING``: writes nothing (see :meth:`brokers.Publisher.ping`)."""
        try:
            self._client.ping()
        except redis.RedisError as exc:
            raise broker_error(exc, where=self._description, what="PING") from None

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        """Append the batch in one ``EVALSHA`` (see the module docstring)."""
        keys = [incarnation_key(self._prefix)]
        keys += [fence_key(self._prefix, f.name) for f in fences]
        keys += [e.stream for e in entries]
        expected = incarnation or ""
        # A fresh candidate each call: a key recreated after data loss never
        # matches the token the relay knows.
        args: list[str | int] = [
            uuid.uuid4().hex,
            expected,
            len(fences),
            *(f.epoch for f in fences),
            len(entries),
        ]
        max_len = self._max_len
        for entry in entries:
            fields = entry.fields
            args += (max_len, entry.order_key or "", len(fields))
            args += chain.from_iterable(fields.items())  # name, value, name, value, ...
        try:
            reply = self._script(keys=keys, args=args)
            if self._durability.waits and entries:
                self._wait()
        except redis.RedisError as exc:
            raise broker_error(exc, where=self._description, what="the relay's publish script") from None
        return self._result(reply, len(entries))

    def _wait(self) -> None:
        """``WAIT``/``WAITAOF`` after the script; a shortfall fails the batch (rows stay unmarked)."""
        try:
            reply = self._client.execute_command(*self._durability.command())  # type: ignore[no-untyped-call]
        except redis.exceptions.ResponseError as exc:
            if (error := self._durability.unsupported(str(exc))) is not None:
                raise error from None
            raise  # the caller's boundary maps it
        if (shortfall := self._durability.shortfall(reply)) is not None:
            raise BrokerError(f"Redis at {self._description}: {shortfall}")

    def _result(self, reply: list[bytes], count: int) -> PublishResult:
        incarnation = reply[0].decode()
        if reply[1] == b"INCARNATION":
            return PublishResult(
                outcomes=[EntryOutcome(EntryStatus.SKIPPED)] * count, incarnation=incarnation
            )
        if reply[1] == b"ALL":  # every entry appended: no per-entry ids to ship back
            return PublishResult(outcomes=[_PUBLISHED] * count, incarnation=incarnation)
        if reply[1] == b"FENCED":
            msg = f"fence {reply[2].decode()} is at epoch {reply[3].decode()}: another relay took over"
            raise FencedError(msg)
        outcomes: list[EntryOutcome] = []
        transient: str | None = None
        for item in reply[2:]:
            text = item.decode()
            if text == "-":
                outcomes.append(EntryOutcome(EntryStatus.SKIPPED))
            elif text.startswith("!"):
                error = text[1:]
                if error.startswith(_TRANSIENT_PREFIXES):
                    transient = error
                    outcomes.append(EntryOutcome(EntryStatus.SKIPPED, error=error))
                else:
                    outcomes.append(EntryOutcome(EntryStatus.REJECTED, error=error))
            else:
                outcomes.append(EntryOutcome(EntryStatus.PUBLISHED, entry_id=text))
        return PublishResult(outcomes=outcomes, incarnation=incarnation, transient_error=transient)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


_PUBLISHED = EntryOutcome(EntryStatus.PUBLISHED)
