"""``outboxkit soak``: the whole-system fault soak against your own PostgreSQL and Redis or NATS.

The URLs are flags only, never ``OUTBOXKIT_DATABASE_URL``/``OUTBOXKIT_BROKER_URL``:
the soak fills the database and broker it is given, so it must never pick up an
application's from the environment (the same rule as ``outboxkit demo``).
"""

from __future__ import annotations

import enum
import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from outbox import ConfigError, redact_url
from outboxkit.soak import PROFILES, preflight, run, verdict_json

__all__ = ["soak"]

EXIT_VIOLATION = 1


class ProfileName(enum.StrEnum):
    """The soak profiles (outboxkit/soak/_profile.py)."""

    smoke = "smoke"
    full = "full"
    faults = "faults"


def soak(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="A fresh PostgreSQL database for the soak (SQLAlchemy URL); it is migrated and filled.",
            show_default=False,
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="A fresh broker for the soak's streams: Redis (redis://...) or NATS JetStream (nats://...).",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        ProfileName,
        typer.Option(
            "--profile",
            help="smoke: ~10k events, minutes; full: ~100k events; faults: ~100k events, >= 1,000 faults.",
        ),
    ] = ProfileName.smoke,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the workload and the fault schedule.")] = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Bundle directory for logs and the verdict (default: a new temporary directory)."
        ),
    ] = None,
) -> int:
    """Writers, relays and consumers under SIGKILL and SIGSTOP, then a check: none lost, doubled, reordered.

    Exit status 0 when every guarantee held, 1 on a violation (the bundle then
    holds the logs and snapshots), 2 on bad input. Server restarts are not
    injected: the soak does not control your servers (docs/reliability.md).
    """
    if not db or not broker:
        msg = (
            "the soak needs --db postgresql+psycopg://... and --broker redis://... or nats://..., both fresh"
        )
        raise ConfigError(msg)
    db_url, broker_url = db, broker
    preflight(db_url, broker_url)
    bundle = out or Path(tempfile.mkdtemp(prefix=f"outboxkit-soak-{profile.value}-"))
    bundle.mkdir(parents=True, exist_ok=True)
    typer.echo(
        f"soak: profile={profile.value} seed={seed} db={redact_url(db_url)}"
        f" broker={redact_url(broker_url)} bundle={bundle}"
    )
    verdict = run(PROFILES[profile.value], seed, bundle, db=db_url, broker=broker_url)
    typer.echo(json.dumps(verdict_json(verdict), indent=2))
    typer.echo("soak: OK" if verdict.ok else f"soak: FAILED: {'; '.join(verdict.violations)}")
    return 0 if verdict.ok else EXIT_VIOLATION
