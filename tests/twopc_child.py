"""A coordinator process for the 2PC crash tests: stops (and waits to be SIGKILLed) at a phase.

argv: the phase to stop at; env TWOPC_LOG, TWOPC_A, TWOPC_B: database URLs.
"""

from __future__ import annotations

import os
import sys
import time

import psycopg

from outboxkit.twopc import Phase, TwoPhaseCoordinator


def _observer(phase: Phase, gtrid: str) -> None:
    if phase.value == sys.argv[1]:
        print(gtrid, flush=True)
        time.sleep(600)  # the test SIGKILLs us here


def _insert(conn: psycopg.Connection) -> None:
    conn.execute("INSERT INTO item (name) VALUES ('x')")


if __name__ == "__main__":
    urls = {"a": os.environ["TWOPC_A"], "b": os.environ["TWOPC_B"]}
    TwoPhaseCoordinator(os.environ["TWOPC_LOG"], urls, observer=_observer).run({"a": _insert, "b": _insert})
