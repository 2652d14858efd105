"""The end of a demo run: the summary table and the consistency check."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TextIO

import sqlalchemy as sa

from outbox import redact_url
from saga.tables import saga_instance

from ._check import Check, OrderRow
from ._events import money
from ._scenario import OrderSpec
from ._timeline import Palette
from ._workspace import Workspace

__all__ = ["print_kept", "print_report", "saga_errors", "saga_ids"]


def saga_errors(orders: sa.Engine) -> dict[str, str]:
    """Why each compensated saga was compensated, by order id (its correlation id)."""
    s = saga_instance
    with orders.connect() as conn:
        rows = conn.execute(sa.select(s.c.correlation_id, s.c.error).where(s.c.error.is_not(None))).all()
    return {str(r[0]): str(r[1]) for r in rows}


def saga_ids(orders: sa.Engine) -> dict[str, str]:
    """Each order's saga id (orchestrated runs), by order id."""
    s = saga_instance
    with orders.connect() as conn:
        return {str(r[0]): str(r[1]) for r in conn.execute(sa.select(s.c.correlation_id, s.c.id)).all()}


def print_kept(out: TextIO, ws: Workspace, sagas: Mapping[str, str], reasons: Mapping[str, str]) -> None:
    """Where the kept data is, and commands to look at it."""
    out.write(f"\nData kept in {ws.directory}:\n")
    places = [*ws.urls.items(), ("broker", ws.broker)]
    out.writelines(f"  {name:<10} {redact_url(url)}\n" for name, url in places)
    example = next((order for order in sagas if order in reasons), next(iter(sagas), None))
    if example is not None:
        order_db = redact_url(ws.urls["order"])
        out.write(
            f"  look at order #{example}'s saga:  outboxkit saga show {sagas[example]} --db {order_db}\n"
        )


def print_report(
    out: TextIO,
    palette: Palette,
    specs: Sequence[OrderSpec],
    rows: Sequence[OrderRow],
    reasons: Mapping[str, str],
    checks: Sequence[Check],
) -> None:
    """Print the summary table, then the checks."""
    by_id = {r.order_id: r for r in rows}
    out.write("\n" + palette.paint("Orders", "bold") + "\n")
    header = (
        f"  {'order':<7} {'customer':<9} {'items':<20} {'amount':>8}  {'scenario':<17} {'result':<10} why"
    )
    out.write(header + "\n")
    for spec in specs:
        row = by_id.get(spec.order_id)
        status = row.status if row is not None else "missing"
        tone = {"confirmed": "ok", "cancelled": "undo"}.get(status, "fail")
        reason = "" if status != "cancelled" or row is None else reasons.get(spec.order_id, row.reason or "")
        if status != spec.scenario.expected_status:
            reason = palette.paint(f"expected {spec.scenario.expected_status}", "fail")
        items = palette.text(f"{spec.qty} x {spec.sku}")
        line = (
            f"  #{spec.order_id:<6} {spec.customer:<9} {items:<20} {money(spec.amount):>8}  "
            f"{spec.scenario.value:<17} {palette.paint(f'{status:<10}', tone)} {reason}"
        )
        out.write(line.rstrip() + "\n")
    out.write("\n" + palette.paint("Consistency check (from the three services' databases)", "bold") + "\n")
    width = max(len(c.name) for c in checks)
    for check in checks:
        mark = palette.paint(
            palette.icons["ok"] if check.ok else palette.icons["fail"], "ok" if check.ok else "fail"
        )
        verdict = "" if check.ok else palette.paint("  FAILED", "fail")
        out.write(f"  {mark} {check.name:<{width}}  {check.detail}{verdict}\n")
    out.flush()
