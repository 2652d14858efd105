"""Real PostgreSQL and Redis server processes for the test suite.

Each server runs in its own temporary directory on a free loopback port
(127.0.0.1 only) and is stopped, and its directory removed, by ``close()``,
by leaving its ``with`` block, or at interpreter exit. On Linux a server
started from the main thread also gets a parent-death signal, so it does not
outlive a test process that dies without running its finalizers (SIGKILL,
pytest-timeout's ``os._exit``).

``ExternalPostgres`` and ``ExternalRedis`` wrap servers the suite did not
start (``OUTBOXKIT_TEST_DATABASE_URL`` / ``OUTBOXKIT_TEST_REDIS_URL``); they
offer the same database administration and URL but no process control.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Generic, Literal, ParamSpec, Self, TypeVar
from urllib.parse import quote

import psycopg
import pytest
import redis
from psycopg import sql
from psycopg.conninfo import make_conninfo
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from types import TracebackType

    from psycopg.rows import TupleRow

__all__ = [
    "NO_RETRY",
    "ExternalPostgres",
    "ExternalRedis",
    "PostgresAdmin",
    "PostgresServer",
    "RedisEndpoint",
    "RedisServer",
    "ServerError",
    "ServerGroup",
    "ServerNotInstalledError",
    "ServerPool",
    "find_postgres",
    "find_redis",
]

INSTALL_HINT: Final = "apt-get install postgresql redis-server"
LOCALHOST: Final = "127.0.0.1"
PG_SUPERUSER: Final = "outboxkit"
PG_FALLBACK_OS_USER: Final = "outboxkit-pg"
MIN_PG_MAJOR: Final = 15
MIN_REDIS_VERSION: Final = (7, 0)
READY_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 30.0
LOG_TAIL_LINES: Final = 40
# Test-speed settings: safe while the operating system does not crash.
# synchronous_commit=off may lose the last few hundred milliseconds of commits
# when the *server process* crashes, so crash tests pass durable=True.
PG_FAST_SETTINGS: Final = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    # 2PC baseline (outboxkit.twopc): PREPARE TRANSACTION needs a slot per prepared transaction.
    "max_prepared_transactions": "64",
}

# redis-py retries connection errors with backoff by default: probes must not.
NO_RETRY: Final = Retry(NoBackoff(), 0)

Persistence = Literal["none", "aof"]
P = ParamSpec("P")
S = TypeVar("S", bound="_ServerProcess")


class ServerError(RuntimeError):
    """A test server could not be started, reached or stopped."""


class ServerNotInstalledError(ServerError):
    """The server's binaries are missing or too old."""


# --------------------------------------------------------------------------
# Finding binaries
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresBinaries:
    """Where the PostgreSQL server programs live and which version they are."""

    bindir: Path
    major: int
    version: str

    @property
    def postgres(self) -> Path:
        """The server program."""
        return self.bindir / "postgres"

    @property
    def initdb(self) -> Path:
        """The cluster creation program."""
        return self.bindir / "initdb"


def _pg_candidate_dirs() -> list[Path]:
    dirs: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            dirs.append(Path(out.stdout.strip()))

    def debian_version(path: Path) -> int:
        return int(path.parent.name) if path.parent.name.isdigit() else -1

    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=debian_version, reverse=True)
    dirs += [Path(p).parent for p in (shutil.which("postgres"), shutil.which("initdb")) if p]
    return list(dict.fromkeys(dirs))


@functools.cache
def find_postgres() -> PostgresBinaries:
    """Return the newest usable PostgreSQL server binaries, or raise ServerNotInstalledError."""
    too_old: list[str] = []
    for bindir in _pg_candidate_dirs():
        if not all(os.access(bindir / name, os.X_OK) for name in ("postgres", "initdb")):
            continue
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
        match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.\d+)*", out)
        if match is None:
            continue
        if int(match.group(1)) >= MIN_PG_MAJOR:
            return PostgresBinaries(bindir=bindir, major=int(match.group(1)), version=out)
        too_old.append(f"{out} in {bindir}")
    found = f" (found only: {'; '.join(too_old)})" if too_old else ""
    msg = (
        f"PostgreSQL >= {MIN_PG_MAJOR} server binaries (postgres, initdb) not found{found}. "
        f"Install them, e.g. `{INSTALL_HINT}`, or set OUTBOXKIT_TEST_DATABASE_URL to an existing server."
    )
    raise ServerNotInstalledError(msg)


