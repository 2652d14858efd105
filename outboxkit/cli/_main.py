"""Entry point: the Typer app, global options and error mapping."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from outbox import OutboxError, __version__
from outboxkit.demo.command import demo

from ._alerts_cmd import alerts
from ._consume_cmd import consume
from ._consumer_dead_letters_cmd import app as consumer_dead_letters_app
from ._context import CliState
from ._dashboard_cmd import dashboard
from ._dead_letters_cmd import app as dead_letters_app
from ._logging import configure_logging
from ._migrate_cmd import migrate
from ._otel_setup import run_otel_setup
from ._relay_cmd import relay
from ._saga_cmd import saga_app
from ._saga_ops_cmd import saga_abort, saga_list, saga_retry
from ._soak_cmd import soak
from ._status_cmd import status
from ._twopc_cmd import twopc_app

EXIT_USAGE = 2
# Typer >= 0.29 vendors Click under typer._click; older releases use click.
_CLI_ERRORS: tuple[type[Exception], ...] = (typer.TyperException,)
try:  # pragma: no cover - depends on the installed Typer
    import click

    _CLI_ERRORS = (*_CLI_ERRORS, click.ClickException)
except ImportError:  # pragma: no cover
    pass

app = typer.Typer(
    name="outboxkit",
    help="Transactional outbox, relay, idempotent consumers and sagas.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command(name="migrate")(migrate)
app.command(name="relay")(relay)
app.command(name="consume")(consume)
app.command(name="status")(status)
app.command(name="demo")(demo)
app.command(name="dashboard")(dashboard)
app.command(name="soak")(soak)
app.command(name="alerts")(alerts)
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(consumer_dead_letters_app, name="consumer-dead-letters")
saga_app.command(name="list")(saga_list)
saga_app.command(name="retry")(saga_retry)
saga_app.command(name="abort")(saga_abort)
app.add_typer(saga_app, name="saga")
app.add_typer(twopc_app, name="twopc")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"outboxkit {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="OUTBOXKIT_DEBUG", help="Show tracebacks.")
    ] = False,
    log_level: Annotated[
        str, typer.Option("--log-level", envvar="OUTBOXKIT_LOG_LEVEL", help="debug, info, warning, error.")
    ] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            envvar="OUTBOXKIT_LOG_FORMAT",
            help="auto (console on a terminal, else JSON), json, console.",
        ),
    ] = "auto",
    otel_setup: Annotated[
        str | None,
        typer.Option(
            "--otel-setup",
            envvar="OUTBOXKIT_OTEL_SETUP",
            help="package.module:function that configures the OpenTelemetry SDK (docs/tracing.md).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Transactional outbox, relay, idempotent consumers and sagas."""
    del version
    configure_logging(level=log_level, fmt=log_format)
    run_otel_setup(otel_setup)
    ctx.obj = CliState(debug=debug)


# Variables read outside the command line's options: the crash harness and the test suite.
_OTHER_ENV_PREFIXES = ("OUTBOXKIT_CRASH_", "OUTBOXKIT_TEST_")


def _envvars(command: object) -> Iterator[str]:
    """Every environment variable an option of ``command`` or its subcommands reads."""
    for param in getattr(command, "params", []):
        envvar = getattr(param, "envvar", None)
        yield from [envvar] if isinstance(envvar, str) else envvar or []
    for sub in getattr(command, "commands", {}).values():
        yield from _envvars(sub)


def warn_unknown_env(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """Write one stderr line per ``OUTBOXKIT_*`` variable no option reads (a misspelt one is ignored)."""
    known = set(_envvars(typer.main.get_command(app)))
    unknown = sorted(
        name
        for name in environ
        if name.startswith("OUTBOXKIT_") and name not in known and not name.startswith(_OTHER_ENV_PREFIXES)
    )
    for name in unknown:  # the name only: its value may be a secret
        sys.stderr.write(f"outboxkit: warning: unknown environment variable {name} is ignored\n")
    return unknown


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    """Run the ``outboxkit`` command; return its exit status."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    warn_unknown_env(os.environ)
    try:
        result = app(args=args, prog_name="outboxkit", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("outboxkit: aborted\n")
        return 130
    except OutboxError as exc:
        if debug:
            raise
        sys.stderr.write(f"outboxkit: error: {_one_line(str(exc))}\n")
        return EXIT_USAGE
    except _CLI_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `outboxkit`: show the help
            sys.stderr.write(exc.format_message() + "\n")  # type: ignore[attr-defined]
            return EXIT_USAGE
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        sys.stderr.write(f"outboxkit: error: {_one_line(text)}\n")
        return EXIT_USAGE
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover - `python -m outboxkit.cli._main`
    sys.exit(main())
