"""``outboxkit consume``: run a registry's handlers as a consumer service."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import structlog
import typer

from brokers import StreamLayout, connect_subscriber
from brokers.redis_streams import DEFAULT_SOCKET_TIMEOUT
from inbox import ConsumerConfig, ConsumerRunner, Mode, Registry, default_consumer_name
from outbox import ConfigError, redact_url

from ._context import BROKER_URL_ENV, DATABASE_URL_ENV
from ._options import SchemaOpt, parse_topic_partitions

log = structlog.get_logger(__name__)


def load_registry(target: str) -> Registry:
    """Import ``package.module:attribute`` and return the :class:`~inbox.Registry` it names."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        msg = f"registry {target!r} must look like package.module:registry"
        raise ConfigError(msg)
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # like `python -m`: modules next to the user are importable
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        msg = (
            f"cannot import {module_name!r}: {exc}; modules are looked up in the working directory"
            f" ({cwd}) and on PYTHONPATH: run from the project root or set PYTHONPATH"
        )
        raise ConfigError(msg) from exc
    except ImportError as exc:
        msg = f"cannot import {module_name!r}: {exc}"
        raise ConfigError(msg) from exc
    if not hasattr(module, attribute):
        found = sorted(name for name, value in vars(module).items() if isinstance(value, Registry))
        have = ", ".join(f"{module_name}:{name}" for name in found) or "none"
        msg = f"module {module_name!r} has no attribute {attribute!r} (registries in it: {have})"
        raise ConfigError(msg)
    registry = getattr(module, attribute)
    if not isinstance(registry, Registry):
        msg = f"{target!r} is not an inbox.Registry (got {type(registry).__name__})"
        raise ConfigError(msg)
    return registry


def _seconds(name: str, value: float) -> dt.timedelta:
    if value <= 0:
        msg = f"{name} must be positive, got {value:g}"
        raise ConfigError(msg)
    return dt.timedelta(seconds=value)


def _serve_metrics(port: int | None, host: str) -> None:
    if port is None:
        return
    from prometheus_client import start_http_server  # noqa: PLC0415 - only with --metrics-port

    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        msg = f"cannot serve metrics on {host}:{port}: {exc.strerror}"
        raise ConfigError(msg) from exc


async def _run(runner: ConsumerRunner, *, once: bool) -> None:
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, runner.stop)
    try:
        await runner.run(once=once)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await runner.aclose()


