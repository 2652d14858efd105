"""``kafka://`` URLs parsed into one typed configuration shared by both halves.

==============================================================  ==============================
URL                                                             connection
==============================================================  ==============================
``kafka://host1:9092,host2:9092``                               plaintext
``kafka://user:pw@host:9092``                                   SASL over plaintext
``kafka+ssl://host:9093?ssl_ca=/etc/ca.pem``                    TLS
``kafka+ssl://user:pw@host:9093?sasl_mechanism=SCRAM-SHA-512``  SASL over TLS
==============================================================  ==============================

Query options: ``sasl_mechanism`` (``PLAIN``, ``SCRAM-SHA-256``,
``SCRAM-SHA-512``; default ``SCRAM-SHA-512`` because PLAIN sends the password
itself), ``ssl_ca``, ``ssl_cert``, ``ssl_key`` (PEM file paths),
``partitioner`` (``consistent_random``, the librdkafka default, CRC-32 of the
key; ``murmur2_random``, what Java clients use; ``outbox``, the outbox layout's
own partition), ``transactional`` (``true``/``false``), ``client_id``.

A second scheme instead of ``?tls=true``: the scheme alone then says whether
the connection is encrypted, as ``redis://`` / ``rediss://`` do.
User name and password are percent-decoded; the password is kept out of
``repr``, :attr:`KafkaConfig.description` and every error.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from outbox.errors import ConfigError

from ._errors import ClientLog

__all__ = ["KafkaConfig", "Partitioner", "parse_kafka_url"]

SCHEMES = frozenset({"kafka", "kafka+ssl"})
SASL_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
DEFAULT_SASL_MECHANISM = "SCRAM-SHA-512"
DEFAULT_PORT = 9092
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?")
_OPTIONS = frozenset(
    {"sasl_mechanism", "ssl_ca", "ssl_cert", "ssl_key", "partitioner", "transactional", "client_id"}
)
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


class Partitioner(enum.Enum):
    """How the publisher picks a record's Kafka partition."""

    CONSISTENT_RANDOM = "consistent_random"  # librdkafka's default: CRC-32 of the key
    MURMUR2_RANDOM = "murmur2_random"  # the Java client's default: same partitions as Java producers
    OUTBOX = "outbox"  # the outbox layout's partition (``<topic>:<p>`` -> partition p)


@dataclass(frozen=True, kw_only=True, slots=True)
class KafkaConfig:
    """A parsed ``kafka://`` URL.

    .. versionadded:: 0.2
    """

    bootstrap_servers: tuple[str, ...]
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sasl_mechanism: str = DEFAULT_SASL_MECHANISM
    ssl_ca: str | None = None
    ssl_cert: str | None = None
    ssl_key: str | None = None
    partitioner: Partitioner = Partitioner.CONSISTENT_RANDOM
    transactional: bool = False
    client_id: str = "outboxkit"

    @property
    def description(self) -> str:
        """The URL as a user wrote it, the password replaced by ``***``."""
        scheme = "kafka+ssl" if self.tls else "kafka"
        auth = f"{self.username}:***@" if self.username is not None else ""
        return f"{scheme}://{auth}{','.join(self.bootstrap_servers)}"

    def client_settings(self) -> dict[str, str | int | bool | object]:
        """The librdkafka settings common to producers, consumers and admin clients."""
        protocol = ("SASL_SSL" if self.tls else "SASL_PLAINTEXT") if self.username else None
        settings: dict[str, str | int | bool | object] = {
            "bootstrap.servers": ",".join(self.bootstrap_servers),
            "logger": ClientLog(),  # librdkafka's lines as debug events, never on stderr
            "client.id": self.client_id,
            "security.protocol": protocol or ("SSL" if self.tls else "PLAINTEXT"),
        }
        if self.username is not None:
            settings["sasl.mechanism"] = self.sasl_mechanism
            settings["sasl.username"] = self.username
            settings["sasl.password"] = self.password or ""
        files = {"ssl.ca.location": self.ssl_ca, "ssl.certificate.location": self.ssl_cert,
                 "ssl.key.location": self.ssl_key}  # fmt: skip
        settings.update({key: value for key, value in files.items() if value is not None})
        return settings


