"""``outboxkit alerts``: print the Prometheus alerting rules that ship with outboxkit."""

from __future__ import annotations

from importlib import resources
from typing import Annotated

import typer

RULES_FILE = "outboxkit.rules.yml"
# Package data of the program (outboxkit/alerts/), so it is in the wheel too.
_RULES = resources.files("outboxkit").joinpath("alerts", RULES_FILE)


def rules_text() -> str:
    """The rules file as shipped."""
    return _RULES.read_text(encoding="utf-8")


def alerts(
    print_path: Annotated[
        bool, typer.Option("--print-path", help="Print where the rules file is installed instead.")
    ] = False,
) -> None:
    """Print Prometheus alerting rules (backlog, oldest row, lag, dead letters, sagas, daemons)."""
    if print_path:
        typer.echo(str(_RULES))
        return
    typer.echo(rules_text(), nl=False)
