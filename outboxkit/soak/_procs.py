"""Soak processes: start, kill, pause and restart real processes; sample their memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

# The directory holding the `outboxkit` package: a checkout's root, or site-packages.
IMPORT_ROOT = Path(__file__).resolve().parents[2]


def python_env() -> dict[str, str]:
    """Environment for child processes: this outboxkit first on the path, JSON logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOXKIT_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(IMPORT_ROOT), env.get("PYTHONPATH")]))
    env["OUTBOXKIT_LOG_FORMAT"] = "json"
    return env


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


@dataclass
class Managed:
    """One logical process (e.g. ``relay-1``) that may be killed and started again."""

    name: str
    argv: list[str]
    log_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    paused: bool = False
    exit_codes: list[int] = field(default_factory=list)

    def start(self) -> None:
        """Start (or start again), appending to the process's log file."""
        log = (self.log_dir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - argv built by the soak itself
            self.argv, stdout=log, stderr=subprocess.STDOUT, env=python_env(), cwd=self.log_dir
        )
        log.close()
        self.starts += 1
        self.paused = False

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` if the process is alive."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill_and_restart(self) -> None:
        """SIGKILL, reap, start again: a crash at an arbitrary instant."""
        self.signal(signal.SIGKILL)
        self.reap(10)
        self.start()

    def reap(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for exit; record and return the exit code."""
        if self.proc is None:
            return None
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self.exit_codes.append(code)
        return code

    def alive(self) -> bool:
        """Whether the current incarnation is running."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float) -> int | None:
        """SIGCONT + SIGTERM, wait; SIGKILL if it does not stop in time."""
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        code = self.reap(timeout)
        if code is None:
            self.signal(signal.SIGKILL)
            self.reap(10)
        return code


class RssSampler:
    """Samples every managed process's RSS twice a second; keeps the peak per name."""

    def __init__(self, processes: list[Managed]) -> None:
        self.processes = processes
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            for managed in list(self.processes):
                if managed.proc is not None and (mb := rss_mb(managed.proc.pid)) is not None:
                    self.peaks[managed.name] = max(self.peaks.get(managed.name, 0.0), mb)


def cli(*args: str) -> list[str]:
    """Argv of the ``outboxkit`` program of this interpreter."""
    return [sys.executable, "-m", "outboxkit", *args]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
