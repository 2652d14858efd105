"""The durability setting of every Redis broker: when a published batch counts as safe.

==================  ===========================================================
setting             the relay marks rows sent once ...
==================  ===========================================================
``none``            the master appended them (a failover to a replica that had
                    not received them yet loses them, silently)
``replicas=N``      ``WAIT N timeout``: N replicas have them, so a failover to
                    one of those replicas loses nothing
``aof``             ``WAITAOF 1 0 timeout`` (Redis >= 7.2): the master wrote them
                    to its append-only file (``appendfsync`` decides the fsync)
==================  ===========================================================

A wait that times out, or acknowledges fewer replicas than asked, fails the
batch like an outage: the rows are not marked, the relay backs off and
publishes them again. The entries the master already has become duplicates,
which the consumers' inbox absorbs; order per key holds because the later
copies come after the first ones in the same stream.

The setting is the ``durability`` query option of the broker URL
(``redis://h/0?durability=replicas=1&durability_timeout=2``) or
``--broker-durability`` / ``RelayConfig.broker_durability``, which wins.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from outbox.errors import ConfigError

__all__ = ["DEFAULT_DURABILITY_TIMEOUT", "Durability", "split_durability"]

DEFAULT_DURABILITY_TIMEOUT = dt.timedelta(seconds=2)
MAX_REPLICAS = 16
_REPLICAS = re.compile(r"replicas=(\d{1,2})")


@dataclass(frozen=True, kw_only=True, slots=True)
class Durability:
    """``none``, ``replicas=N`` or ``aof``, and how long to wait for it.

    .. versionadded:: 0.3
    """

    replicas: int = 0
    aof: bool = False
    timeout: dt.timedelta = DEFAULT_DURABILITY_TIMEOUT

    def __post_init__(self) -> None:
        if not 0 <= self.replicas <= MAX_REPLICAS:
            msg = f"broker durability replicas must be 0..{MAX_REPLICAS}, got {self.replicas}"
            raise ConfigError(msg)
        if self.timeout <= dt.timedelta(0):
            msg = "broker durability timeout must be positive"
            raise ConfigError(msg)

    @classmethod
    def parse(cls, text: str, *, timeout: dt.timedelta = DEFAULT_DURABILITY_TIMEOUT) -> Durability:
        """``none`` | ``replicas=N`` | ``aof``.

        Raises:
            ConfigError: any other text.
        """
        value = text.strip().lower()
        if value == "none":
            return cls(timeout=timeout)
        if value == "aof":
            return cls(aof=True, timeout=timeout)
        if match := _REPLICAS.fullmatch(value):
            return cls(replicas=int(match.group(1)), timeout=timeout)
        msg = f"unknown broker durability {text!r}: use none, replicas=N or aof"
        raise ConfigError(msg)

    @property
    def waits(self) -> bool:
        """Something to wait for after each publish."""
        return self.aof or self.replicas > 0

    @property
    def name(self) -> str:
        """The setting as written: ``none``, ``replicas=N`` or ``aof``."""
        return "aof" if self.aof else (f"replicas={self.replicas}" if self.replicas else "none")

    def command(self) -> tuple[str | int, ...]:
        """The wait command to send after the publish script (``WAIT`` or ``WAITAOF``)."""
        millis = max(int(self.timeout.total_seconds() * 1000), 1)
        if self.aof:
            return ("WAITAOF", 1, self.replicas, millis)
        return ("WAIT", self.replicas, millis)

    def shortfall(self, reply: object) -> str | None:
        """Why the wait's reply falls short of the setting, or None when it does not."""
        if self.aof:
            local, replicas = (int(v) for v in reply) if isinstance(reply, list | tuple) else (0, 0)
            if local < 1 or replicas < self.replicas:
                return f"durability {self.name}: the append-only file was not written within {self._t()}"
            return None
        acknowledged = int(reply) if isinstance(reply, int | str | bytes) else 0
        if acknowledged < self.replicas:
            return (
                f"durability {self.name}: {acknowledged} of {self.replicas} replicas acknowledged"
                f" within {self._t()}"
            )
        return None

    def unsupported(self, error: str) -> ConfigError | None:
        """The configuration error for a server that does not know the wait command, if it is that."""
        if self.aof and "unknown command" in error.lower():
            msg = (
                "--broker-durability aof needs Redis >= 7.2 (WAITAOF); this server does not have it:"
                " use replicas=N, or appendfsync always on the server"
            )
            return ConfigError(msg)
        return None

    def _t(self) -> str:
        return f"{self.timeout.total_seconds():g}s"


def split_durability(url: str, override: str | None = None) -> tuple[str, Durability]:
    """Take ``durability`` and ``durability_timeout`` out of ``url``'s query; ``override`` wins.

    redis-py passes unknown query options to the connection and fails, so they
    are removed before the URL reaches it.

    Raises:
        ConfigError: a malformed setting or timeout.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k not in {"durability", "durability_timeout"}]
    given = dict(query)
    timeout = DEFAULT_DURABILITY_TIMEOUT
    if "durability_timeout" in given:
        try:
            timeout = dt.timedelta(seconds=float(given["durability_timeout"]))
        except ValueError:
            msg = f"durability_timeout must be a number of seconds, got {given['durability_timeout']!r}"
            raise ConfigError(msg) from None
    durability = Durability.parse(override or given.get("durability", "none"), timeout=timeout)
    if len(kept) == len(query):
        return url, durability
    return urlunsplit(parts._replace(query=urlencode(kept))), durability