def parse_kafka_url(url: str) -> KafkaConfig:
    """Parse ``kafka://[user:pw@]host[:port][,host[:port]...][?options]``.

    Raises:
        ConfigError: the URL is malformed; the message never contains the password.
    """
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"not a Kafka URL: use kafka://host:9092 or kafka+ssl://host:9093 ({scheme}://)")
    rest, _, query = rest.partition("?")
    rest = rest.split("#", 1)[0].rstrip("/")
    userinfo, at, hosts = rest.rpartition("@")
    username = password = None
    if at:
        user_text, colon, pw_text = userinfo.partition(":")
        username = unquote(user_text)
        password = unquote(pw_text) if colon else None
        if not username:
            raise ConfigError("Kafka URL has a password but no user name: kafka://user:password@host:9092")
    servers = _bootstrap_servers(hosts, scheme)
    options = _options(query, scheme)
    if options.get("sasl_mechanism") is not None and username is None:
        raise ConfigError("Kafka URL sets sasl_mechanism but has no user: kafka://user:password@host:9092")
    return KafkaConfig(
        bootstrap_servers=servers,
        tls=scheme == "kafka+ssl",
        username=username,
        password=password,
        sasl_mechanism=_sasl_mechanism(options.get("sasl_mechanism")),
        ssl_ca=options.get("ssl_ca"),
        ssl_cert=options.get("ssl_cert"),
        ssl_key=options.get("ssl_key"),
        partitioner=_partitioner(options.get("partitioner")),
        transactional=_boolean("transactional", options.get("transactional", "false")),
        client_id=_client_id(options.get("client_id", "outboxkit")),
    )


def _bootstrap_servers(hosts: str, scheme: str) -> tuple[str, ...]:
    if not hosts:
        raise ConfigError(f"Kafka URL names no broker: {scheme}://host:9092[,host2:9092]")
    servers = []
    for host in hosts.split(","):
        match = _HOST.fullmatch(host)
        if match is None or (match.group(1) is not None and not 0 < int(match.group(1)) < 65536):  # noqa: PLR2004
            raise ConfigError(f"Kafka URL has an invalid broker address {host!r}: use host:port")
        servers.append(host if match.group(1) is not None else f"{host}:{DEFAULT_PORT}")
    return tuple(servers)


def _options(query: str, scheme: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in _OPTIONS:
            known = ", ".join(sorted(_OPTIONS))
            raise ConfigError(f"unknown Kafka URL option {name!r}: use one of {known}")
        options[name] = value
    tls_files = [name for name in ("ssl_ca", "ssl_cert", "ssl_key") if name in options]
    if tls_files and scheme != "kafka+ssl":
        raise ConfigError(f"{tls_files[0]} needs a TLS connection: use kafka+ssl://")
    return options


def _sasl_mechanism(value: str | None) -> str:
    if value is None:
        return DEFAULT_SASL_MECHANISM
    mechanism = value.upper()
    if mechanism not in SASL_MECHANISMS:
        raise ConfigError(f"unsupported sasl_mechanism {value!r}: use {', '.join(sorted(SASL_MECHANISMS))}")
    return mechanism


def _partitioner(value: str | None) -> Partitioner:
    if value is None:
        return Partitioner.CONSISTENT_RANDOM
    try:
        return Partitioner(value)
    except ValueError:
        names = ", ".join(p.value for p in Partitioner)
        raise ConfigError(f"unknown partitioner {value!r}: use {names}") from None


def _boolean(name: str, value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise ConfigError(f"Kafka URL option {name} must be true or false, got {value!r}") from None


def _client_id(value: str) -> str:
    if not _CLIENT_ID.fullmatch(value):
        raise ConfigError(f"client_id {value!r} must be 1-100 of A-Z a-z 0-9 . _ -")
    return value
