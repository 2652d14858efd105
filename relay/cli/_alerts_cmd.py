"""``outboxkit alerts``: print the Prometheus alerting rules that ship with outboxkit."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

import typer

RULES_FILE = "outboxkit.rules.yml"


def rules_text() -> str:
    """The rules file as shipped (package data, so it is in the wheel too)."""
    return resources.files(__package__).joinpath("alerts", RULES_FILE).read_text(encoding="utf-8")


def alerts(
    print_path: Annotated[
        bool, typer.Option("--print-path", help="Print where the rules file is installed instead.")
    ] = False,
) -> None:
    """Print Prometheus alerting rules (backlog, oldest row, lag, dead letters, sagas, daemons)."""
    if print_path:
        typer.echo(str(resources.files(__package__).joinpath("alerts", RULES_FILE)))
        return
    typer.echo(rules_text(), nl=False)
