"""``nats://`` and ``tls://`` URLs parsed into a typed :class:`NatsConfig`.

Several seeds are one comma-separated host list, the form every NATS client
accepts: ``nats://user:pw@h1:4222,h2:4222,h3:4222``. A user without a password
is a token (``nats://s3cr3t@host``), as in the NATS CLI. The query string
takes the options below; anything else is refused, so a typo is an error and
not a silent default.

==================  ===============================================  ==========
option              meaning                                          default
==================  ===============================================  ==========
``creds``           path of a ``.creds`` file (JWT + NKey seed)      none
``nkey``            path of an NKey seed file                        none
``ca``              CA bundle to verify the servers (implies TLS)    system CAs
``cert``, ``key``   client certificate and key (mutual TLS)          none
``replicas``        replicas of each stream and of the KV bucket     3 on a cluster, else 1
``storage``         ``file`` or ``memory``                           ``file``
``dedup_window``    seconds JetStream drops a repeated message id    600
``ack_wait``        seconds before an unacknowledged entry returns   60
``timeout``         seconds per request (publish, API call)          5
==================  ===============================================  ==========

.. versionadded:: 0.2
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote

from outbox.errors import ConfigError

__all__ = ["NATS_SCHEMES", "NatsConfig", "parse_nats_url"]

NATS_SCHEMES = frozenset({"nats", "tls"})
DEFAULT_PORT = 4222
DEFAULT_DEDUP_WINDOW = 600.0
DEFAULT_ACK_WAIT = 60.0
DEFAULT_TIMEOUT = 5.0
_MAX_REPLICAS = 5
_OPTIONS = frozenset(
    {"creds", "nkey", "ca", "cert", "key", "replicas", "storage", "dedup_window", "ack_wait", "timeout"}
)


@dataclass(frozen=True, kw_only=True, slots=True)
class NatsConfig:
    """Where and how to reach a NATS JetStream cluster (never printed: it may hold secrets).

    Attributes:
        servers: ``nats://host:port`` (or ``tls://``) per seed, in URL order.
        user, password: plain user/password authentication, or ``None``.
        token: token authentication, or ``None``.
        creds: path of a credentials file (decentralised JWT auth), or ``None``.
        nkey: path of an NKey seed file, or ``None``.
        tls: whether to require TLS (``tls://`` or a ``ca``/``cert`` option).
        ca, cert, key: TLS files, or ``None``.
        replicas: stream and bucket replicas; ``None`` = 3 on a cluster, else 1.
        storage: ``file`` (survives a restart) or ``memory``.
        dedup_window: seconds JetStream remembers a ``Nats-Msg-Id``.
        ack_wait: seconds an unacknowledged delivery waits before redelivery.
        timeout: seconds per request.
        description: the URL without secrets, for logs and errors.
    """

    servers: tuple[str, ...]
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds: str | None = None
    nkey: str | None = None
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    replicas: int | None = None
    storage: Literal["file", "memory"] = "file"
    dedup_window: float = DEFAULT_DEDUP_WINDOW
    ack_wait: float = DEFAULT_ACK_WAIT
    timeout: float = DEFAULT_TIMEOUT
    description: str = "nats://"

    def __repr__(self) -> str:
        return f"NatsConfig({self.description})"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context, or None without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert:
            try:
                context.load_cert_chain(self.cert, self.key)
            except (OSError, ssl.SSLError) as exc:
                msg = f"cannot load the client certificate of {self.description}: {type(exc).__name__}"
                raise ConfigError(msg) from None
        return context


def _invalid(description: str, why: str) -> ConfigError:
    return ConfigError(f"invalid NATS URL {description}: {why}")


def _seconds(description: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _invalid(description, f"{name} must be a number of seconds, got {text!r}") from None
    if not 0 < value < 86400 * 365:
        raise _invalid(description, f"{name} must be positive, got {text!r}")
    return value


def _file(description: str, name: str, text: str) -> str:
    if not Path(text).is_file():
        raise _invalid(description, f"the {name} file {text!r} does not exist")
    return text


def parse_nats_url(url: str) -> NatsConfig:  # noqa: C901, PLR0912 - one flat list of options
    """Parse ``nats://[user:pw@|token@]h1[:p],h2[:p]...[?options]`` (or ``tls://``).

    Raises:
        ConfigError: the URL is malformed or names an unknown option (no secret in the message).
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in NATS_SCHEMES:
        raise ConfigError("invalid NATS URL: it must start with nats:// or tls://")
    rest, _, query = rest.partition("?")
    rest = rest.rstrip("/")
    userinfo, at, hostlist = rest.rpartition("@")
    user = password = token = None
    if at:
        name, colon, secret = userinfo.partition(":")
        if colon:
            user, password = unquote(name), unquote(secret)
        else:
            token = unquote(name)
    auth = f"{user}:***@" if user is not None else ("***@" if token is not None else "")
    description = f"{scheme}://{auth}{hostlist}"
    if "/" in hostlist:
        raise _invalid(description, "a NATS URL has no path")
    servers = []
    for seed in hostlist.split(","):
        host, colon, port_text = seed.strip().rpartition(":") if ":" in seed else (seed.strip(), "", "")
        if not host or any(c in host for c in " []:@"):
            raise _invalid(description, f"bad host {seed!r} (use host:port,host:port)")
        port = DEFAULT_PORT
        if colon:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:  # noqa: PLR2004
                raise _invalid(description, f"bad port in {seed!r}")
            port = int(port_text)
        servers.append(f"{scheme}://{host}:{port}")
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _invalid(description, "malformed query string") from None
    for name, value in pairs:
        if name not in _OPTIONS:
            raise _invalid(description, f"unknown option {name!r} (known: {', '.join(sorted(_OPTIONS))})")
        options[name] = value
    replicas = None
    if "replicas" in options:
        text = options["replicas"]
        if not text.isdigit() or not 1 <= int(text) <= _MAX_REPLICAS:
            raise _invalid(description, f"replicas must be 1 to {_MAX_REPLICAS}, got {text!r}")
        replicas = int(text)
    storage = options.get("storage", "file")
    if storage not in {"file", "memory"}:
        raise _invalid(description, f"storage must be file or memory, got {storage!r}")
    if ("cert" in options) != ("key" in options):
        raise _invalid(description, "give both cert and key for a client certificate")
    files = {
        n: _file(description, n, options[n]) for n in ("creds", "nkey", "ca", "cert", "key") if n in options
    }
    tls = scheme == "tls" or "ca" in options or "cert" in options
    return NatsConfig(
        servers=tuple(servers),
        user=user,
        password=password,
        token=token,
        creds=files.get("creds"),
        nkey=files.get("nkey"),
        tls=tls,
        ca=files.get("ca"),
        cert=files.get("cert"),
        key=files.get("key"),
        replicas=replicas,
        storage="memory" if storage == "memory" else "file",
        dedup_window=_seconds(
            description, "dedup_window", options.get("dedup_window", str(DEFAULT_DEDUP_WINDOW))
        ),
        ack_wait=_seconds(description, "ack_wait", options.get("ack_wait", str(DEFAULT_ACK_WAIT))),
        timeout=_seconds(description, "timeout", options.get("timeout", str(DEFAULT_TIMEOUT))),
        description=description,
    )
