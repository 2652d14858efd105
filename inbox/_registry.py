"""The handler registry: which function handles which topic and message types."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from outbox import TOPIC_PATTERN, ConfigError, Envelope

from ._dedup import AsyncHandler, SyncHandler
from ._guard import check_signature

__all__ = ["HandlerSpec", "Registry", "Reject"]

_TOPIC = re.compile(TOPIC_PATTERN)
H = TypeVar("H", SyncHandler, AsyncHandler)


class Reject(Exception):  # noqa: N818 - control flow, named like ARQ's Retry
    """Raised by a handler to dead-letter the message at once, without retries.

    Use it for messages that can never succeed (a reference to an unknown
    account, a payload that fails validation); the reason is stored with the
    dead letter.

    .. versionadded:: 0.1
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One registered handler.

    Attributes:
        topic: the topic it consumes.
        types: the message types it accepts, or ``None`` for every type.
        func: the function, sync (gets a ``Session``) or ``async def`` (gets an ``AsyncSession``).
        is_async: whether ``func`` is a coroutine function.

    .. versionadded:: 0.1
    """

    topic: str
    types: frozenset[str] | None
    func: SyncHandler | AsyncHandler
    is_async: bool

    @property
    def name(self) -> str:
        """``module.qualname`` of the function, for logs."""
        return (
            f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', repr(self.func))}"
        )


class Registry:
    """Handlers by topic and type; what ``outboxkit consume module:registry`` runs.

    Example::

        registry = inbox.Registry()

        @registry.handler("orders.created", types=["OrderCreated"])
        def charge(message: Envelope, session: Session) -> None: ...

    A handler bound to types takes precedence over the topic's catch-all
    handler; two handlers that could both take a message are refused.

    .. versionadded:: 0.1
    """

    def __init__(self) -> None:
        self._by_topic: dict[str, list[HandlerSpec]] = {}

    def handler(self, topic: str, *, types: Iterable[str] | str | None = None) -> Callable[[H], H]:
        """Decorator: register the function as the handler of ``topic`` (and ``types``)."""

        def register(func: H) -> H:
            self.add(topic, func, types=types)
            return func

        return register

    def add(
        self, topic: str, func: SyncHandler | AsyncHandler, *, types: Iterable[str] | str | None = None
    ) -> HandlerSpec:
        """Register ``func`` for ``topic``; see :meth:`handler`."""
        if not isinstance(topic, str) or not _TOPIC.fullmatch(topic):
            msg = f"handler topic {topic!r:.80} does not match {TOPIC_PATTERN}"
            raise ConfigError(msg)
        candidate: object = func  # a runtime check for untyped callers
        if not callable(candidate):
            msg = f"handler for {topic!r} is not callable"
            raise ConfigError(msg)
        wanted = _types(types)
        spec = HandlerSpec(topic=topic, types=wanted, func=func, is_async=inspect.iscoroutinefunction(func))
        check_signature(func, spec.name)
        for other in self._by_topic.get(topic, []):
            if (other.types is None and wanted is None) or (
                other.types is not None and wanted is not None and other.types & wanted
            ):
                msg = f"{spec.name} and {other.name} would both handle messages of topic {topic!r}"
                raise ConfigError(msg)
        self._by_topic.setdefault(topic, []).append(spec)
        return spec

    @property
    def topics(self) -> list[str]:
        """The topics with at least one handler, sorted."""
        return sorted(self._by_topic)

    @property
    def specs(self) -> list[HandlerSpec]:
        """Every registered handler."""
        return [spec for topic in self.topics for spec in self._by_topic[topic]]

    def match(self, message: Envelope) -> HandlerSpec | None:
        """The handler of ``message``: the one bound to its type, else the topic's catch-all."""
        fallback = None
        for spec in self._by_topic.get(message.topic, ()):
            if spec.types is None:
                fallback = spec
            elif message.type in spec.types:
                return spec
        return fallback

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_topic.values())


def _types(types: Iterable[str] | str | None) -> frozenset[str] | None:
    if types is None:
        return None
    values = frozenset([types] if isinstance(types, str) else types)
    if not values or not all(isinstance(t, str) and t for t in values):
        msg = "types must be a non-empty str or a non-empty collection of non-empty str"
        raise ConfigError(msg)
    return values
