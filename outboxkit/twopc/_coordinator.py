"""A small two-phase commit coordinator over PostgreSQL prepared transactions: a measured baseline.

Not a recommended path (docs/sagas.md, "Why not 2PC"): participants hold
their row locks from PREPARE TRANSACTION until COMMIT PREPARED, so while the
coordinator is down every other transaction that needs those rows waits.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from outbox import ConfigError, StorageError, redact_url

from ._log import COMMIT, decide

__all__ = [
    "GID_PREFIX",
    "Outcome",
    "Phase",
    "TwoPhaseCoordinator",
    "VoteNo",
    "check_prepared_transactions",
    "conninfo",
    "gid_of",
]

GID_PREFIX = "okit2pc"
_GID = re.compile(r"^okit2pc:[0-9a-f]{32}:[a-z0-9_]+$")

Work = Callable[[psycopg.Connection], None]


class VoteNo(Exception):  # noqa: N818 - a participant's vote, not a failure of the coordinator
    """Raised by a participant's work to vote "no": the global transaction is rolled back everywhere."""


class Phase(enum.StrEnum):
    """Instants the coordinator reports to its observer."""

    PREPARED = "prepared"  # every participant prepared; no decision yet
    DECIDED = "decided"  # "commit" is in the log; nothing committed yet
    COMMITTED = "committed"
    ROLLED_BACK = "rolled back"


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """How one global transaction ended."""

    gtrid: str
    committed: bool
    reason: str | None


def conninfo(url: str) -> str:
    """A psycopg conninfo for a SQLAlchemy PostgreSQL URL."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("postgresql"):
        msg = f"2PC needs PostgreSQL, got {redact_url(url)}"
        raise ConfigError(msg)
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def gid_of(gtrid: str, participant: str) -> str:
    """The prepared transaction's name on one participant (unique per server: databases may share one)."""
    gid = f"{GID_PREFIX}:{gtrid}:{participant}"
    if not _GID.match(gid):
        msg = f"participant names are lower-case letters, digits and _, got {participant!r}"
        raise ConfigError(msg)
    return gid


def check_prepared_transactions(conn: psycopg.Connection, name: str) -> None:
    """One ConfigError line when the server cannot prepare transactions."""
    row = conn.execute("SHOW max_prepared_transactions").fetchone()
    if row is None or int(row[0]) <= 0:
        msg = f"2PC needs max_prepared_transactions > 0 on the {name} database's PostgreSQL server (it is 0)"
        raise ConfigError(msg)


class TwoPhaseCoordinator:
    """Runs one piece of work per participant as one global transaction (presumed abort)."""

    def __init__(
        self,
        log_url: str,
        participants: Mapping[str, str],
        *,
        observer: Callable[[Phase, str], None] | None = None,
    ) -> None:
        self._log_info = conninfo(log_url)
        self._infos = {name: conninfo(url) for name, url in participants.items()}
        self._observer = observer or _ignore

    def check(self) -> None:
        """Refuse, with one line, participants whose server has max_prepared_transactions = 0."""
        for name, info in self._infos.items():
            with _connect(info, name) as conn:
                check_prepared_transactions(conn, name)

    def run(self, work: Mapping[str, Work]) -> Outcome:
        """Phase 1 on every participant, the decision in the log, then phase 2."""
        gtrid = uuid.uuid4().hex
        conns = {name: _connect(self._infos[name], name) for name in work}
        prepared: list[str] = []
        try:
            reason = self._prepare_all(gtrid, work, conns, prepared)
            self._observer(Phase.PREPARED, gtrid)
            if reason is None:
                with _connect(self._log_info, "log") as log:
                    if decide(log, gtrid, COMMIT) == COMMIT:
                        self._observer(Phase.DECIDED, gtrid)
                        for name in prepared:
                            conns[name].execute(f"COMMIT PREPARED '{gid_of(gtrid, name)}'")
                        self._observer(Phase.COMMITTED, gtrid)
                        return Outcome(gtrid=gtrid, committed=True, reason=None)
                    reason = "aborted by recovery"
            for name in prepared:
                conns[name].execute(f"ROLLBACK PREPARED '{gid_of(gtrid, name)}'")
            self._observer(Phase.ROLLED_BACK, gtrid)
            return Outcome(gtrid=gtrid, committed=False, reason=reason)
        finally:
            for conn in conns.values():
                conn.close()

    def _prepare_all(
        self,
        gtrid: str,
        work: Mapping[str, Work],
        conns: Mapping[str, psycopg.Connection],
        prepared: list[str],
    ) -> str | None:
        """Prepare each participant in turn; the first "no" vote (or error) stops and is returned."""
        for name, job in work.items():
            conn = conns[name]
            try:
                conn.execute("BEGIN")
                job(conn)
                conn.execute(f"PREPARE TRANSACTION '{gid_of(gtrid, name)}'")
            except (VoteNo, psycopg.Error) as exc:
                if not conn.closed:
                    conn.execute("ROLLBACK")
                return f"{name}: {exc}" if isinstance(exc, VoteNo) else f"{name}: {type(exc).__name__}"
            prepared.append(name)
        return None


def _ignore(phase: Phase, gtrid: str) -> None:
    del phase, gtrid


def _connect(info: str, name: str) -> psycopg.Connection:
    try:
        return psycopg.connect(info, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        msg = f"cannot connect to the {name} database: {type(exc).__name__}"
        raise StorageError(msg) from None
