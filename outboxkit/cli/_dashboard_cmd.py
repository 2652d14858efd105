"""``outboxkit dashboard``: serve the dashboard pages for one service's database (issue 14)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

import saga
from outbox import ConfigError, redact_url

from ._consume_cmd import load_registry
from ._context import DATABASE_URL_ENV
from ._options import (
    DEFAULT_STREAM_PREFIX,
    BrokerOpt,
    DbOpt,
    SagaTimerTopicOpt,
    SchemaOpt,
    StreamPrefixOpt,
    TableOpt,
    require,
)

__all__ = ["dashboard"]

TOKEN_ENV = "OUTBOXKIT_DASHBOARD_TOKEN"  # noqa: S105 - the variable's name, not a token


def dashboard(
    db: DbOpt = None,
    broker: BrokerOpt = None,
    table: TableOpt = "outbox",
    schema: SchemaOpt = None,
    host: Annotated[
        str,
        typer.Option(
            "--host", envvar="OUTBOXKIT_DASHBOARD_HOST", help="Address to listen on (loopback by default)."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", envvar="OUTBOXKIT_DASHBOARD_PORT", min=0, max=65535, help="Port (0: any free one)."
        ),
    ] = 8484,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar=TOKEN_ENV,
            help=f"Token operators log in with (env {TOKEN_ENV}); default: a new one, printed.",
            show_default=False,
        ),
    ] = None,
    read_only: Annotated[
        bool,
        typer.Option("--read-only", envvar="OUTBOXKIT_DASHBOARD_READ_ONLY", help="Offer no action at all."),
    ] = False,
    stream_prefix: StreamPrefixOpt = DEFAULT_STREAM_PREFIX,
    timer_topic: SagaTimerTopicOpt = saga.DEFAULT_TIMER_TOPIC,
    handlers: Annotated[
        str | None,
        typer.Option(
            "--handlers",
            envvar="OUTBOXKIT_DASHBOARD_HANDLERS",
            help="package.module:registry, to retry consumer dead letters.",
            show_default=False,
        ),
    ] = None,
    refresh: Annotated[
        int,
        typer.Option(
            "--refresh",
            envvar="OUTBOXKIT_DASHBOARD_REFRESH",
            min=0,
            help="Seconds between overview reloads (0: never).",
        ),
    ] = 5,
) -> None:
    """Serve the dashboard: overview, dead letters (retry, purge), sagas and their timelines."""
    try:
        from outboxkit.dashboard import DashboardConfig, new_token, serve  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        msg = f"the dashboard needs its extra: pip install 'outboxkit[dashboard]' ({exc.name} is missing)"
        raise ConfigError(msg) from None
    url = require(db, "--db", DATABASE_URL_ENV)
    given = token is not None
    config = DashboardConfig(
        db_url=url, table=table, schema=schema, broker_url=broker, stream_prefix=stream_prefix,
        timer_topic=timer_topic, token=token or new_token(), read_only=read_only, refresh_s=refresh,
        registry=load_registry(handlers) if handlers else None,
    )  # fmt: skip

    def ready(address: str) -> None:
        lines = [f"outboxkit dashboard for {redact_url(url)} on {address}"]
        if read_only:
            lines.append("read-only: no action is offered")
        elif not given:  # a token the operator chose is not echoed back
            lines.append(f"token for actions (log in at {address}login): {config.token}")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()

    serve(config, host=host, port=port, on_ready=ready)
