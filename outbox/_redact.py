"""Make URLs safe to log: the password never leaves this module."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

__all__ = ["redact_text", "redact_url"]

_MASK = "***"
# scheme://user:password@ -> scheme://user:***@, anywhere in a text.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")
# Schemes where a user without a password is a token (NATS): masked too.
_TOKEN_SCHEMES = frozenset({"nats", "tls"})
# Query parameters that carry secrets in driver URLs (libpq, redis-py, ...).
# Any prefix counts: ``sentinel_password`` (Redis Sentinel URLs) is a password too.
_SECRET_PARAM = re.compile(r"(?i)(^|[?&;])([a-z_]*(?:password|passwd|pwd|pass|secret|token)=)[^&;]*")


def redact_text(text: str) -> str:
    """Mask the password of every URL inside ``text`` (exception messages, log values, tracebacks).

    .. versionadded:: 0.1
    """
    return _URL_PASSWORD.sub(rf"\g<head>{_MASK}@", text)


def redact_url(url: object) -> str:
    """Return ``url`` as text with any password replaced by ``***``.

    Works for SQLAlchemy URLs (``postgresql+psycopg://``, ``sqlite://``) and
    broker URLs (``redis://``, ``rediss://``, ``unix://``); text that does not
    parse as a URL is reduced to its scheme so nothing secret can leak.
    """
    text = str(url) if not hasattr(url, "render_as_string") else _render_sa(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "<unparseable url>"
    if parts.query:
        parts = parts._replace(query=_SECRET_PARAM.sub(rf"\1\2{_MASK}", parts.query))
        text = urlunsplit(parts)
    if parts.password is None and "@" not in parts.netloc:
        return text
    user = parts.username or ""
    if parts.scheme.lower() in _TOKEN_SCHEMES and parts.password is None and user:
        user = _MASK  # nats://<token>@host: a user alone is a secret token
    seeds = parts.netloc.rpartition("@")[2]
    if "," in seeds:  # several seeds (nats://h1:4222,h2:4222): no password after the "@"
        auth = f"{user}:{_MASK}@" if parts.password is not None else (f"{user}@" if user else "")
        return urlunsplit((parts.scheme, f"{auth}{seeds}", parts.path, parts.query, ""))
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        port = ""
    auth = f"{user}:{_MASK}@" if parts.password is not None else (f"{user}@" if user else "")
    return urlunsplit((parts.scheme, f"{auth}{host}{port}", parts.path, parts.query, ""))


def _render_sa(url: object) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)  # type: ignore[arg-type]
    except ArgumentError:
        return "<unparseable url>"