@functools.cache
def find_redis() -> Path:
    """Return the redis-server binary, or raise ServerNotInstalledError."""
    binary = shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if os.access(p, os.X_OK)), None
    )
    hint = f"Install it, e.g. `{INSTALL_HINT}`, or set OUTBOXKIT_TEST_REDIS_URL to an existing server."
    if binary is None:
        msg = f"redis-server not found on PATH. {hint}"
        raise ServerNotInstalledError(msg)
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)", out)
    if match is None or (int(match.group(1)), int(match.group(2))) < MIN_REDIS_VERSION:
        want = ".".join(map(str, MIN_REDIS_VERSION))
        msg = f"redis-server >= {want} required, {binary} reports {out.strip()!r}. {hint}"
        raise ServerNotInstalledError(msg)
    return Path(binary)


# --------------------------------------------------------------------------
# Process plumbing shared by both servers
# --------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _world_traversable(path: Path) -> bool:
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _tmp_root(run_as: pwd.struct_passwd | None) -> str:
    """Return a base for temporary directories that ``run_as`` can reach."""
    base = tempfile.gettempdir()
    if run_as is not None and not _world_traversable(Path(base)):
        return "/tmp"  # sticky and world-traversable; our directory in it is private
    return base


DIR_PREFIX: Final = "outboxkit-"
OWNER_FILE: Final = "owner.pid"


def _private_dir(prefix: str, run_as: pwd.struct_passwd | None) -> Path:
    """Create a private temporary directory owned by ``run_as`` (default: us).

    It records our pid, so that a later run can remove it if we die without
    cleaning up (SIGKILL, OOM killer).
    """
    root = _tmp_root(run_as)
    _sweep_stale_dirs(root)
    path = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{prefix}-", dir=root))
    (path / OWNER_FILE).write_text(str(os.getpid()))
    if run_as is not None:
        os.chown(path, run_as.pw_uid, run_as.pw_gid)
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@functools.cache
def _sweep_stale_dirs(root: str) -> None:
    """Remove, once per process, server directories in ``root`` whose owner process is gone."""
    for path in Path(root).glob(f"{DIR_PREFIX}*"):
        try:
            owner = int((path / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or still being created
        if not _pid_alive(owner):
            shutil.rmtree(path, ignore_errors=True)


def _parent_death_hook(sig: signal.Signals) -> Callable[[], None] | None:
    """Return a preexec hook making the child receive ``sig`` when this thread dies.

    Linux only, and only from the main thread: the signal fires when the
    *thread* that forked exits, which for a worker thread (``asyncio.to_thread``)
    would be long before the test ends.
    """
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def hook() -> None:
        libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), sig)

    return hook


_LIVE: set[_ServerProcess] = set()


@atexit.register
def _close_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.close()


