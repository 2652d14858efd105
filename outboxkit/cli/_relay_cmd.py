"""``outboxkit relay``: run the relay daemon (or drain once with ``--once``)."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import structlog
import typer

from brokers import StreamLayout
from outbox import BrokerError, OutboxConfig
from relay import MetricsServer, Relay, RelayConfig, RelayMetrics
from relay._config import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEASE_TTL,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_ON_DEAD_LETTER,
    DEFAULT_PARTITIONS,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_REPLAY_WINDOW,
    DEFAULT_RETRY_BASE,
    DEFAULT_RETRY_MAX,
)

from ._context import BROKER_URL_ENV, DATABASE_URL_ENV
from ._options import BrokerOpt, DbOpt, SchemaOpt, TableOpt, parse_topic_partitions, require
from ._status_cmd import broker_reachable

log = structlog.get_logger(__name__)

_UNHEALTHY_AFTER_S = 60.0


def _opt(flag: str, help_text: str) -> typer.models.OptionInfo:
    env = "OUTBOXKIT_" + flag.lstrip("-").replace("-", "_").upper()
    return typer.Option(flag, envvar=env, help=help_text)  # type: ignore[no-any-return]


def relay(
    db: DbOpt = None,
    broker: BrokerOpt = None,
    table: TableOpt = "outbox",
    schema: SchemaOpt = None,
    batch_size: Annotated[
        int, _opt("--batch-size", "Rows per claim and broker round trip.")
    ] = DEFAULT_BATCH_SIZE,
    max_batch_mib: Annotated[
        float, _opt("--max-batch-mib", "Payload MiB per batch; batches shrink while rows are large.")
    ] = 16.0,
    poll_interval: Annotated[
        float, _opt("--poll-interval", "Seconds between polls when idle (NOTIFY wakes earlier).")
    ] = DEFAULT_POLL_INTERVAL.total_seconds(),
    partitions: Annotated[
        int, _opt("--partitions", "Relay partitions of the key space (fixed by the first relay).")
    ] = DEFAULT_PARTITIONS,
    lease_ttl: Annotated[
        float, _opt("--lease-ttl", "Seconds after which a silent relay's partitions are taken over.")
    ] = DEFAULT_LEASE_TTL.total_seconds(),
    max_attempts: Annotated[
        int, _opt("--max-attempts", "Broker rejections before a message becomes a dead letter.")
    ] = DEFAULT_MAX_ATTEMPTS,
    retry_base: Annotated[
        float, _opt("--retry-base", "First retry delay of a rejected message, seconds.")
    ] = DEFAULT_RETRY_BASE.total_seconds(),
    retry_max: Annotated[
        float, _opt("--retry-max", "Longest retry delay of a rejected message, seconds.")
    ] = DEFAULT_RETRY_MAX.total_seconds(),
    replay_window: Annotated[
        float,
        _opt(
            "--replay-window",
            "Seconds published rows are kept to re-publish after broker data loss; 0 deletes.",
        ),
    ] = DEFAULT_REPLAY_WINDOW.total_seconds(),
    stream_prefix: Annotated[str, _opt("--stream-prefix", "Prefix of every stream name.")] = "",
    topic_partitions: Annotated[
        str, _opt("--topic-partitions", "Streams per topic, e.g. orders=4,payments=2.")
    ] = "",
    default_partitions: Annotated[int, _opt("--default-partitions", "Streams of any other topic.")] = 1,
    stream_maxlen: Annotated[
        int | None,
        _opt("--stream-maxlen", "Max length of every stream, Redis or SQL table (trims unread entries!)."),
    ] = None,
    no_listen: Annotated[bool, _opt("--no-listen", "Poll only, no LISTEN/NOTIFY.")] = False,
    metrics_port: Annotated[
        int | None, _opt("--metrics-port", "Serve /metrics and /healthz on this port.")
    ] = None,
    metrics_host: Annotated[
        str, _opt("--metrics-host", "Address of the metrics server (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    relay_id: Annotated[
        str | None, _opt("--relay-id", "Name of this relay (default host-pid-random).")
    ] = None,
    once: Annotated[bool, _opt("--once", "Drain what is due, then exit.")] = False,
    on_dead_letter: Annotated[
        str,
        _opt(
            "--on-dead-letter",
            "park-key: later rows of a dead-lettered key wait for `dead-letters retry|purge`"
            " (keeps per-key order); skip: they go on.",
        ),
    ] = DEFAULT_ON_DEAD_LETTER,
) -> None:
    """Relay committed outbox rows to the broker until SIGTERM/SIGINT (or, with --once, until drained)."""
    config = RelayConfig(
        database_url=require(db, "--db", DATABASE_URL_ENV),
        broker_url=require(broker, "--broker", BROKER_URL_ENV),
        outbox=OutboxConfig(table=table, schema=schema),
        layout=StreamLayout(
            prefix=stream_prefix,
            partitions=parse_topic_partitions(topic_partitions),
            default_partitions=default_partitions,
        ),
        batch_size=batch_size,
        max_batch_bytes=int(max_batch_mib * 1024 * 1024),
        poll_interval=dt.timedelta(seconds=poll_interval),
        partitions=partitions,
        lease_ttl=dt.timedelta(seconds=lease_ttl),
        max_attempts=max_attempts,
        retry_base=dt.timedelta(seconds=retry_base),
        retry_max=dt.timedelta(seconds=retry_max),
        replay_window=dt.timedelta(seconds=replay_window),
        max_len=stream_maxlen,
        listen=not no_listen,
        relay_id=relay_id,
        once=once,
        on_dead_letter=on_dead_letter,
    )
    metrics = RelayMetrics() if metrics_port is not None else None
    daemon = Relay(config, metrics=metrics)  # validates the database URL and schema first
    if once:  # an empty outbox never touches the broker: a dead one must not pass for "drained"
        reachable, reason = broker_reachable(config.broker_url)
        if not reachable:
            daemon.close()
            msg = f"broker unavailable ({reason}): nothing relayed"
            raise BrokerError(msg)
    server = None
    if metrics is not None and metrics_port is not None:
        server = MetricsServer(
            metrics, lambda: daemon.healthy(_UNHEALTHY_AFTER_S), host=metrics_host, port=metrics_port
        )
        server.start()
        log.info("relay.metrics_serving", port=server.port)
    try:
        with _stop_on_signals(daemon):
            daemon.run()
    finally:
        if server is not None:
            server.close()


@contextmanager
def _stop_on_signals(daemon: Relay) -> Iterator[None]:
    """First SIGTERM/SIGINT: stop after the batch in hand; a second one: default action."""
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        daemon.stop()
        signal.signal(signum, signal.SIG_DFL)

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
