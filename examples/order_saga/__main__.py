"""``python -m examples.order_saga run``: start the six processes, place orders, wait, check, stop.

    # PostgreSQL (one database per service, created if missing) + Redis Streams:
    python -m examples.order_saga run \\
        --db-base 'postgresql+psycopg://postgres@localhost/shop_{service}' --broker redis://localhost:6379/0

    # the embedded default: SQLite files and the SQL-table broker in ./order_saga_data
    python -m examples.order_saga run

Exit 0 when the consistency check passes, 1 when it does not or a process
died (named on one stderr line with its log and the command that restarts
it), 2 for bad options, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import secrets
import sys
from pathlib import Path

import sqlalchemy as sa
import structlog

from examples.order_saga.cluster import Cluster, ProcessExitedError, database_urls
from outbox import OutboxError, redact_url
from outboxkit.demo import OrderSpec, Scenario, Style, plan_orders, select_orders

MAX_ORDERS = 1000
MIN_STEP_TIMEOUT, MAX_STEP_TIMEOUT = 0.5, 600.0


def main(argv: list[str] | None = None) -> int:
    """Run the example; every failure is one line on stderr, never a traceback."""
    try:
        return _run(argv)
    except ProcessExitedError as exc:
        print(f"order_saga: {exc}", file=sys.stderr)
    except (TimeoutError, OutboxError) as exc:
        print(f"order_saga: {exc}", file=sys.stderr)
    except sa.exc.SQLAlchemyError as exc:  # a database the run cannot reach or create
        print(f"order_saga: database error: {type(exc).__name__}: {_first_line(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("order_saga: interrupted; the processes were stopped", file=sys.stderr)
        return 130
    return 1


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact_url(text[0]) if text else ""


def _run(argv: list[str] | None) -> int:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(
        prog="python -m examples.order_saga", description=__doc__.splitlines()[0]
    )
    parser.add_argument("command", choices=["run"])
    parser.add_argument(
        "--db-base", default=None, help="URL with {service}; default SQLite files in --workdir"
    )
    parser.add_argument("--broker", default=None, help="redis://... or a SQLAlchemy URL; default SQLite")
    parser.add_argument("--style", choices=[s.value for s in Style], default=Style.ORCHESTRATED.value)
    parser.add_argument("--orders", type=int, default=5, help="orders to place, 1-1000 (default 5)")
    parser.add_argument(
        "--step-timeout", type=float, default=2.0,
        help="seconds a step waits for a reply, 0.5-600 (default 2; the choreographed deadline is twice it)",
    )  # fmt: skip
    parser.add_argument("--workdir", type=Path, default=Path("order_saga_data"),
                        help="SQLite files and logs/ (default ./order_saga_data)")  # fmt: skip
    args = parser.parse_args(argv)
    if not 1 <= args.orders <= MAX_ORDERS:
        parser.error(f"--orders must be between 1 and {MAX_ORDERS}")
    if not MIN_STEP_TIMEOUT <= args.step_timeout <= MAX_STEP_TIMEOUT:
        parser.error(f"--step-timeout must be between {MIN_STEP_TIMEOUT:g} and {MAX_STEP_TIMEOUT:g} seconds")
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    urls = database_urls(args.db_base or f"sqlite:///{workdir}/{{service}}.db")
    broker = args.broker or f"sqlite:///{workdir}/broker.db"
    cluster = Cluster(
        urls=urls,
        broker=broker,
        workdir=workdir / "logs",
        style=Style(args.style),
        step_timeout=args.step_timeout,
        prefix=f"shop-{secrets.token_hex(3)}:",
    )
    # The in-process relay crash is `outboxkit demo`'s; here the fourth order is a plain success.
    specs = [
        dataclasses.replace(s, scenario=Scenario.SUCCESS) if s.scenario is Scenario.RELAY_CRASH else s
        for s in plan_orders(args.orders)
    ]
    cluster.prepare(len(specs))
    try:
        cluster.start_all()
        for line in cluster.describe():
            print(line)
        cluster.wait_ready()
        cluster.place(specs)
        finished = cluster.wait(len(specs), timeout=60 + 4 * args.step_timeout)
    finally:
        cluster.stop_all()
    return report(cluster, specs, finished=finished)


def report(cluster: Cluster, specs: list[OrderSpec], *, finished: bool) -> int:
    cluster.engines = {name: sa.create_engine(url) for name, url in cluster.urls.items()}
    status = {row.order_id: row.status for row in select_orders(cluster.engines["order"])}
    for spec in specs:
        print(
            f"#{spec.order_id}  {spec.customer:<6} {spec.scenario.value:<17} -> {status.get(spec.order_id)}"
        )
    checks = cluster.check(len(specs))
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
    print(f"logs in {cluster.workdir}")
    return 0 if finished and all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
