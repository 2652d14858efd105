"""``outboxkit demo``: watch the order / payment / inventory saga run, then check the three databases.

With no options: SQLite files in a temporary directory, the SQL-table
broker, and all services, relays and consumers in this process. Five orders
show one outcome each (success, payment declined, out of stock, a relay crash
between publish and mark, a payment that never answers); the timeline shows
every step and compensation as it happens; the run ends with a summary and a
consistency check computed from the databases. Exit 0 when consistent, 1 when
not (the failing check is named), 2 on bad options.

``--db`` and ``--broker`` read ``OUTBOXKIT_DEMO_DB`` / ``OUTBOXKIT_DEMO_BROKER``,
never the application's ``OUTBOXKIT_DATABASE_URL``: a demo must not write into
the database a shell happens to point at.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import sys
from typing import Annotated, TextIO

import structlog
import typer

from outbox import ConfigError
from outboxkit.demo import Faults, OrderSpec, Style, order_saga, plan_orders

from ._report import print_kept, print_report
from ._run import DemoRun, Result
from ._timeline import Timeline
from ._workspace import Workspace, workspace

__all__ = ["demo"]

DEFAULT_PACE_S = 0.4  # readable for the five showcase orders; many orders go faster


class Fault(enum.StrEnum):
    """Bugs to plant on purpose, to see the consistency check fail."""

    NONE = "none"
    SKIP_REFUND = "skip-refund"
    SKIP_RELEASE = "skip-release"


def _opt(
    flag: str, help_text: str, *, hidden: bool = False, show_default: bool = True
) -> typer.models.OptionInfo:
    env = "OUTBOXKIT_DEMO_" + flag.lstrip("-").replace("-", "_").upper()
    return typer.Option(  # type: ignore[no-any-return]
        flag, envvar=env, help=help_text, hidden=hidden, show_default=show_default
    )


_DB_HELP = "A PostgreSQL server URL: the run creates (and drops) a database per service. Default: SQLite."
_BROKER_HELP = "redis://... or a SQLAlchemy URL (SQL-table broker). Default: an SQLite file."
Orders = Annotated[int, _opt("--orders", "Orders to place; the first five show one outcome each.")]
DeclineRate = Annotated[float, _opt("--decline-rate", "Share of later orders paid with a declined card.")]
OutOfStockRate = Annotated[float, _opt("--out-of-stock-rate", "Share of later orders for a sold-out item.")]
StyleOpt = Annotated[Style, _opt("--style", "orchestrated (an orchestrator) or choreographed (events).")]
Seed = Annotated[int, _opt("--seed", "Seed of the random later orders.")]
Db = Annotated[str | None, _opt("--db", _DB_HELP, show_default=False)]
Broker = Annotated[str | None, _opt("--broker", _BROKER_HELP, show_default=False)]
Keep = Annotated[bool, _opt("--keep", "Keep the databases and print where they are.")]
Timeout = Annotated[float, _opt("--timeout", "Seconds to wait for every order to end.")]
StepTimeout = Annotated[float, _opt("--step-timeout", "Seconds a saga step waits for its reply.")]
Pace = Annotated[
    float | None, _opt("--pace", "Seconds between two orders [default: 0.4, less for many orders].")
]
FaultOpt = Annotated[Fault, _opt("--fault", "Plant a bug in a participant (tests the check).", hidden=True)]


def _check_options(orders: int, rates: dict[str, float], seconds: dict[str, float]) -> None:
    if orders < 1:
        msg = f"--orders must be at least 1, got {orders}"
        raise ConfigError(msg)
    for name, rate in rates.items():
        if not 0 <= rate <= 1:
            msg = f"{name} must be between 0 and 1, got {rate:g}"
            raise ConfigError(msg)
    if rates["--decline-rate"] + rates["--out-of-stock-rate"] > 1:
        msg = "--decline-rate and --out-of-stock-rate add up to more than 1"
        raise ConfigError(msg)
    for name, value in seconds.items():
        if value <= 0 if name != "--pace" else value < 0:
            msg = f"{name} must be positive, got {value:g}"
            raise ConfigError(msg)


def demo(
    orders: Orders = 5,
    decline_rate: DeclineRate = 0.2,
    out_of_stock_rate: OutOfStockRate = 0.1,
    style: StyleOpt = Style.ORCHESTRATED,
    seed: Seed = 7,
    db: Db = None,
    broker: Broker = None,
    keep: Keep = False,
    timeout: Timeout = 60.0,
    step_timeout: StepTimeout = 1.5,
    pace: Pace = None,
    fault: FaultOpt = Fault.NONE,
) -> None:
    """Run the order saga on the embedded default and check the three databases (exit 1 if inconsistent)."""
    pace = min(DEFAULT_PACE_S, 8 / max(orders, 1)) if pace is None else pace
    rates = {"--decline-rate": decline_rate, "--out-of-stock-rate": out_of_stock_rate}
    seconds = {"--timeout": timeout, "--step-timeout": step_timeout, "--pace": pace}
    _check_options(orders, rates, seconds)
    specs = plan_orders(orders, decline_rate=decline_rate, out_of_stock_rate=out_of_stock_rate, seed=seed)
    faults = Faults(skip_refund=fault is Fault.SKIP_REFUND, skip_release=fault is Fault.SKIP_RELEASE)
    timeline = Timeline(sys.stdout, steps=order_saga().steps)
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, timeline.processor])
    with workspace(db, broker, keep=keep) as ws:
        _intro(timeline, specs, style, ws, server=db is not None)
        run = DemoRun(
            specs=specs,
            style=style,
            ws=ws,
            faults=faults,
            timeout=dt.timedelta(seconds=timeout),
            step_timeout=dt.timedelta(seconds=step_timeout),
            pace=dt.timedelta(seconds=pace),
        )
        result = asyncio.run(run.run(on_ready=timeline.restart))
        print_report(timeline.stream, timeline.palette, specs, result.rows, result.reasons, result.checks)
        if keep:
            print_kept(timeline.stream, ws, result.sagas, result.reasons)
    _verdict(timeline, result, timeout)


def _intro(timeline: Timeline, specs: list[OrderSpec], style: Style, ws: Workspace, *, server: bool) -> None:
    out, paint, icons = timeline.stream, timeline.palette.paint, timeline.palette.icons
    where = "the --db server" if server else str(ws.directory)
    out.write(paint(f"outboxkit demo: {len(specs)} orders, {style.value} saga", "bold") + "\n")
    out.write(
        "  three services (order, inventory, payment), each with its own database, outbox, relay and\n"
        f"  consumer, talking through one broker; data in {where}\n"
    )
    legend = [("ok", "done"), ("fail", "refused or failed"), ("undo", "compensation"),
              ("dim", "message sent"), ("dup", "duplicate skipped")]  # fmt: skip
    out.write("  " + "   ".join(f"{icons[k]} {v}" for k, v in legend) + "\n\n")
    out.flush()


def _verdict(timeline: Timeline, result: Result, timeout: float) -> None:
    out: TextIO = timeline.stream
    paint = timeline.palette.paint
    failed = [c.name for c in result.checks if not c.ok]
    out.writelines(paint(f"  ! {error}", "fail") + "\n" for error in result.errors)
    if result.timed_out and not result.errors:
        out.write(paint(f"  ! gave up waiting after {timeout:g}s", "fail") + "\n")
    out.flush()
    if failed or result.errors or result.timed_out:
        reason = "; ".join(failed) or ("a service failed" if result.errors else "timed out")
        sys.stderr.write(f"outboxkit demo: inconsistent: {reason}\n")
        raise typer.Exit(code=1)
    out.write(
        "\n"
        + paint("All consistent: every order ended as planned, nothing lost, nothing twice.", "ok")
        + "\n"
    )
