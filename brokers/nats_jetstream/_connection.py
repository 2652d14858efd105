"""One asyncio connection to a JetStream cluster, shared by both halves.

It is the one place where nats-py errors become the toolkit's:
:class:`~outbox.errors.BrokerAuthError` for refused credentials and permission
violations (retrying cannot help), :class:`~outbox.errors.BrokerError` for an
unreachable cluster, a timeout or a JetStream API error. Messages name the
URL without its secrets, never a payload.

nats-py reports authorization and permission errors through its error
callback, not as the exception of the call that caused them (a request
denied by a permission just times out), so the callback keeps the last one
and :meth:`NatsConnection.failure` turns it into the error to raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any, TypeVar

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig

from outbox.errors import BrokerAuthError, BrokerError

from ._names import BUCKET, stream_name, subject_of

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from nats.aio.client import Client
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

    from ._config import NatsConfig

__all__ = ["NatsConnection"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
_AUTH_MARKERS = ("authorization violation", "authentication", "user authentication expired")
_PERMISSION_MARKER = "permissions violation"
_CLUSTER_REPLICAS = 3


class NatsConnection:
    """A lazily opened connection with the cluster's replica default, streams and KV bucket."""

    def __init__(self, config: NatsConfig, *, max_len: int | None = None) -> None:
        self.config = config
        self._max_len = max_len
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._streams: set[str] = set()
        self._refused: str | None = None
        self._refusal = asyncio.Event()
        self._lock = asyncio.Lock()

    @property
    def description(self) -> str:
        """The URL without secrets."""
        return self.config.description

    # -- errors -------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        text = str(exc).lower()
        if isinstance(exc, nats.errors.AuthorizationError) or any(m in text for m in _AUTH_MARKERS):
            self._refused = "the credentials were refused"
        elif _PERMISSION_MARKER in text:
            self._refused = "a permission is missing"
        else:
            return
        self._refusal.set()

    async def guard(self, what: str, coro: Awaitable[T]) -> T:
        """Await ``coro``, but end it at once when the server refuses a permission meanwhile.

        A request the server denies gets no answer, only an asynchronous error:
        without this every refused call would wait for its full timeout.
        """
        self._refusal.clear()
        work = asyncio.ensure_future(coro)
        refused = asyncio.ensure_future(self._refusal.wait())
        try:
            await asyncio.wait({work, refused}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
            raise self.failure(what, TimeoutError())
        return work.result()

    def failure(self, what: str, exc: BaseException) -> BrokerError:
        """The toolkit error for ``exc`` raised during ``what``."""
        if self._refused is not None:
            reason, self._refused = self._refused, None
            self._refusal.clear()
            msg = (
                f"NATS at {self.description} refused {what}: {reason}:"
                " check the user, credentials and permissions"
            )
            return BrokerAuthError(msg)
        if isinstance(exc, nats.js.errors.APIError):
            detail = f"JetStream error {exc.err_code}: {exc.description}"
            return BrokerError(f"NATS at {self.description} refused {what}: {detail}")
        return BrokerError(f"NATS at {self.description} unavailable during {what}: {type(exc).__name__}")

    # -- connection ---------------------------------------------------------------

    def _options(self) -> dict[str, Any]:
        """nats-py's connect options for the config."""
        config = self.config
        options: dict[str, Any] = {
            "servers": list(config.servers),
            "connect_timeout": config.timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": -1,  # keep trying: the callers back off and retry
            "reconnect_time_wait": 0.5,
            "error_cb": self._on_error,
            "name": "outboxkit",
        }
        if config.user is not None:
            options |= {"user": config.user, "password": config.password}
        if config.token is not None:
            options["token"] = config.token
        if config.creds is not None:
            options["user_credentials"] = config.creds
        if config.nkey is not None:
            options["nkeys_seed"] = config.nkey
        if (context := config.ssl_context()) is not None:
            options["tls"] = context
        return options

    async def connect(self) -> Client:
        """The open connection, connecting first if needed."""
        if self._nc is not None and not self._nc.is_closed:
            return self._nc
        async with self._lock:
            if self._nc is not None and not self._nc.is_closed:
                return self._nc
            config = self.config
            options = self._options()
            # The first connect tries each seed twice and gives up (one line, exit 2 on the
            # command line); once connected, reconnects retry forever. Refused credentials
            # end it at once: nats-py would otherwise keep trying until the timeout.
            self._refused = None
            attempt = asyncio.ensure_future(nats.connect(**options | {"max_reconnect_attempts": 1}))
            deadline = time.monotonic() + config.timeout * 2 * (len(config.servers) + 1)
            while not attempt.done() and self._refused is None and time.monotonic() < deadline:
                await asyncio.wait({attempt}, timeout=0.05)
            if not attempt.done():
                attempt.cancel()
                with contextlib.suppress(BaseException):
                    await attempt
                raise self.failure("the connection", TimeoutError())
            try:
                self._nc = attempt.result()
            except (OSError, TimeoutError, nats.errors.Error) as exc:
                raise self.failure("the connection", exc) from None
            self._nc.options["max_reconnect_attempts"] = -1
            self._js = self._nc.jetstream(timeout=config.timeout)
            return self._nc

    async def jetstream(self) -> JetStreamContext:
        """The JetStream context of the open connection."""
        nc = await self.connect()
        if self._js is None:
            self._js = nc.jetstream(timeout=self.config.timeout)
        return self._js

    async def replicas(self) -> int:
        """The configured replicas, else 3 on a cluster and 1 on a single server."""
        if self.config.replicas is not None:
            return self.config.replicas
        nc = await self.connect()
        info = nc._server_info  # noqa: SLF001 - the INFO the server sent; nats-py has no accessor
        routes = info.get("connect_urls") or []
        return _CLUSTER_REPLICAS if info.get("cluster") or len(routes) > 1 else 1

    async def close(self) -> None:
        """Close the connection (flushing what was sent)."""
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.drain()

    # -- streams and the bucket ------------------------------------------------------

    async def ensure_stream(self, stream: str) -> str:
        """Create the JetStream stream of toolkit stream ``stream`` unless it exists; return its name."""
        name = stream_name(stream)
        if name in self._streams:
            return name
        js = await self.jetstream()
        try:
            await js.stream_info(name)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(
                name=name,
                description=f"outboxkit stream {stream}",
                subjects=[subject_of(stream)],
                storage=StorageType.MEMORY if self.config.storage == "memory" else StorageType.FILE,
                num_replicas=await self.replicas(),
                duplicate_window=self.config.dedup_window,
                max_msgs=self._max_len or -1,
                discard=DiscardPolicy.OLD,
                allow_direct=True,
                allow_atomic=True,  # the relay's batches, all or nothing (nats-server 2.12+)
            )
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != 10058:  # noqa: PLR2004 - "stream name already in use": a racing creator
                    raise
            log.info(
                "nats.stream_created", stream=stream, jetstream_stream=name, replicas=config.num_replicas
            )
        # A new replicated stream stores nothing until its Raft group has elected a leader.
        deadline = time.monotonic() + self.config.timeout
        while time.monotonic() < deadline:
            info = await js.stream_info(name)
            if info.cluster is None or info.cluster.leader:
                break
            await asyncio.sleep(0.05)
        self._streams.add(name)
        return name

    def forget_stream(self, stream: str) -> None:
        """Check the stream again before its next use (it was deleted or the cluster lost it)."""
        self._streams.discard(stream_name(stream))

    async def bucket(self) -> KeyValue:
        """The KV bucket of fences, incarnations, leases and marks, created on first use."""
        if self._kv is not None:
            return self._kv
        js = await self.jetstream()
        try:
            self._kv = await js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            # direct=False: reads go to the leader, so compare-and-set loops see the latest revision.
            config = KeyValueConfig(bucket=BUCKET, history=1, replicas=await self.replicas(), direct=False)
            self._kv = await js.create_key_value(config)
        return self._kv