class _ServerProcess:
    """A server process in a private temporary directory, with a bounded start and stop."""

    name: str = "server"
    # Log lines meaning "try again": a port taken between free_port() and bind(),
    # or a previous incarnation's resources not released yet.
    transient_start_errors: tuple[str, ...] = ("Address already in use",)
    _graceful_signal: signal.Signals = signal.SIGTERM
    _parent_death_signal: signal.Signals = signal.SIGTERM

    def __init__(self, *, port: int | None, ready_timeout: float) -> None:
        self._port = port
        self._ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._run_as: pwd.struct_passwd | None = None

    # -- public -------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port, fixed after the first start."""
        if self._port is None:
            msg = f"{self.name} has not been started"
            raise ServerError(msg)
        return self._port

    @property
    def pid(self) -> int:
        """The main server process id."""
        if self._proc is None or self._proc.poll() is not None:
            msg = f"{self.name} is not running"
            raise ServerError(msg)
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Whether the main server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def directory(self) -> Path:
        """The private temporary directory (data, sockets, log)."""
        if self._dir is None:
            msg = f"{self.name} has not been started"
            raise ServerError(msg)
        return self._dir

    @property
    def log_path(self) -> Path:
        """The file receiving the server's stdout and stderr."""
        return self.directory / "server.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last ``lines`` lines of the server log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, ServerError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> None:
        """Start the server and wait until it answers; on a restart keep port and data."""
        if self.running:
            msg = f"{self.name} is already running (pid {self.pid})"
            raise ServerError(msg)
        _LIVE.add(self)
        self._prepare()
        fixed_port = self._port is not None
        deadline = time.monotonic() + self._ready_timeout
        while True:
            port = self._port if self._port is not None else free_port()
            log_offset = self._spawn(self._argv(port))
            try:
                self._wait_ready(port, deadline, log_offset)
            except _TransientStartError as exc:
                self._reap(signal.SIGKILL)
                if time.monotonic() > deadline:
                    raise ServerError(self._failure(port, f"did not start ({exc})")) from None
                if not fixed_port:
                    self._port = None
                time.sleep(0.1)
                continue
            except BaseException:
                self._reap(signal.SIGKILL)
                raise
            self._port = port
            return

    def stop(self) -> None:
        """Stop the server gracefully and wait for it; the data directory is kept."""
        self._reap(self._graceful_signal)

    def kill(self) -> None:
        """Kill the server and all its child processes with SIGKILL, like a crash."""
        self._reap(signal.SIGKILL)

    def close(self) -> None:
        """Stop the server and remove its temporary directory."""
        try:
            self.stop()
        finally:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            _LIVE.discard(self)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- for subclasses -----------------------------------------------------

    def _prepare(self) -> None:
        """Create the private directory (and data files) on the first start."""
        if self._dir is None:
            self._dir = _private_dir(self.name.lower(), None)

    def _argv(self, port: int) -> list[str]:
        raise NotImplementedError

    def _probe(self, port: int) -> None:
        """Return if the server answers on ``port``; raise any exception if not yet."""
        raise NotImplementedError

    # -- internals ----------------------------------------------------------

    def _spawn(self, argv: list[str]) -> int:
        """Start ``argv``; return the log size before it started."""
        run_as = self._run_as
        with self.log_path.open("ab") as log:
            offset = log.tell()
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                # Own process group: Ctrl-C in the terminal does not reach the
                # server, and kill() can SIGKILL the whole process tree at once.
                start_new_session=True,
                preexec_fn=_parent_death_hook(self._parent_death_signal),  # noqa: PLW1509 - only prctl
                user=None if run_as is None else run_as.pw_uid,
                group=None if run_as is None else run_as.pw_gid,
                extra_groups=None if run_as is None else [],
            )
        return offset

    def _wait_ready(self, port: int, deadline: float, log_offset: int) -> None:
        assert self._proc is not None  # set by _spawn
        last_error: BaseException | None = None
        while True:
            if self._proc.poll() is not None:
                with self.log_path.open("rb") as log:
                    log.seek(log_offset)
                    new_output = log.read().decode(errors="replace")
                marker = next((m for m in self.transient_start_errors if m in new_output), None)
                if marker is not None:
                    raise _TransientStartError(marker)
                raise ServerError(self._failure(port, f"exited with status {self._proc.returncode}"))
            try:
                self._probe(port)
            except Exception as exc:  # any failure means "not ready yet"
                last_error = exc
            else:
                return
            if time.monotonic() > deadline:
                reason = f"did not answer within {self._ready_timeout:.0f} s (last error: {last_error})"
                raise ServerError(self._failure(port, reason))
            time.sleep(0.05)

    def _failure(self, port: int, reason: str) -> str:
        where = f"{self.name} on {LOCALHOST}:{port}"
        return f"{where} {reason}. Log tail ({self.log_path}):\n{self.log_tail()}"

    def _reap(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the server (SIGKILL: to its process group) and wait for it to exit."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # The leader is alive (or an unreaped zombie), so its pid still names our group.
            with contextlib.suppress(ProcessLookupError):
                if sig == signal.SIGKILL:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.send_signal(sig)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)


class ServerGroup:
    """Several server processes started together (a cluster, a Sentinel set-up): a context manager.

    Subclasses define ``start()`` and ``close()``; a failed start closes what it started.
    """

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _TransientStartError(Exception):
    """The server exited during startup for a reason worth one more try."""


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def _postgres_os_user() -> pwd.struct_passwd | None:
    """Return the unprivileged user to run PostgreSQL as when we are root, else None.

    PostgreSQL refuses to run as root. Prefer the distribution's ``postgres``
    user; without one, create a dedicated system user once.
    """
    if os.geteuid() != 0:
        return None
    for name in ("postgres", PG_FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
         "--shell", "/usr/sbin/nologin", PG_FALLBACK_OS_USER],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    try:
        return pwd.getpwnam(PG_FALLBACK_OS_USER)  # also fine if a parallel worker created it
    except KeyError:
        msg = (
            f"PostgreSQL cannot run as root and there is no `postgres` user; creating "
            f"{PG_FALLBACK_OS_USER!r} with useradd failed: {result.stderr.strip() or result.returncode}"
        )
        raise ServerError(msg) from None


def _chown_tree(root: Path, run_as: pwd.struct_passwd) -> None:
    os.chown(root, run_as.pw_uid, run_as.pw_gid)
    for parent, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            os.chown(Path(parent) / name, run_as.pw_uid, run_as.pw_gid, follow_symlinks=False)