def consume(
    target: Annotated[str, typer.Argument(help="The handlers: package.module:registry (an inbox.Registry).")],
    db: Annotated[
        str | None,
        typer.Option("--db", envvar=DATABASE_URL_ENV, help="Database URL of the handlers (inbox)."),
    ] = None,
    schema: SchemaOpt = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            envvar=BROKER_URL_ENV,
            help="Broker URL: redis://... for Redis Streams, or a database URL for the SQL-table broker.",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group", envvar="OUTBOXKIT_GROUP", help="Consumer group; also the inbox consumer name."
        ),
    ] = None,
    consumer_name: Annotated[
        str | None,
        typer.Option("--consumer-name", envvar="OUTBOXKIT_CONSUMER_NAME", help="This process in the group."),
    ] = None,
    stream_prefix: Annotated[
        str, typer.Option("--stream-prefix", envvar="OUTBOXKIT_STREAM_PREFIX", help="Prefix of stream names.")
    ] = "",
    topic_partitions: Annotated[
        str,
        typer.Option(
            "--topic-partitions",
            envvar="OUTBOXKIT_TOPIC_PARTITIONS",
            help="Streams per topic, e.g. orders=4,payments=2 (the same as the relay's).",
        ),
    ] = "",
    default_partitions: Annotated[
        int,
        typer.Option(
            "--default-partitions", envvar="OUTBOXKIT_DEFAULT_PARTITIONS", help="Partitions of other topics."
        ),
    ] = 1,
    mode: Annotated[
        Mode, typer.Option("--mode", envvar="OUTBOXKIT_CONSUME_MODE", help="message (default) or batch.")
    ] = Mode.MESSAGE,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", envvar="OUTBOXKIT_BATCH_SIZE", help="Entries read at once per partition."
        ),
    ] = 100,
    max_deliveries: Annotated[
        int,
        typer.Option(
            "--max-deliveries", envvar="OUTBOXKIT_MAX_DELIVERIES", help="Deliveries before dead-lettering."
        ),
    ] = 5,
    claim_idle: Annotated[
        float,
        typer.Option(
            "--claim-idle",
            envvar="OUTBOXKIT_CLAIM_IDLE",
            help="Seconds before idle pending entries are claimed.",
        ),
    ] = 60.0,
    lease_ttl: Annotated[
        float,
        typer.Option("--lease-ttl", envvar="OUTBOXKIT_LEASE_TTL", help="Seconds a partition lease lasts."),
    ] = 15.0,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            envvar="OUTBOXKIT_CONCURRENCY",
            help="Batches handled at once; every partition is still read.",
        ),
    ] = 8,
    block: Annotated[
        float, typer.Option("--block", envvar="OUTBOXKIT_BLOCK", help="Seconds a read waits for new entries.")
    ] = 2.0,
    retry_delay: Annotated[
        float,
        typer.Option("--retry-delay", envvar="OUTBOXKIT_RETRY_DELAY", help="First retry delay in seconds."),
    ] = 0.2,
    retention: Annotated[
        float,
        typer.Option(
            "--retention",
            envvar="OUTBOXKIT_INBOX_RETENTION",
            help="Seconds inbox records are kept; 0 keeps them.",
        ),
    ] = 7 * 86400.0,
    shutdown_timeout: Annotated[
        float,
        typer.Option(
            "--shutdown-timeout", envvar="OUTBOXKIT_SHUTDOWN_TIMEOUT", help="Seconds to drain on SIGTERM."
        ),
    ] = 30.0,
    socket_timeout: Annotated[
        float,
        typer.Option("--socket-timeout", envvar="OUTBOXKIT_SOCKET_TIMEOUT", help="Broker socket timeout."),
    ] = DEFAULT_SOCKET_TIMEOUT.total_seconds(),
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port", envvar="OUTBOXKIT_METRICS_PORT", help="Serve Prometheus metrics on this port."
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host", envvar="OUTBOXKIT_METRICS_HOST", help="Address of the metrics server."
        ),
    ] = "127.0.0.1",
    once: Annotated[
        bool, typer.Option("--once", envvar="OUTBOXKIT_ONCE", help="Drain every stream, then exit.")
    ] = False,
    on_dead_letter: Annotated[
        str,
        typer.Option(
            "--on-dead-letter",
            envvar="OUTBOXKIT_ON_DEAD_LETTER",
            help="park-key: later messages of a dead-lettered key wait for"
            " `consumer-dead-letters retry|purge` (keeps per-key order); skip: they go on.",
        ),
    ] = "park-key",
) -> None:
    """Run idempotent handlers on a consumer group; SIGTERM drains and stops."""
    if not db:
        msg = f"no database URL: pass --db or set {DATABASE_URL_ENV}"
        raise ConfigError(msg)
    if not broker:
        msg = f"no broker URL: pass --broker or set {BROKER_URL_ENV}"
        raise ConfigError(msg)
    if not group:
        msg = "no consumer group: pass --group or set OUTBOXKIT_GROUP"
        raise ConfigError(msg)
    registry = load_registry(target)
    config = ConsumerConfig(
        group=group,
        consumer_name=consumer_name or default_consumer_name(),
        layout=StreamLayout(
            prefix=stream_prefix,
            partitions=parse_topic_partitions(topic_partitions),
            default_partitions=default_partitions,
        ),
        mode=mode,
        batch_size=batch_size,
        block=_seconds("--block", block),
        max_deliveries=max_deliveries,
        retry_delay=_seconds("--retry-delay", retry_delay),
        claim_idle=_seconds("--claim-idle", claim_idle),
        lease_ttl=_seconds("--lease-ttl", lease_ttl),
        concurrency=concurrency,
        retention=None if retention == 0 else _seconds("--retention", retention),
        shutdown_timeout=dt.timedelta(seconds=max(shutdown_timeout, 0)),
        on_dead_letter=on_dead_letter,
        schema=schema,
    )
    subscriber = connect_subscriber(
        broker, socket_timeout=_seconds("--socket-timeout", socket_timeout), schema=schema
    )
    runner = ConsumerRunner(registry, db=db, subscriber=subscriber, config=config)
    _serve_metrics(metrics_port, metrics_host)
    log.info("consume.starting", db=redact_url(db), broker=redact_url(broker), group=group, target=target)
    asyncio.run(_run(runner, once=once))
