"""A local Redis Cluster for the tests: 3 masters and 3 replicas of Debian's ``redis-server`` on 127.0.0.1.

Each node is a :class:`tests._servers.RedisServer` (private directory, bounded
start and stop, SIGKILL on parent death), started with ``--cluster-enabled
yes`` and its own cluster bus port: the default bus port (port + 10000) may be
taken, or past 65535, for the ephemeral ports :func:`free_port` returns.
``redis-cli --cluster create`` then assigns the 16384 slots to the first three
nodes and one replica to each.

A short ``cluster-node-timeout`` makes a SIGKILLed master's replica take over
within a few seconds, which the failover tests wait for.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence

import redis
from redis.cluster import ClusterNode, RedisCluster

from ._servers import LOCALHOST, ServerError, ServerGroup
from ._servers import RedisServer as _RedisServer

__all__ = ["CLUSTER_NODE_TIMEOUT_MS", "RedisClusterServer"]

CLUSTER_NODE_TIMEOUT_MS = 2000
_READY_TIMEOUT = 60.0


def _distinct_free_ports(count: int) -> list[int]:
    """``count`` ports free a moment ago, all different: the sockets are held open together while chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)
        ]
        for sock in sockets:
            sock.bind((LOCALHOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


class RedisClusterServer(ServerGroup):
    """``masters`` masters with one replica each, on free loopback ports.

    ``extra_args`` go to every node (ACL files, ``requirepass`` ...); with
    ``password`` every node requires it, replicas included (``masterauth``).
    """

    def __init__(
        self, *, masters: int = 3, password: str | None = None, extra_args: Sequence[str] = ()
    ) -> None:
        if shutil.which("redis-cli") is None:
            msg = "redis-cli not found: install Debian's redis-tools (scripts/test does)"
            raise ServerError(msg)
        self.password = password
        self.nodes: list[_RedisServer] = []
        ports = _distinct_free_ports(masters * 4)  # a client and a bus port per node
        for index in range(masters * 2):
            port, bus = ports[2 * index], ports[2 * index + 1]
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS), "--cluster-port", str(bus),
                    # A replica must be promoted even when it lost touch with its master for a while.
                    "--cluster-replica-validity-factor", "0",
                    # A replica's (re)sync would wait repl-diskless-sync-delay, 5 s by default.
                    "--repl-diskless-sync-delay", "0"]  # fmt: skip
            if password:
                args += ["--masterauth", password]
            self.nodes.append(_RedisServer(password=password, port=port, extra_args=[*args, *extra_args]))
        self._masters = masters

    @property
    def seeds(self) -> str:
        """``host:port,host:port,...`` of every node."""
        return ",".join(f"{LOCALHOST}:{n.port}" for n in self.nodes)

    @property
    def url(self) -> str:
        """The ``redis+cluster://`` URL naming every node as a seed (password included)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}{self.seeds}"

    def client(self) -> RedisCluster:
        """A cluster client returning bytes; the caller closes it."""
        return RedisCluster(
            startup_nodes=[ClusterNode(LOCALHOST, n.port) for n in self.nodes if n.running],
            password=self.password,
            decode_responses=False,
        )

    def node_client(self, port: int) -> redis.Redis:
        """A client of one node (no redirections followed)."""
        return redis.Redis(host=LOCALHOST, port=port, password=self.password, socket_timeout=5)

    def start(self) -> None:
        """Start every node, create the cluster and wait until every node says ``cluster_state:ok``."""
        for node in self.nodes:
            node.start()
        argv = ["redis-cli", "--cluster", "create", *(f"{LOCALHOST}:{n.port}" for n in self.nodes),
                "--cluster-replicas", "1", "--cluster-yes"]  # fmt: skip
        if self.password:
            argv[1:1] = ["--no-auth-warning", "-a", self.password]
        done = subprocess.run(argv, capture_output=True, timeout=_READY_TIMEOUT, check=False)
        if done.returncode != 0:
            msg = f"redis-cli --cluster create failed: {done.stdout.decode(errors='replace')[-2000:]}"
            raise ServerError(msg)
        self.wait_healthy(timeout=_READY_TIMEOUT)

    def wait_healthy(self, *, timeout: float) -> None:
        """Wait until every running node reports ``cluster_state:ok`` and ``masters`` masters own slots."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                if not node.running:
                    continue
                with contextlib.suppress(redis.RedisError), self.node_client(node.port) as client:
                    info = client.cluster("INFO")
                    states.append(info.get("cluster_state") == "ok")
                    last = str(info.get("cluster_state"))
            if states and all(states) and len(self.master_ports()) == self._masters:
                return
            time.sleep(0.2)
        msg = f"the Redis cluster did not become healthy within {timeout:.0f} s (last state {last})"
        raise ServerError(msg)

    def wait_failover(self, dead: int, *, timeout: float) -> None:
        """Wait until the master on port ``dead`` no longer serves slots (its replica took over) and all is ok."""
        deadline = time.monotonic() + timeout
        while dead in self.master_ports():
            if time.monotonic() > deadline:
                msg = f"no replica took over from the master on port {dead} within {timeout:.0f} s"
                raise ServerError(msg)
            time.sleep(0.2)
        self.wait_healthy(timeout=max(deadline - time.monotonic(), 1.0))

    def master_ports(self) -> list[int]:
        """Ports of the running nodes that are masters owning slots, in port order."""
        for node in self.nodes:
            if not node.running:
                continue
            try:
                with self.node_client(node.port) as client:
                    slots = client.execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            return sorted({int(entry[2][1]) for entry in slots})
        return []

    def node_by_port(self, port: int) -> _RedisServer:
        """The node listening on ``port``."""
        return next(n for n in self.nodes if n.port == port)

    def close(self) -> None:
        """Kill every node and remove their directories (the data is the tests' only)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()  # a graceful stop waits up to 10 s for replicas to catch up
            with contextlib.suppress(Exception):
                node.close()