@functools.cache
def _initdb_once(binaries: PostgresBinaries, run_as: pwd.struct_passwd | None) -> Path:
    """Run initdb once per process (superuser ``outboxkit``, trust auth) and return the data directory."""
    base = _private_dir("initdb", run_as)
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    data = base / "data"
    argv = [str(binaries.initdb), "-D", str(data), "-U", PG_SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]  # fmt: skip
    result = subprocess.run(
        argv, cwd=base, capture_output=True, text=True, timeout=120, check=False,
        user=None if run_as is None else run_as.pw_uid,
        group=None if run_as is None else run_as.pw_gid,
        extra_groups=None if run_as is None else [],
    )  # fmt: skip
    if result.returncode != 0:
        msg = f"initdb failed with status {result.returncode}:\n{result.stdout}{result.stderr}"
        raise ServerError(msg)
    return data


class PostgresAdmin:
    """Database administration on a PostgreSQL server reachable as a superuser."""

    def base_url(self) -> URL:
        """Return the superuser URL of the server (database ``postgres``)."""
        raise NotImplementedError

    def url(self, dbname: str) -> str:
        """Return the SQLAlchemy URL of database ``dbname`` on this server, password included."""
        return self.base_url().set(database=dbname).render_as_string(hide_password=False)

    def connect(self, dbname: str = "postgres", *, autocommit: bool = True) -> psycopg.Connection[TupleRow]:
        """Open a psycopg connection to ``dbname`` as the superuser."""
        u = self.base_url()
        params = {k: v for k, v in u.query.items() if isinstance(v, str)}
        conninfo = make_conninfo(
            "", host=u.host, port=u.port, user=u.username, password=u.password, dbname=dbname, **params
        )
        return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=10)

    def server_version_num(self) -> int:
        """Return ``server_version_num`` (150004 for 15.4)."""
        with self.connect() as conn:
            row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None  # SHOW always returns a row
        return int(row[0])

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template`` if given) and return its URL."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        with self.connect() as conn:
            conn.execute(query)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, terminating its sessions."""
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def terminate_sessions(self, dbname: str) -> None:
        """Terminate every other session on ``dbname`` (CREATE DATABASE ... TEMPLATE needs that)."""
        with self.connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (dbname,),
            )


class ExternalPostgres(PostgresAdmin):
    """A PostgreSQL server the suite did not start, given by a superuser URL."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            msg = f"expected a postgresql+psycopg:// URL, got {parsed.render_as_string(hide_password=True)}"
            raise ServerError(msg)
        self._url = parsed.set(drivername="postgresql+psycopg", database="postgres")

    def base_url(self) -> URL:
        """Return the superuser URL of the server (database ``postgres``)."""
        return self._url


