"""A local Redis Sentinel set-up: 1 master, 1 replica and 3 sentinels of Debian's ``redis-server``, on 127.0.0.1.

Sentinels are ``redis-server <conf> --sentinel`` (no separate binary needed);
each writes its own configuration file in its private directory, as sentinels
do. Short ``down-after-milliseconds`` and ``failover-timeout`` make a
SIGKILLed master's replica promoted within a few seconds.
"""

from __future__ import annotations

import contextlib
import time

import redis

from ._servers import LOCALHOST, NO_RETRY, RedisServer, ServerError, ServerGroup, _ServerProcess, find_redis

__all__ = ["MASTER_NAME", "RedisSentinelSetup"]

MASTER_NAME = "outboxkit"
_READY_TIMEOUT = 30.0
_FAST_SYNC = ("--repl-diskless-sync-delay", "0")


class RedisSentinelProcess(_ServerProcess):
    """One sentinel watching the master on ``master_port``."""

    name = "RedisSentinel"

    def __init__(self, master_port: int, *, quorum: int = 2) -> None:
        super().__init__(port=None, ready_timeout=_READY_TIMEOUT)
        self.binary = find_redis()
        self.master_port = master_port
        self.quorum = quorum

    def _argv(self, port: int) -> list[str]:
        conf = self.directory / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind {LOCALHOST}\ndir {self.directory}\n"
            f"sentinel monitor {MASTER_NAME} {LOCALHOST} {self.master_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        return [str(self.binary), str(conf), "--sentinel"]

    def _probe(self, port: int) -> None:
        client = redis.Redis(host=LOCALHOST, port=port, socket_timeout=2, retry=NO_RETRY)
        try:
            client.ping()
        finally:
            client.close()


class RedisSentinelSetup(ServerGroup):
    """A master, one replica and three sentinels; :attr:`url` is the ``redis+sentinel://`` URL."""

    def __init__(self) -> None:
        # A replica's first sync waits repl-diskless-sync-delay (5 s) by default.
        self.master = RedisServer(extra_args=_FAST_SYNC)
        self.replica: RedisServer | None = None
        self.sentinels: list[RedisSentinelProcess] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://`` naming every sentinel and the master's name."""
        seeds = ",".join(f"{LOCALHOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{seeds}/{MASTER_NAME}"

    @property
    def servers(self) -> list[RedisServer]:
        """The master and the replica, in start order."""
        return [self.master] + ([self.replica] if self.replica else [])

    def start(self) -> None:
        """Start the master, its replica (in sync) and three sentinels that all see both."""
        self.master.start()
        self.replica = RedisServer(extra_args=[*_FAST_SYNC, "--replicaof", LOCALHOST, str(self.master.port)])
        self.replica.start()
        self.sentinels = [RedisSentinelProcess(self.master.port) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        deadline = time.monotonic() + _READY_TIMEOUT
        while not self._settled():
            if time.monotonic() > deadline:
                msg = "the sentinels did not see the master, its replica and each other in time"
                raise ServerError(msg)
            time.sleep(0.2)

    def master_port(self) -> int | None:
        """The master's port as the first answering sentinel reports it."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with (
                contextlib.suppress(redis.RedisError),
                redis.Redis(
                    host=LOCALHOST, port=sentinel.port, socket_timeout=2, decode_responses=True
                ) as client,
            ):
                _host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                return int(port)
        return None

    def wait_failover(self, dead: int, *, timeout: float) -> None:
        """Wait until the sentinels name a master other than the one on port ``dead``."""
        deadline = time.monotonic() + timeout
        while self.master_port() in (dead, None):
            if time.monotonic() > deadline:
                msg = f"the sentinels did not promote a replica within {timeout:.0f} s"
                raise ServerError(msg)
            time.sleep(0.2)

    def server_on(self, port: int) -> RedisServer:
        """The Redis server listening on ``port``."""
        return next(s for s in self.servers if s.port == port)

    def _settled(self) -> bool:
        assert self.replica is not None  # started first
        with redis.Redis(
            host=LOCALHOST, port=self.replica.port, socket_timeout=2, decode_responses=True
        ) as c:
            if c.info("replication").get("master_link_status") != "up":
                return False
        for sentinel in self.sentinels:
            try:
                with redis.Redis(
                    host=LOCALHOST, port=sentinel.port, socket_timeout=2, decode_responses=True
                ) as c:
                    info = c.sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            if int(info.get("num-slaves", 0)) < 1 or int(info.get("num-other-sentinels", 0)) < 2:
                return False
        return True

    def close(self) -> None:
        """Kill every process and remove their directories."""
        for process in [*self.sentinels, *self.servers]:
            with contextlib.suppress(Exception):
                process.kill()
            with contextlib.suppress(Exception):
                process.close()
