"""The publish half of the Redis Cluster broker: one script call per slot, one pipeline per master.

A batch is grouped by the slot of each entry's stream (streams carry a hash
tag per (topic, partition), see :class:`~brokers.StreamLayout`), the
slots by the master serving them, and each master gets one pipeline, all
masters at once (threads: the relay is synchronous):

1. ``SET <prefix>outboxkit:incarnation:{n} <candidate> NX GET``: the master's
   incarnation token. Each master can lose its data on its own, so the
   cluster's token is the sorted set of the masters' tokens; a master whose key
   is gone has a new token, and the relay re-publishes its replay window.
2. one ``publish_slot.lua`` per slot: the fences and appends of that
   slot, atomically (fences are kept per stream, in the stream's slot, which
   is enough for per-key order: a key lives in one stream);
3. ``WAIT``/``WAITAOF`` when a durability setting asks for it.

A stream seen for the first time (or on a master that lost its data) is
refused by its script; on a master whose token is unchanged the publisher arms
it and sends that slot again. ``MOVED``/``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``
or an unreachable master (a failover) leave that master's entries ``SKIPPED``
with a transient error: the relay marks what went through, backs off and
retries the rest after the slot map is read again; one warning says so.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Any

import redis
import redis.exceptions
import structlog
from redis.backoff import NoBackoff
from redis.retry import Retry

from brokers._durability import Durability
from brokers._publisher import Fence, OutgoingEntry, PublishResult
from brokers.redis_streams._keys import armed_key, node_incarnation_key, stream_fence_key
from brokers.redis_streams._seed_urls import parse_seed_url
from outbox._redact import redact_url
from outbox.errors import BrokerAuthError, BrokerError, ConfigError

from ._replies import (
    SKIPPED,
    NodeReply,
    SlotCall,
    cluster_token,
    decoded,
    entry_transient,
    fill,
    group,
    is_new,
    raise_fenced,
)
from ._scripts import slot_script
from ._topology import SlotMap

__all__ = ["RedisClusterPublisher"]

log = structlog.get_logger(__name__)

# Replies meaning "the cluster is moving": retry after reading the slot map again.
# redis-py strips the error's first word for these, so they are told by class.
_REDIRECTS = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,
    redis.exceptions.NoScriptError,
    redis.exceptions.ClusterError,
)


class RedisClusterPublisher:
    """Publish batches to Redis Cluster (``redis+cluster://h:p[,h:p...]``, ``rediss+cluster://``).

    Args:
        url: the seeds; ``user:password@`` and TLS options as in docs/brokers.md.
        key_prefix: prefix of the incarnation keys, normally the stream prefix.
        max_len: approximate ``MAXLEN`` of every stream, or ``None``.
        timeout: socket timeout in seconds.
        durability: ``none``, ``replicas=N`` or ``aof``; overrides the URL's option.

    .. versionadded:: 0.3
    """

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "",
        max_len: int | None = None,
        timeout: float = 5.0,
        durability: str | None = None,
    ) -> None:
        if max_len is not None and max_len <= 0:
            msg = f"stream max length must be positive, got {max_len}"
            raise ConfigError(msg)
        self._description = redact_url(url)
        parsed = parse_seed_url(url, durability)
        if parsed.kind != "cluster":
            msg = f"not a redis+cluster:// URL: {self._description}"
            raise ConfigError(msg)
        self._durability = parsed.durability
        options = parsed.client_options()

        def connect(host: str, port: int) -> redis.Redis:
            # No client-side retries: the relay owns backoff and must see each failure.
            return redis.Redis(
                host=host,
                port=port,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0),
                decode_responses=False,
                **options,  # type: ignore[arg-type]
            )

        self._slots = SlotMap(parsed.seeds, connect)
        self._prefix = key_prefix
        self._max_len = "" if max_len is None else str(max_len)
        self._loaded: set[str] = set()
        self._sha = ""
        self._stale = True
        self._warned = False
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="outboxkit-cluster")

    @property
    def description(self) -> str:
        """The URL without its password."""
        return self._description

    @property
    def durability(self) -> Durability:
        """When a batch counts as published (``none``, ``replicas=N``, ``aof``)."""
        return self._durability

    def masters(self) -> list[str]:
        """The masters (``host:port``) serving slots, reading the slot map if needed."""
        if self._stale:
            self._refresh()
        return self._slots.masters()

    def ping(self) -> None:
        """Read the slot map and ``PING`` every master, writing nothing.

        Raises:
            BrokerAuthError: a node refused the credentials.
            BrokerError: a master or every seed is unreachable.
        """
        self._refresh()
        for node in self._slots.masters():
            try:
                self._slots.client(node).ping()
            except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
                raise _auth_error(node, exc) from None
            except redis.exceptions.RedisError as exc:
                msg = f"Redis Cluster node {node} unreachable: {type(exc).__name__}"
                raise BrokerError(msg) from None

    def publish(
        self,
        entries: Sequence[OutgoingEntry],
        *,
        fences: Sequence[Fence] = (),
        incarnation: str | None = None,
    ) -> PublishResult:
        """Append the batch, one script per slot, one pipeline per master (see the module docstring)."""
        calls = group(entries)
        if self._stale:
            self._refresh()
        by_node: dict[str, list[SlotCall]] = {m: [] for m in self._slots.masters()}
        for call in calls:
            by_node.setdefault(self._slots.master_of(call.slot), []).append(call)
        candidate = uuid.uuid4().hex
        known = sorted(set(incarnation.split(","))) if incarnation else []
        replies = self._each(by_node, entries, fences, known, candidate=candidate, arm=None)
        raise_fenced(replies.values())
        token, changed = cluster_token(list(replies.values()), incarnation)
        if changed:
            return PublishResult(outcomes=[SKIPPED] * len(entries), incarnation=token)
        fresh = {
            node: [c for c in by_node[node] if is_new(reply.replies.get(c.slot))]
            for node, reply in replies.items()
            if reply.error is None and not reply.created
        }
        if fresh := {n: cs for n, cs in fresh.items() if cs}:
            armed = {n: replies[n].value or candidate for n in fresh}
            for node, again in self._each(
                fresh, entries, fences, known, candidate=candidate, arm=armed
            ).items():
                raise_fenced([again])
                replies[node].replies.update(again.replies)
                replies[node].errors.update(again.errors)
                if again.error is not None:
                    replies[node].errors.update(dict.fromkeys((c.slot for c in fresh[node]), again.error))
        return self._result(entries, by_node, replies, token)

    def _each(
        self,
        by_node: dict[str, list[SlotCall]],
        entries: Sequence[OutgoingEntry],
        fences: Sequence[Fence],
        known: list[str],
        *,
        candidate: str,
        arm: dict[str, str] | None,
    ) -> dict[str, NodeReply]:
        def send(item: tuple[str, list[SlotCall]]) -> NodeReply:
            token = None if arm is None else arm[item[0]]
            return self._send(item[0], item[1], entries, (fences, known), candidate=candidate, arm=token)

        items = list(by_node.items())
        done = [send(items[0])] if len(items) == 1 else list(self._pool.map(send, items))
        return {reply.node: reply for reply in done}

    def _send(
        self,
        node: str,
        calls: list[SlotCall],
        entries: Sequence[OutgoingEntry],
        guards: tuple[Sequence[Fence], list[str]],
        *,
        candidate: str,
        arm: str | None,
    ) -> NodeReply:
        """One pipeline: the incarnation check (or, with ``arm``, arming new streams with that token)."""
        reply = NodeReply(node)
        client = self._slots.client(node)
        try:
            if node not in self._loaded:
                self._sha = client.script_load(slot_script())
                self._loaded.add(node)
            pipe = client.pipeline(transaction=False)
            if arm is None:
                key = node_incarnation_key(self._prefix, self._slots.incarnation_tag(node))
                pipe.set(key, candidate, nx=True, get=True)
            for call in calls:
                if arm is not None:
                    for stream in call.streams:
                        pipe.set(armed_key(stream), arm, nx=True)
                pipe.evalsha(self._sha, *self._script_args(call, entries, guards))
            if self._durability.waits and calls:
                pipe.execute_command(*self._durability.command())  # type: ignore[no-untyped-call]
            results = pipe.execute(raise_on_error=False)
        except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
            raise _auth_error(node, exc) from None
        except redis.exceptions.RedisError as exc:
            reply.error = f"Redis Cluster node {node} unreachable: {type(exc).__name__}"
            self._stale = True
            return reply
        self._read(reply, calls, results, arm=arm is not None, candidate=candidate)
        return reply

    def _read(
        self, reply: NodeReply, calls: list[SlotCall], results: list[Any], *, arm: bool, candidate: str
    ) -> None:
        position = 0
        if not arm:
            check = results[0]
            position = 1
            if isinstance(check, Exception):
                reply.error = self._response_error(reply.node, check)
                return
            reply.value = candidate if check is None else decoded(check)
            reply.created = check is None
        for call in calls:
            armed = results[position : position + (len(call.streams) if arm else 0)]
            position += len(armed)
            result = results[position]
            position += 1
            failed = next((r for r in (*armed, result) if isinstance(r, Exception)), None)
            if failed is not None:
                reply.errors[call.slot] = self._response_error(reply.node, failed)
            else:
                reply.replies[call.slot] = result
        if self._durability.waits and calls:
            waited = results[position]
            if isinstance(waited, Exception):
                if (error := self._durability.unsupported(str(waited))) is not None:
                    raise error
                reply.error = self._response_error(reply.node, waited)
            elif (shortfall := self._durability.shortfall(waited)) is not None:
                reply.error = f"Redis Cluster node {reply.node}: {shortfall}"

    def _response_error(self, node: str, exc: Exception) -> str:
        text = _first_line(exc)
        if isinstance(exc, redis.exceptions.NoPermissionError | redis.exceptions.AuthenticationError):
            raise _auth_error(node, exc)
        if isinstance(exc, _REDIRECTS) or not isinstance(exc, redis.exceptions.ResponseError):
            self._stale = True
            if isinstance(exc, redis.exceptions.NoScriptError):
                self._loaded.discard(node)
            return f"Redis Cluster node {node}: {type(exc).__name__}: {text}"
        msg = f"Redis refused the publish script: {text}"
        raise BrokerError(msg)

    def _script_args(
        self, call: SlotCall, entries: Sequence[OutgoingEntry], guards: tuple[Sequence[Fence], list[str]]
    ) -> list[Any]:
        fences, known = guards
        keys = [armed_key(s) for s in call.streams]
        keys += [stream_fence_key(s, f.name) for s in call.streams for f in fences]
        keys += [entries[i].stream for i in call.indices]
        args: list[Any] = [len(call.streams), len(fences), len(known), *known]
        args += [*(f.epoch for f in fences), len(call.indices)]
        for index in call.indices:
            entry = entries[index]
            args += (self._max_len, entry.order_key or "", len(entry.fields))
            args += chain.from_iterable(entry.fields.items())
        return [len(keys), *keys, *args]

    def _refresh(self) -> None:
        self._slots.refresh()
        self._stale = False

    def _result(
        self,
        entries: Sequence[OutgoingEntry],
        by_node: dict[str, list[SlotCall]],
        replies: dict[str, NodeReply],
        token: str | None,
    ) -> PublishResult:
        outcomes = [SKIPPED] * len(entries)
        transient: str | None = None
        for node, calls in by_node.items():
            reply = replies[node]
            for call in calls:
                failure = reply.failure(call.slot)
                answer = reply.replies.get(call.slot)
                if failure is not None or answer is None or is_new(answer) or answer[0] == b"STALE":
                    transient = (
                        failure or f"Redis Cluster node {node}: stream not armed under this incarnation"
                    )
                    continue
                fill(outcomes, call.indices, answer)
                transient = transient or entry_transient(outcomes, call.indices)
        if transient is not None and not self._warned:
            self._warned = True
            log.warning("broker.cluster_unsettled", error=transient, broker=self._description)
        elif transient is None:
            self._warned = False
        return PublishResult(outcomes=outcomes, incarnation=token, transient_error=transient)

    def close(self) -> None:
        """Close every connection."""
        self._pool.shutdown(wait=True)
        self._slots.close()


def _auth_error(node: str, exc: Exception) -> BrokerAuthError:
    msg = (
        f"Redis Cluster node {node} refused the relay: {type(exc).__name__}: check the user, password and ACL"
    )
    return BrokerAuthError(msg)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