class PostgresServer(_ServerProcess, PostgresAdmin):
    """A private PostgreSQL server: initdb in a temporary directory, then ``postgres``.

    The superuser is ``outboxkit`` with trust authentication; TCP on 127.0.0.1
    only, the unix socket in the temporary directory. ``durable=True`` keeps
    ``synchronous_commit=on`` so committed rows survive ``kill()`` and
    ``restart()`` (fsync stays off: the operating system does not crash).
    """

    name = "PostgreSQL"
    transient_start_errors = (
        "Address already in use",
        "could not create any TCP/IP sockets",
        "pre-existing shared memory block",
        'lock file "postmaster.pid" already exists',
    )
    _graceful_signal = signal.SIGINT  # "fast" shutdown
    _parent_death_signal = signal.SIGQUIT  # "immediate" shutdown

    def __init__(
        self,
        *,
        port: int | None = None,
        durable: bool = False,
        settings: Mapping[str, str] | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__(port=port, ready_timeout=ready_timeout)
        self.binaries = find_postgres()
        self._settings = dict(PG_FAST_SETTINGS)
        if durable:
            self._settings["synchronous_commit"] = "on"
        self._settings.update(settings or {})

    def base_url(self) -> URL:
        """Return the superuser URL of the server (database ``postgres``)."""
        return URL.create(
            "postgresql+psycopg", username=PG_SUPERUSER, host=LOCALHOST, port=self.port, database="postgres"
        )

    def restart(self, *, graceful: bool = False) -> None:
        """Stop the server (immediate shutdown unless ``graceful``) and start it on the same port and data."""
        self._reap(signal.SIGINT if graceful else signal.SIGQUIT)
        self.start()

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.directory / "data"

    def _prepare(self) -> None:
        if self._dir is not None:
            return
        self._run_as = _postgres_os_user()
        self._dir = _private_dir("pg", self._run_as)
        # Copying a cluster made once per process is ~10x faster than initdb.
        shutil.copytree(_initdb_once(self.binaries, self._run_as), self.data_dir, symlinks=True)
        if self._run_as is not None:
            _chown_tree(self.data_dir, self._run_as)

    def _argv(self, port: int) -> list[str]:
        argv = [
            str(self.binaries.postgres),
            "-D",
            str(self.data_dir),
            "-p",
            str(port),
            "-h",
            LOCALHOST,
            "-k",
            str(self.directory),
        ]
        for key, value in self._settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _probe(self, port: int) -> None:
        with psycopg.connect(
            host=LOCALHOST, port=port, user=PG_SUPERUSER, dbname="postgres", connect_timeout=2
        ) as conn:
            conn.execute("SELECT 1")


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


class RedisEndpoint:
    """A Redis server reachable by URL."""

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0."""
        raise NotImplementedError

    def client(self) -> redis.Redis:
        """Return a new client (bytes responses); the caller closes it."""
        return redis.Redis.from_url(self.url)


class ExternalRedis(RedisEndpoint):
    """A Redis server the suite did not start, given by URL."""

    def __init__(self, url: str) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            msg = "expected a redis://, rediss:// or unix:// URL for OUTBOXKIT_TEST_REDIS_URL"
            raise ServerError(msg)
        self._url = url

    @property
    def url(self) -> str:
        """The URL given."""
        return self._url


class RedisServer(_ServerProcess, RedisEndpoint):
    """A private ``redis-server`` with no persistence (``"none"``) or an fsync-always AOF (``"aof"``).

    ``extra_args`` are appended to the command line (TLS, ACL files, ...).
    """

    name = "Redis"
    _graceful_signal = signal.SIGTERM
    _parent_death_signal = signal.SIGKILL

    def __init__(
        self,
        *,
        persistence: Persistence = "none",
        password: str | None = None,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        super().__init__(port=port, ready_timeout=ready_timeout)
        self.binary = find_redis()
        self.persistence: Persistence = persistence
        self.password = password
        self.extra_args = tuple(extra_args)

    @property
    def url(self) -> str:
        """The ``redis://`` URL of database 0, password included."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{LOCALHOST}:{self.port}/0"

    def restart(self, *, persistence: Persistence | None = None, graceful: bool = False) -> None:
        """Stop the server (SIGKILL unless ``graceful``) and start it on the same port and directory."""
        self._reap(signal.SIGTERM if graceful else signal.SIGKILL)
        if persistence is not None:
            self.persistence = persistence
        self.start()

    def _argv(self, port: int) -> list[str]:
        argv = [str(self.binary), "--port", str(port), "--bind", LOCALHOST, "--dir", str(self.directory),
                "--save", "", "--daemonize", "no"]  # fmt: skip
        if self.persistence == "aof":
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--appendonly", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv + list(self.extra_args)

    def _probe(self, port: int) -> None:
        client = redis.Redis(
            host=LOCALHOST,
            port=port,
            password=self.password,
            socket_connect_timeout=1,
            socket_timeout=2,
            retry=NO_RETRY,
        )
        try:
            client.ping()
        finally:
            client.close()


# --------------------------------------------------------------------------
# Private servers for one test
# --------------------------------------------------------------------------


class ServerPool(Generic[P, S]):
    """Start servers of one class for one test and close them all at the end.

    With ``skip_if_set`` naming an environment variable that is set (the suite
    uses an external server), missing binaries skip the test instead of failing it.
    """

    def __init__(self, server_class: Callable[P, S], *, skip_if_set: str | None = None) -> None:
        self._server_class = server_class
        self._skip_if_set = skip_if_set
        self._servers: list[S] = []

    def start(self, *args: P.args, **kwargs: P.kwargs) -> S:
        """Create a server with the given arguments, start it and return it."""
        try:
            server = self._server_class(*args, **kwargs)
        except ServerNotInstalledError as exc:
            if self._skip_if_set and os.environ.get(self._skip_if_set):
                pytest.skip(f"needs local server binaries: {exc}")
            raise
        self._servers.append(server)
        server.start()
        return server

    def close(self) -> None:
        """Close every server started, even if closing one fails."""
        errors: list[BaseException] = []
        for server in self._servers:
            try:
                server.close()
            except Exception as exc:  # close the others first
                errors.append(exc)
        self._servers.clear()
        if errors:
            raise errors[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
