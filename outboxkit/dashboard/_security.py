"""Who may act, and proof that a form was posted by the dashboard's own page.

- Actions need a login with the token (printed at start, or ``--token``).
  The session is a random id in an ``HttpOnly``, ``SameSite=Strict`` cookie;
  the sessions live in this process only (a restart logs everybody out).
- Every POST carries the session's CSRF token in a hidden field (synchroniser
  token), and its ``Origin`` (or, lacking it, ``Referer``) must be this
  dashboard: a cross-site form can neither read the token nor pass the check.
- Read pages need no login: they show what ``outboxkit status`` shows to
  anyone with database access, never a password (URLs are redacted).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

__all__ = ["COOKIE", "Forbidden", "Guard", "OperatorSession"]

COOKIE = "outboxkit_dashboard"
_MAX_SESSIONS = 64  # bounded memory whatever a client does; the oldest session goes first
_SESSION_S = 12 * 3600
_MAX_NAME = 64


class Forbidden(PermissionError):  # noqa: N818 - shown as a 403 page
    """The request may not do that (no login, bad token, failed CSRF or origin check, read-only)."""


@dataclass(frozen=True, slots=True)
class OperatorSession:
    """One logged-in browser."""

    csrf: str
    who: str
    started: float


class Guard:
    """Checks tokens, keeps sessions, and checks every state-changing request."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._sessions: dict[str, OperatorSession] = {}

    def login(self, request: Request, token: str, name: str) -> tuple[str, OperatorSession]:
        """Check the token and the request's origin; return the new session's id and session."""
        check_origin(request)
        if not hmac.compare_digest(token.encode(), self._token):
            raise Forbidden("wrong token")
        while len(self._sessions) >= _MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        clean = " ".join(name.split())[:_MAX_NAME] or "operator"
        host = request.client.host if request.client else "?"
        session = OperatorSession(csrf=secrets.token_urlsafe(24), who=f"{clean} (dashboard, {host})",
                                  started=time.monotonic())  # fmt: skip
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = session
        return session_id, session

    def session(self, request: Request) -> OperatorSession | None:
        """The request's live session, if it has one."""
        session_id = request.cookies.get(COOKIE)
        found = self._sessions.get(session_id or "")
        if found is not None and time.monotonic() - found.started > _SESSION_S:
            self._sessions.pop(session_id or "", None)
            return None
        return found

    def logout(self, request: Request, csrf: str) -> None:
        """End the request's session (a CSRF-checked POST like any action)."""
        self.check_action(request, csrf)
        self._sessions.pop(request.cookies.get(COOKIE) or "", None)

    def check_action(self, request: Request, csrf: str) -> OperatorSession:
        """The session allowed to perform this POST, or :class:`Forbidden`."""
        check_origin(request)
        session = self.session(request)
        if session is None:
            raise Forbidden("log in with the dashboard's token first")
        if not hmac.compare_digest(csrf.encode(), session.csrf.encode()):
            raise Forbidden("the form's CSRF token is missing or wrong: reload the page and try again")
        return session


def check_origin(request: Request) -> None:
    """Refuse a POST that a browser says comes from another site."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise Forbidden("cross-site request refused")
    here = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return  # a non-browser client; the session cookie and CSRF token still decide
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin != here:
        raise Forbidden("cross-site request refused: the Origin is not this dashboard")
