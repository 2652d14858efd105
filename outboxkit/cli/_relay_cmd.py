"""``outboxkit relay``: run the relay daemon (or drain once with ``--once``)."""

from __future__ import annotations

import datetime as dt
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Annotated, Any

import structlog
import typer

from brokers import StreamLayout, needs_hash_tags
from outbox import BrokerError, OutboxConfig
from relay import MetricsServer, Relay, RelayConfig, RelayMetrics

from ._context import BROKER_URL_ENV, DATABASE_URL_ENV
from ._options import (
    DEFAULT_PARTITIONS_PER_TOPIC,
    DEFAULT_STREAM_PREFIX,
    DEFAULT_TABLE,
    LOOPBACK,
    BrokerOpt,
    DbOpt,
    DefaultPartitionsOpt,
    OnceOpt,
    SchemaOpt,
    StreamPrefixOpt,
    TableOpt,
    TopicPartitionsOpt,
    command_option,
    config_default,
    parse_topic_partitions,
    require,
)
from ._status_cmd import broker_reachable

log = structlog.get_logger(__name__)

_UNHEALTHY_AFTER_S = 60.0
_MIB = 1024 * 1024


def _opt(flag: str, help_text: str) -> typer.models.OptionInfo:
    return command_option("relay", flag, help_text)  # type: ignore[no-any-return]


def _default(name: str) -> Any:  # noqa: ANN401 - a RelayConfig field of any type
    return config_default(RelayConfig, name)


def relay(
    db: DbOpt = None,
    broker: BrokerOpt = None,
    table: TableOpt = DEFAULT_TABLE,
    schema: SchemaOpt = None,
    batch_size: Annotated[int, _opt("--batch-size", "Rows per claim and broker round trip.")] = _default(
        "batch_size"
    ),
    max_batch_mib: Annotated[
        float, _opt("--max-batch-mib", "Payload MiB per batch; batches shrink while rows are large.")
    ] = _default("max_batch_bytes") / _MIB,
    poll_interval: Annotated[
        float, _opt("--poll-interval", "Seconds between polls when idle (NOTIFY wakes earlier).")
    ] = _default("poll_interval"),
    partitions: Annotated[
        int, _opt("--partitions", "Relay partitions of the key space (fixed by the first relay).")
    ] = _default("partitions"),
    lease_ttl: Annotated[
        float, _opt("--lease-ttl", "Seconds after which a silent relay's partitions are taken over.")
    ] = _default("lease_ttl"),
    max_attempts: Annotated[
        int, _opt("--max-attempts", "Broker rejections before a message becomes a dead letter.")
    ] = _default("max_attempts"),
    retry_base: Annotated[
        float, _opt("--retry-base", "First retry delay of a rejected message, seconds.")
    ] = _default("retry_base"),
    retry_max: Annotated[
        float, _opt("--retry-max", "Longest retry delay of a rejected message, seconds.")
    ] = _default("retry_max"),
    replay_window: Annotated[
        float,
        _opt(
            "--replay-window",
            "Seconds published rows are kept to re-publish after broker data loss; 0 deletes.",
        ),
    ] = _default("replay_window"),
    stream_prefix: StreamPrefixOpt = DEFAULT_STREAM_PREFIX,
    topic_partitions: TopicPartitionsOpt = "",
    default_partitions: DefaultPartitionsOpt = DEFAULT_PARTITIONS_PER_TOPIC,
    stream_maxlen: Annotated[
        int | None,
        _opt("--stream-maxlen", "Max length of every stream, Redis or SQL table (trims unread entries!)."),
    ] = _default("max_len"),
    broker_durability: Annotated[
        str | None,
        _opt(
            "--broker-durability",
            "Redis brokers: none, replicas=N (WAIT: mark rows sent once N replicas have them) or aof"
            " (WAITAOF, Redis >= 7.2); overrides the URL's ?durability=.",
        ),
    ] = None,
    no_listen: Annotated[bool, _opt("--no-listen", "Poll only, no LISTEN/NOTIFY.")] = False,
    metrics_port: Annotated[
        int | None, _opt("--metrics-port", "Serve /metrics, /healthz and /readyz on this port.")
    ] = None,
    metrics_host: Annotated[
        str, _opt("--metrics-host", "Address of the metrics server (0.0.0.0 for every interface).")
    ] = LOOPBACK,
    relay_id: Annotated[
        str | None,
        command_option("relay", "--relay-id", "Name of this relay (default host-pid-random).", env_name="id"),
    ] = _default("relay_id"),
    once: OnceOpt = False,
    on_dead_letter: Annotated[
        str,
        _opt(
            "--on-dead-letter",
            "park-key: later rows of a dead-lettered key wait for `dead-letters retry|purge`"
            " (keeps per-key order); skip: they go on.",
        ),
    ] = _default("on_dead_letter"),
) -> None:
    """Relay committed outbox rows to the broker until SIGTERM/SIGINT (or, with --once, until drained)."""
    broker_url = require(broker, "--broker", BROKER_URL_ENV)
    config = RelayConfig(
        database_url=require(db, "--db", DATABASE_URL_ENV),
        broker_url=broker_url,
        outbox=OutboxConfig(table=table, schema=schema),
        layout=StreamLayout(
            prefix=stream_prefix,
            partitions=parse_topic_partitions(topic_partitions),
            default_partitions=default_partitions,
            hash_tags=needs_hash_tags(broker_url),
        ),
        batch_size=batch_size,
        max_batch_bytes=int(max_batch_mib * _MIB),
        poll_interval=dt.timedelta(seconds=poll_interval),
        partitions=partitions,
        lease_ttl=dt.timedelta(seconds=lease_ttl),
        max_attempts=max_attempts,
        retry_base=dt.timedelta(seconds=retry_base),
        retry_max=dt.timedelta(seconds=retry_max),
        replay_window=dt.timedelta(seconds=replay_window),
        max_len=stream_maxlen,
        broker_durability=broker_durability,
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
            metrics,
            lambda: daemon.healthy(_UNHEALTHY_AFTER_S),
            ready=lambda: daemon.ready(_UNHEALTHY_AFTER_S),
            host=metrics_host,
            port=metrics_port,
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
