"""``outboxkit twopc recover``: finish the 2PC baseline's in-doubt transactions after a coordinator crash."""

from __future__ import annotations

from typing import Annotated

import typer

from outbox import ConfigError
from outboxkit.twopc import recover as recover_in_doubt

from ._context import DATABASE_URL_ENV
from ._options import DbOpt, command_option, require

twopc_app = typer.Typer(
    name="twopc",
    help="The two-phase commit baseline (docs/sagas.md, 'Why not 2PC').",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

ParticipantOpt = Annotated[
    list[str] | None,
    command_option("twopc", "--participant", "name=URL of a participant database (repeat per participant)."),
]


@twopc_app.callback()
def _twopc() -> None:
    """The two-phase commit baseline (docs/sagas.md, 'Why not 2PC')."""


def _parse(items: list[str]) -> dict[str, str]:
    participants: dict[str, str] = {}
    for item in items:
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            msg = "--participant takes name=URL (e.g. inventory=postgresql+psycopg://host/inventory)"
            raise ConfigError(msg)
        participants[name] = url
    if not participants:
        raise ConfigError("no participant: pass --participant name=URL once per participant database")
    return participants


@twopc_app.command(name="recover")
def recover(db: DbOpt = None, participant: ParticipantOpt = None) -> None:
    """Commit every prepared transaction the decision log (--db) says to commit; roll back the rest."""
    log_url = require(db, "--db", DATABASE_URL_ENV)
    done = recover_in_doubt(log_url, _parse(participant or []))
    for item in done:
        typer.echo(f"{'committed' if item.committed else 'rolled back'} {item.gid}")
    committed = sum(item.committed for item in done)
    typer.echo(f"{len(done)} in doubt: {committed} committed, {len(done) - committed} rolled back")
