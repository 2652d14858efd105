"""Recovery after a coordinator crash: finish every in-doubt prepared transaction from the log.

For each participant database, every prepared transaction named by this
coordinator is committed if the log says "commit" and rolled back otherwise;
"abort" is written to the log first (first writer wins, see ``_log``), so a
coordinator that is still alive can no longer commit what recovery rolls
back. Running it twice does nothing the second time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._coordinator import GID_PREFIX, _connect, conninfo, gid_of
from ._log import ABORT, COMMIT, create_log, decide

__all__ = ["Recovered", "recover"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Recovered:
    """One prepared transaction recovery finished."""

    participant: str
    gid: str
    committed: bool


def recover(log_url: str, participants: Mapping[str, str]) -> list[Recovered]:
    """Commit what the log decided, roll back the rest; return what was done."""
    done: list[Recovered] = []
    with _connect(conninfo(log_url), "log") as log:
        create_log(log)
        for name, url in participants.items():
            with _connect(conninfo(url), name) as conn:
                rows = conn.execute(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND gid LIKE %s",
                    (f"{GID_PREFIX}:%:{name}",),
                ).fetchall()
                for (gid,) in rows:
                    gtrid = str(gid).split(":")[1]
                    safe = gid_of(gtrid, name)  # re-built from checked parts: safe to quote
                    committed = decide(log, gtrid, ABORT) == COMMIT
                    verb = "COMMIT" if committed else "ROLLBACK"
                    conn.execute(f"{verb} PREPARED '{safe}'")
                    done.append(Recovered(participant=name, gid=safe, committed=committed))
    return done
