"""Redis Cluster benchmark: the relay on 3 masters against the relay on one Redis, same machine, same run.

Starts private servers (PostgreSQL, one Redis, a Redis Cluster of 3 masters +
3 replicas, all on loopback) and, in interleaved rounds on the same backlog
(``--rows`` rows over 1,000 keys, ``--partitions`` streams per topic):

1. raw: XADD in one pipeline per batch to one Redis, no database (the broker's
   limit on this machine);
2. one relay (in-process ``Relay.run`` with ``once``) to one Redis;
3. one relay to the cluster (one script per slot, masters in parallel);
4. two ``outboxkit relay --once`` processes to one Redis and to the cluster;
5. the cluster with ``--broker-durability replicas=1`` (a ``WAIT`` per master
   and batch).

Prints one JSON object (medians of the rounds, and every round). Usage::

    python benchmarks/redis_cluster_bench.py --rows 50000 --rounds 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from relay_bench import fill, pending  # noqa: E402

import outbox  # noqa: E402
from brokers import StreamLayout, needs_hash_tags  # noqa: E402
from relay import Relay, RelayConfig  # noqa: E402


def raw_xadd(redis_url: str, rows: int, batch: int, partitions: int) -> float:
    """XADD ``rows`` entries of ~300 B, one pipeline per batch, spread over the partitions. Rows/s."""
    client = redis.Redis.from_url(redis_url)
    payload = {"specversion": "1.0", "id": "x" * 36, "type": "order.created", "data": "x" * 260}
    started = time.perf_counter()
    for first in range(0, rows, batch):
        pipe = client.pipeline(transaction=False)
        for i in range(first, min(first + batch, rows)):
            pipe.xadd(f"bench:raw:orders:{i % partitions}", payload)  # type: ignore[arg-type]
        pipe.execute()
    client.close()
    return rows / (time.perf_counter() - started)


def relay_once(
    url: str, broker: str, prefix: str, args: argparse.Namespace, durability: str | None = None
) -> float:
    rows = pending(url)
    layout = StreamLayout(
        prefix=prefix, default_partitions=args.partitions, hash_tags=needs_hash_tags(broker)
    )
    config = RelayConfig(
        database_url=url, broker_url=broker, layout=layout, batch_size=args.batch, once=True,
        replay_window=dt.timedelta(0), broker_durability=durability,
    )  # fmt: skip
    started = time.perf_counter()
    Relay(config).run()
    return rows / (time.perf_counter() - started)


def relay_processes(url: str, broker: str, prefix: str, args: argparse.Namespace, count: int) -> float:
    rows = pending(url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "outboxkit", "--log-level", "warning", "relay", "--db", url,
            "--broker", broker, "--stream-prefix", prefix, "--batch-size", str(args.batch),
            "--default-partitions", str(args.partitions), "--once", "--lease-ttl", "3",
            "--replay-window", "0"]  # fmt: skip
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, env=env, cwd=ROOT) for _ in range(count)]
    for proc in procs:
        proc.wait(timeout=600)
    return rows / (time.perf_counter() - started)


def run(args: argparse.Namespace, url: str, single: str, cluster: str) -> dict[str, object]:
    outbox.upgrade(url)
    series: dict[str, list[float]] = {
        k: []
        for k in (
            "raw_one_redis",
            "relay_one_redis",
            "relay_cluster",
            "relay_cluster_replicas_1",
            "two_processes_one_redis",
            "two_processes_cluster",
        )
    }
    for r in range(args.rounds):
        series["raw_one_redis"].append(raw_xadd(single, args.rows, args.batch, args.partitions))
        for name, broker, durability in (
            ("relay_one_redis", single, None),
            ("relay_cluster", cluster, None),
            ("relay_cluster_replicas_1", cluster, "replicas=1"),
        ):
            fill(url, args.rows)
            series[name].append(relay_once(url, broker, f"bench:{name}{r}:", args, durability))
        for name, broker in (("two_processes_one_redis", single), ("two_processes_cluster", cluster)):
            fill(url, args.rows)
            series[name].append(relay_processes(url, broker, f"bench:{name}{r}:", args, 2))
    med = statistics.median
    result: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "rows": args.rows,
        "batch_size": args.batch,
        "partitions": args.partitions,
    }
    result.update({f"{k}_rows_s": round(med(v)) for k, v in series.items()})
    result["cluster_vs_one_redis"] = round(
        med([c / o for c, o in zip(series["relay_cluster"], series["relay_one_redis"], strict=True)]), 3
    )
    result["rounds"] = {k: [round(x) for x in v] for k, v in series.items()}
    return result


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument(
        "--partitions", type=int, default=6, help="streams per topic (spread over the masters)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    args = parser.parse_args()
    from tests._redis_cluster import RedisClusterServer  # noqa: PLC0415 - test servers, started here
    from tests._servers import PostgresServer, RedisServer  # noqa: PLC0415

    with PostgresServer(durable=True) as pg, RedisServer() as one, RedisClusterServer() as cluster:
        url = pg.create_database("bench")
        print(json.dumps(run(args, url, one.url, cluster.url), indent=2))


if __name__ == "__main__":
    main()
