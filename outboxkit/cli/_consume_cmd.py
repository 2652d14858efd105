"""``outboxkit consume``: run a registry's handlers as a consumer service."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError

import saga
from brokers import StreamLayout, connect_subscriber, needs_hash_tags
from brokers.redis_streams import DEFAULT_SOCKET_TIMEOUT
from inbox import ConsumerConfig, ConsumerRunner, DeadLetterGauges, Mode, Registry, default_consumer_name
from outbox import ConfigError, redact_url
from relay import MetricsServer

from ._context import BROKER_URL_ENV, DATABASE_URL_ENV
from ._options import (
    DEFAULT_PARTITIONS_PER_TOPIC,
    DEFAULT_STREAM_PREFIX,
    LOOPBACK,
    BrokerOpt,
    DbOpt,
    DefaultPartitionsOpt,
    GroupOpt,
    OnceOpt,
    SchemaOpt,
    StreamPrefixOpt,
    TopicPartitionsOpt,
    command_option,
    config_default,
    parse_topic_partitions,
)

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


def _serve_metrics(
    runner: ConsumerRunner, port: int | None, host: str, stuck_after: float
) -> MetricsServer | None:
    """Serve /metrics, /healthz and /readyz; add the gauges read from the database (#13)."""
    if port is None:
        return None
    from prometheus_client import REGISTRY  # noqa: PLC0415 - only with --metrics-port

    REGISTRY.register(DeadLetterGauges(runner.engine, consumer=runner.config.group))
    if _has_saga_table(runner):  # an orchestrator's database: its sagas are this daemon's to watch
        REGISTRY.register(
            saga.SagaGauges(runner.engine, stuck_after=_seconds("--saga-stuck-after", stuck_after))
        )
    server = MetricsServer(
        REGISTRY, runner.health.healthy, ready=runner.health.ready, host=host, port=port, daemon="consumer"
    )
    server.start()
    log.info("consume.metrics_serving", port=server.port)
    return server


def _has_saga_table(runner: ConsumerRunner) -> bool:
    try:
        with runner.engine.connect() as conn:
            return inspect(conn).has_table(saga.tables.saga_instance.name, schema=runner.config.schema)
    except SQLAlchemyError:
        return False  # the runner reports an unreachable database itself, in one line


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


def _opt(flag: str, help_text: str) -> typer.models.OptionInfo:
    return command_option("consume", flag, help_text)  # type: ignore[no-any-return]


def _default(name: str) -> Any:  # noqa: ANN401 - a ConsumerConfig field of any type
    return config_default(ConsumerConfig, name)


_DEFAULT_MODE: Mode = _default("mode")


def consume(
    target: Annotated[str, typer.Argument(help="The handlers: package.module:registry (an inbox.Registry).")],
    db: DbOpt = None,
    schema: SchemaOpt = None,
    broker: BrokerOpt = None,
    group: GroupOpt = None,
    consumer_name: Annotated[
        str | None, _opt("--consumer-name", "This process in the group (default host-pid-random).")
    ] = None,
    stream_prefix: StreamPrefixOpt = DEFAULT_STREAM_PREFIX,
    topic_partitions: TopicPartitionsOpt = "",
    default_partitions: DefaultPartitionsOpt = DEFAULT_PARTITIONS_PER_TOPIC,
    mode: Annotated[Mode, _opt("--mode", "message (default) or batch.")] = _DEFAULT_MODE,
    batch_size: Annotated[int, _opt("--batch-size", "Entries read at once per partition.")] = _default(
        "batch_size"
    ),
    max_deliveries: Annotated[int, _opt("--max-deliveries", "Deliveries before dead-lettering.")] = _default(
        "max_deliveries"
    ),
    claim_idle: Annotated[
        float, _opt("--claim-idle", "Seconds before idle pending entries are claimed.")
    ] = _default("claim_idle"),
    lease_ttl: Annotated[float, _opt("--lease-ttl", "Seconds a partition lease lasts.")] = _default(
        "lease_ttl"
    ),
    concurrency: Annotated[
        int, _opt("--concurrency", "Batches handled at once; every partition is still read.")
    ] = _default("concurrency"),
    block: Annotated[float, _opt("--block", "Seconds a read waits for new entries.")] = _default("block"),
    retry_delay: Annotated[float, _opt("--retry-delay", "First retry delay in seconds.")] = _default(
        "retry_delay"
    ),
    retention: Annotated[
        float, _opt("--retention", "Seconds inbox records are kept; 0 keeps them.")
    ] = _default("retention"),
    shutdown_timeout: Annotated[float, _opt("--shutdown-timeout", "Seconds to drain on SIGTERM.")] = _default(
        "shutdown_timeout"
    ),
    socket_timeout: Annotated[
        float, _opt("--socket-timeout", "Broker socket timeout in seconds (Redis).")
    ] = DEFAULT_SOCKET_TIMEOUT.total_seconds(),
    metrics_port: Annotated[
        int | None, _opt("--metrics-port", "Serve /metrics, /healthz and /readyz on this port.")
    ] = None,
    metrics_host: Annotated[
        str, _opt("--metrics-host", "Address of the metrics server (0.0.0.0 for every interface).")
    ] = LOOPBACK,
    saga_stuck_after: Annotated[
        float,
        _opt(
            "--saga-stuck-after",
            "Seconds without a transition after which an open saga counts as stuck (metrics).",
        ),
    ] = saga.DEFAULT_STUCK_AFTER.total_seconds(),
    once: OnceOpt = False,
    on_dead_letter: Annotated[
        str,
        _opt(
            "--on-dead-letter",
            "park-key: later messages of a dead-lettered key wait for"
            " `consumer-dead-letters retry|purge` (keeps per-key order); skip: they go on.",
        ),
    ] = _default("on_dead_letter"),
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
            hash_tags=needs_hash_tags(broker),
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
    server = _serve_metrics(runner, metrics_port, metrics_host, saga_stuck_after)
    log.info("consume.starting", db=redact_url(db), broker=redact_url(broker), group=group, target=target)
    try:
        asyncio.run(_run(runner, once=once))
    finally:
        if server is not None:
            server.close()
