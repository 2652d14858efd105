"""``outboxkit demo --dashboard``: serve the dashboard on the run's order service until Ctrl-C.

The order service runs the orchestrator, so its database holds the sagas (the
compensated orders' timelines), its outbox and its consumer dead letters; the
broker's consumer groups show every service's lag.
"""

from __future__ import annotations

from typing import TextIO

from outbox import ConfigError, redact_url
from outboxkit.demo import INVENTORY, ORDER, PAYMENT, TIMER_TOPIC

from ._workspace import Workspace

__all__ = ["serve_demo_dashboard"]


def serve_demo_dashboard(out: TextIO, ws: Workspace, *, port: int) -> None:
    """Serve the dashboard on the order service's database; return when stopped (SIGINT/SIGTERM)."""
    try:
        from outboxkit.dashboard import DashboardConfig, new_token, serve  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        msg = f"--dashboard needs its extra: pip install 'outboxkit[dashboard]' ({exc.name} is missing)"
        raise ConfigError(msg) from None
    config = DashboardConfig(
        db_url=ws.urls[ORDER.name],
        table=ORDER.outbox.table,
        broker_url=ws.broker,
        stream_prefix=ws.prefix,
        timer_topic=TIMER_TOPIC,
        token=new_token(),
    )

    def ready(url: str) -> None:
        out.write(f"\nDashboard of the order service on {url}  (Ctrl-C stops it and ends the demo)\n")
        out.write(f"  token for actions (log in at {url}login): {config.token}\n")
        for service in (PAYMENT, INVENTORY):
            where = redact_url(ws.urls[service.name])
            out.write(f"  the {service.name} service: outboxkit dashboard --db {where}")
            out.write(f" --table {service.outbox.table} --port 0\n")
        out.flush()

    serve(config, port=port, on_ready=ready)
