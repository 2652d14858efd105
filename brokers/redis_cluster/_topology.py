"""Which master owns which slot, from ``CLUSTER SLOTS``, with one plain client per master.

The relay's publisher routes every script call itself (one per slot, grouped
per master), so it needs the slot map rather than redis-py's ``RedisCluster``,
whose hidden retries and redirections the relay's own backoff must see.
The map is read again whenever a node answers ``MOVED``/``ASK`` or cannot be
reached (a failover): the seeds and every master known are asked in turn.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

import redis
import redis.exceptions
from redis.crc import key_slot

from outbox.errors import BrokerAuthError, BrokerError

__all__ = ["SlotMap", "slot_of"]

_MAX_TAG_SEARCH = 100_000


def slot_of(key: str) -> int:
    """The cluster slot of ``key`` (its hash tag's, when it has one)."""
    return int(key_slot(key.encode()))


class SlotMap:
    """The slot ranges of the masters, and a client per master (``host:port``)."""

    def __init__(
        self, seeds: tuple[tuple[str, int], ...], connect: Callable[[str, int], redis.Redis]
    ) -> None:
        self._seeds = [f"{h}:{p}" for h, p in seeds]
        self._connect = connect
        self._clients: dict[str, redis.Redis] = {}
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, str]] = []
        self._tags: dict[str, int] = {}

    @property
    def loaded(self) -> bool:
        """Whether a slot map has been read."""
        return bool(self._ranges)

    def client(self, node: str) -> redis.Redis:
        """The client of ``node`` (``host:port``), made on first use."""
        if node not in self._clients:
            host, _, port = node.rpartition(":")
            self._clients[node] = self._connect(host, int(port))
        return self._clients[node]

    def refresh(self) -> None:
        """Read ``CLUSTER SLOTS`` from the first node that answers.

        Raises:
            BrokerAuthError: a node refused the credentials.
            BrokerError: no node answered.
        """
        candidates = list(dict.fromkeys([*(r[2] for r in self._ranges), *self._seeds]))
        last = "no seed"
        for node in candidates:
            try:
                reply: Any = self.client(node).execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
            except (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError) as exc:
                name = type(exc).__name__
                msg = f"Redis Cluster node {node} refused the relay: {name}: check the user, password and ACL"
                raise BrokerAuthError(msg) from None
            except redis.exceptions.RedisError as exc:
                last = type(exc).__name__
                continue
            self._load(reply, node)
            if self._ranges:
                return
            last = "no slots assigned"
        msg = f"no Redis Cluster node answered ({last})"
        raise BrokerError(msg)

    def _load(self, reply: list[Any], asked: str) -> None:
        ranges = []
        for entry in reply:
            host = entry[2][0]
            host = host.decode() if isinstance(host, bytes) else str(host)
            # An empty host means "the address you reached me on" (cluster-announce unset).
            node = f"{host or asked.rpartition(':')[0]}:{int(entry[2][1])}"
            ranges.append((int(entry[0]), int(entry[1]), node))
        ranges.sort()
        self._ranges = ranges
        self._starts = [r[0] for r in ranges]
        self._tags = self._incarnation_tags()

    def master_of(self, slot: int) -> str:
        """The master serving ``slot`` (``host:port``)."""
        index = bisect.bisect_right(self._starts, slot) - 1
        if index < 0 or not self._ranges[index][0] <= slot <= self._ranges[index][1]:
            msg = f"Redis Cluster slot {slot} is not served by any master (CLUSTERDOWN)"
            raise BrokerError(msg)
        return self._ranges[index][2]

    def masters(self) -> list[str]:
        """Every master serving slots, in slot order."""
        return list(dict.fromkeys(r[2] for r in self._ranges))

    def incarnation_tag(self, node: str) -> int:
        """The hash tag ``{n}`` of ``node``'s incarnation key: the smallest n whose slot it serves."""
        return self._tags[node]

    def _incarnation_tags(self) -> dict[str, int]:
        # Deterministic, so every relay of the cluster picks the same keys.
        tags: dict[str, int] = {}
        wanted = set(self.masters())
        for n in range(_MAX_TAG_SEARCH):
            node = self.master_of(slot_of(str(n)))
            if node not in tags:
                tags[node] = n
                if len(tags) == len(wanted):
                    break
        return tags

    def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            client.close()
        self._clients.clear()
