"""Redis URLs that name several seed hosts: ``redis+cluster://`` and ``redis+sentinel://``.

redis-py parses only one host per URL, so these forms are parsed here into a
typed :class:`SeedUrl`; every malformed part is one :class:`ConfigError`
whose text never contains the password.

``redis+cluster://[user:pw@]host:port[,host:port...][?options]``
    Redis Cluster; the hosts are seeds, the client discovers the rest.
``redis+sentinel://[user:pw@]host:port[,host:port...]/<master name>[/<db>][?options]``
    Redis Sentinel; the hosts are sentinels, ``user:pw`` are the master's.

``rediss+cluster://`` and ``rediss+sentinel://`` use TLS. Options:
``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``
(``required``/``none``), ``sentinel_username``/``sentinel_password`` (sentinel
only), ``durability`` and ``durability_timeout`` (every Redis broker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from brokers._durability import Durability, split_durability
from outbox._redact import redact_url
from outbox.errors import ConfigError

__all__ = ["CLUSTER_SCHEMES", "SENTINEL_SCHEMES", "SeedUrl", "parse_seed_url"]

CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
DEFAULT_PORTS = {"cluster": 6379, "sentinel": 26379}
_TLS_OPTIONS = frozenset({"ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"})
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(?P<port>\d{1,5}))?")
_MAX_PATH_PARTS = 2  # <master>/<db>
_MASTER = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass(frozen=True, kw_only=True, slots=True)
class SeedUrl:
    """A parsed ``redis+cluster://`` or ``redis+sentinel://`` URL.

    .. versionadded:: 0.3
    """

    kind: str  # "cluster" or "sentinel"
    seeds: tuple[tuple[str, int], ...]
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_options: dict[str, str] = field(default_factory=dict)
    master: str | None = None
    db: int = 0
    sentinel_username: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)
    durability: Durability = field(default_factory=Durability)

    def client_options(self) -> dict[str, object]:
        """Keyword arguments for redis-py's clients: credentials and TLS."""
        options: dict[str, object] = {"username": self.username, "password": self.password}
        if self.tls:
            options["ssl"] = True
            options.update(self.tls_options)
        return options


def parse_seed_url(url: str, durability: str | None = None) -> SeedUrl:
    """Parse ``url``; ``durability`` overrides its ``durability`` option.

    Raises:
        ConfigError: the URL is malformed (password masked).
    """
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in CLUSTER_SCHEMES | SENTINEL_SCHEMES:
        msg = f"not a redis+cluster:// or redis+sentinel:// URL: {shown}"
        raise ConfigError(msg)
    kind = "cluster" if scheme in CLUSTER_SCHEMES else "sentinel"
    url, parsed_durability = split_durability(url, durability)
    rest = url.partition("://")[2]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts, userinfo = netloc, ""
    username, colon, password = userinfo.partition(":")
    options = dict(parse_qsl(query, keep_blank_values=True))
    allowed = _TLS_OPTIONS | (_SENTINEL_OPTIONS if kind == "sentinel" else frozenset())
    if unknown := sorted(set(options) - allowed):
        msg = f"unknown option {unknown[0]!r} in broker URL {shown}"
        raise ConfigError(msg)
    master, db = _path(kind, path, shown)
    return SeedUrl(
        kind=kind,
        seeds=_seeds(hosts, DEFAULT_PORTS[kind], shown),
        username=unquote(username) or None,
        password=unquote(password) if colon else None,
        tls=scheme.startswith("rediss"),
        tls_options={k: v for k, v in options.items() if k in _TLS_OPTIONS},
        master=master,
        db=db,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        durability=parsed_durability,
    )


def _seeds(hosts: str, default_port: int, shown: str) -> tuple[tuple[str, int], ...]:
    seeds = []
    for item in hosts.split(","):
        match = _HOST.fullmatch(item.strip())
        port = int(match.group("port") or default_port) if match else 0
        if match is None or not 0 < port < 65536:  # noqa: PLR2004
            msg = f"bad host {item.strip()!r} in broker URL {shown}: use host:port[,host:port...]"
            raise ConfigError(msg)
        seeds.append((match.group("host").strip("[]"), port))
    return tuple(seeds)


def _path(kind: str, path: str, shown: str) -> tuple[str | None, int]:
    parts = [p for p in path.split("/") if p]
    if kind == "cluster":
        if parts:
            msg = f"a Redis Cluster URL has no path (a cluster has only database 0): {shown}"
            raise ConfigError(msg)
        return None, 0
    if (
        not parts
        or not _MASTER.fullmatch(parts[0])
        or len(parts) > _MAX_PATH_PARTS
        or not all(c.isdigit() for c in parts[1:])
    ):
        msg = (
            "a Redis Sentinel URL needs the master's name:"
            f" redis+sentinel://host:26379/<master>[/<db>], got {shown}"
        )
        raise ConfigError(msg)
    return parts[0], int(parts[1]) if len(parts) > 1 else 0
