"""Two-phase commit over PostgreSQL prepared transactions: a baseline to measure sagas against.

Not a recommended path: see docs/sagas.md, "Why not 2PC". The coordinator
(:class:`TwoPhaseCoordinator`) prepares one transaction per participant
database, records "commit" in a durable decision log, then commits them;
:func:`recover` finishes every in-doubt transaction after a crash.
"""

from __future__ import annotations

from ._coordinator import (
    GID_PREFIX,
    Outcome,
    Phase,
    TwoPhaseCoordinator,
    VoteNo,
    check_prepared_transactions,
    conninfo,
    gid_of,
)
from ._log import ABORT, COMMIT, create_log, decide, read_decision
from ._recover import Recovered, recover

__all__ = [
    "ABORT",
    "COMMIT",
    "GID_PREFIX",
    "Outcome",
    "Phase",
    "Recovered",
    "TwoPhaseCoordinator",
    "VoteNo",
    "check_prepared_transactions",
    "conninfo",
    "create_log",
    "decide",
    "gid_of",
    "read_decision",
    "recover",
]
