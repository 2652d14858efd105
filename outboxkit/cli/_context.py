"""State shared by subcommands and the environment variables they read."""

from __future__ import annotations

from dataclasses import dataclass

DATABASE_URL_ENV = "OUTBOXKIT_DATABASE_URL"
BROKER_URL_ENV = "OUTBOXKIT_BROKER_URL"


@dataclass(frozen=True, slots=True)
class CliState:
    """Global options, passed to subcommands through the Typer context."""

    debug: bool = False
