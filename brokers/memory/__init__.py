"""In-process broker for tests (``memory://<name>``): both halves over one store per name.

The publish half (:class:`MemoryPublisher` over a :class:`MemoryBroker`) and the
subscribe half (:class:`MemorySubscriber` over :class:`MemoryStreams`) are held
to the same contract suite as the real brokers (tests/contract/).

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._publish import MemoryBroker, MemoryPublisher, memory_broker
from ._subscribe import MemoryStreams, MemorySubscriber

__all__ = ["MemoryBroker", "MemoryPublisher", "MemoryStreams", "MemorySubscriber", "memory_broker"]
