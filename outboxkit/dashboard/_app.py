"""The Starlette application: routes, templates, error pages and security headers."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from outbox import StorageError

from ._config import DashboardConfig
from ._database import DashboardDatabase, Permissions
from ._filters import BadInput
from ._overview import read_overview
from ._security import COOKIE, Forbidden, Guard

__all__ = ["Dashboard", "create_app", "dashboard_of", "form_of", "render"]

_HERE = Path(__file__).parent
_MAX_FORM_BYTES = 64 * 1024  # a confirmation form of MAX_IDS ids fits many times over
_HEADERS = {
    # No script runs at all: the pages are plain HTML, forms and inline SVG.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Dashboard:
    """What every page needs: the settings, the database, the guard and the templates."""

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.db = DashboardDatabase(config)
        self.guard = Guard(config.token)
        self.permissions = Permissions({})
        self.templates = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["age"] = _age
        self.templates.filters["when"] = _when
        self.templates.filters["tojson_pretty"] = lambda v: json.dumps(
            v, indent=2, ensure_ascii=False, sort_keys=True
        )

    def refused(self, area: str) -> str | None:
        """Why the area's actions are unavailable, or ``None``."""
        if self.config.read_only:
            return "this dashboard runs --read-only"
        return self.permissions.refused.get(area)


def _age(value: dt.datetime | float | None) -> str:
    if value is None:
        return "-"
    seconds = (dt.datetime.now(dt.UTC) - value).total_seconds() if isinstance(value, dt.datetime) else value
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def dashboard_of(request: Request) -> Dashboard:
    """The dashboard serving this request."""
    found: Dashboard = request.app.state.dashboard
    return found


def render(request: Request, template: str, status: int = 200, **context: object) -> HTMLResponse:
    """A page, with what the layout needs (login state, CSRF token, read-only reasons)."""
    board = dashboard_of(request)
    session = board.guard.session(request)
    page = board.templates.get_template(template).render(
        request=request,
        session=session,
        csrf=session.csrf if session else "",
        config=board.config,
        database=board.db.where,
        refused=board.refused,
        **context,
    )
    return HTMLResponse(page, status_code=status)


async def form_of(request: Request) -> dict[str, list[str]]:
    """The POSTed form as lists of values (bounded in size)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > _MAX_FORM_BYTES):
        raise HTTPException(413, "the form is too large")
    form = await request.form(max_files=0, max_fields=1000, max_part_size=_MAX_FORM_BYTES)
    found: dict[str, list[str]] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            found.setdefault(key, []).append(value)
    return found


def one(form: dict[str, list[str]], name: str) -> str:
    """A single form value ('' when absent)."""
    values = form.get(name) or [""]
    return values[0]


async def overview(request: Request) -> Response:
    board = dashboard_of(request)
    view = await run_in_threadpool(read_overview, board.db, board.config)
    return render(request, "overview.html", view=view, refresh=board.config.refresh_s)


async def login_page(request: Request) -> Response:
    return render(request, "login.html", next=_safe_next(request.query_params.get("next")))


async def login(request: Request) -> Response:
    board = dashboard_of(request)
    form = await form_of(request)
    try:
        session_id, _ = board.guard.login(request, one(form, "token"), one(form, "name"))
    except Forbidden as exc:
        return render(request, "login.html", status=403, error=str(exc), next=_safe_next(one(form, "next")))
    response = RedirectResponse(_safe_next(one(form, "next")), status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="strict", secure=secure, path="/")
    return response


async def logout(request: Request) -> Response:
    board = dashboard_of(request)
    form = await form_of(request)
    board.guard.logout(request, one(form, "csrf"))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _safe_next(value: str | None) -> str:
    """Only a path on this dashboard (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > 500:  # noqa: PLR2004
        return "/"
    return value


def _error(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


async def _bad_input(request: Request, exc: Exception) -> Response:
    return _error(request, 400, str(exc))


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _error(request, 403, str(exc))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    return _error(request, exc.status_code, str(exc.detail))


async def _storage(request: Request, exc: Exception) -> Response:
    # StorageError messages carry the redacted URL and the driver's reason, never a password.
    return _error(request, 503, f"the database refused: {exc}")


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _lifespan(board: Dashboard) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            board.db.close()

    return lifespan


def create_app(config: DashboardConfig) -> Starlette:
    """The dashboard as an ASGI application (serve it with ``outboxkit dashboard`` or any ASGI server).

    .. versionadded:: 0.1
    """
    from ._consumer_pages import CONSUMER_ROUTES  # noqa: PLC0415 - the page modules import this one
    from ._relay_pages import RELAY_ROUTES  # noqa: PLC0415
    from ._saga_pages import SAGA_ROUTES  # noqa: PLC0415

    board = Dashboard(config)
    try:
        board.db.check()
        board.permissions = board.db.permissions()
    except BaseException:
        board.db.close()
        raise
    routes = [
        Route("/", overview),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *RELAY_ROUTES,
        *CONSUMER_ROUTES,
        *SAGA_ROUTES,
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_SecurityHeaders)],
        exception_handlers={
            BadInput: _bad_input,
            Forbidden: _forbidden,
            HTTPException: _http,
            StorageError: _storage,
        },
        lifespan=_lifespan(board),
    )
    app.state.dashboard = board
    return app
