"""``outboxkit dashboard``: see and repair the system in a browser (issue 14).

Server-rendered pages (Starlette + Jinja2, no script, no CDN) over the
library's read functions: the overview, relay and consumer dead letters with
retry and purge, sagas and their step log as a timeline, saga retry and abort.
Install with ``pip install 'outboxkit[dashboard]'``. See docs/dashboard.md.

.. versionadded:: 0.1
"""

from __future__ import annotations

from ._app import create_app
from ._config import DEFAULT_REFRESH_S, DEFAULT_TIMER_TOPIC, DashboardConfig, new_token
from ._serve import DEFAULT_PORT, serve

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_REFRESH_S",
    "DEFAULT_TIMER_TOPIC",
    "DashboardConfig",
    "create_app",
    "new_token",
    "serve",
]
