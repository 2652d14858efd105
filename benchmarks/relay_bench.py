"""Relay benchmark: the relay against the raw limit of the same machine, in one run.

Measures, on private PostgreSQL and Redis servers started for the run (or the
ones given with --db / --redis):

1. raw: a minimal claim / XADD pipeline / DELETE / commit loop written directly
   with psycopg and redis-py, on a backlog of N rows (jsonb payloads ~300 B);
2. one relay (in-process ``Relay.run`` with ``once``) on the same backlog, and
   the ratio to raw;
3. one vs two ``outboxkit relay --once`` processes on the same backlog;
4. 8 writer processes' commit rate: no trigger, trigger with a relay marked
   idle (a NOTIFY per commit), trigger with the relay busy (no NOTIFY);
5. commit-to-stream latency (p50/p99) at ~1,000 events/s with LISTEN/NOTIFY,
   and with polling every 100 ms.

Prints one JSON object. Usage::

    python benchmarks/relay_bench.py --rows 200000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import redis
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import outbox  # noqa: E402
from brokers import StreamLayout  # noqa: E402
from relay import Relay, RelayConfig  # noqa: E402

FILL = """
INSERT INTO outbox (message_id, topic, key, key_hash, type, source, headers, payload,
                    created_at, available_at, attempts)
SELECT gen_random_uuid(), 'orders', 'k' || (i %% 1000), abs(hashtext('k' || (i %% 1000))),
       'order.created', 'bench', '{}'::jsonb,
       jsonb_build_object('seq', i, 'order_id', md5(i::text), 'pad', repeat('x', 220)),
       now(), now(), 0
FROM generate_series(1, %s) AS i
"""


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def fill(url: str, rows: int) -> None:
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        conn.execute("DELETE FROM outbox")
        conn.execute(FILL, (rows,))
        conn.execute("VACUUM ANALYZE outbox")


def pending(url: str) -> int:
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetchone()
        return int(row[0]) if row else 0


def raw_loop(url: str, redis_url: str, stream: str, batch: int) -> float:
    """The minimal loop: claim in id order, XADD in one pipeline, DELETE, commit. Returns rows/s."""
    client = redis.Redis.from_url(redis_url)
    moved = 0
    started = time.perf_counter()
    with psycopg.connect(_dsn(url)) as conn:
        while True:
            rows = conn.execute(
                "SELECT id, message_id, type, source, key, created_at, topic, headers::text, payload::text"
                " FROM outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT %s",
                (batch,),
            ).fetchall()
            if not rows:
                conn.commit()
                break
            pipe = client.pipeline(transaction=False)
            for r in rows:
                # The same wire fields the relay writes (docs/wire-format.md).
                fields = {"specversion": "1.0", "id": str(r[1]), "type": r[2], "source": r[3],
                          "time": r[5].isoformat(), "datacontenttype": "application/json",
                          "topic": r[6], "headers": r[7], "data": r[8], "subject": r[4]}  # fmt: skip
                pipe.xadd(stream, fields)
            pipe.execute()
            conn.execute("DELETE FROM outbox WHERE id = ANY(%s)", ([r[0] for r in rows],))
            conn.commit()
            moved += len(rows)
    client.close()
    return moved / (time.perf_counter() - started)


def relay_in_process(url: str, redis_url: str, prefix: str, batch: int, replay_window: float) -> float:
    rows = pending(url)
    config = RelayConfig(
        database_url=url, broker_url=redis_url, layout=StreamLayout(prefix=prefix), batch_size=batch,
        once=True, replay_window=dt.timedelta(seconds=replay_window),
    )  # fmt: skip
    daemon = Relay(config)
    started = time.perf_counter()
    daemon.run()
    return rows / (time.perf_counter() - started)


def relay_processes(url: str, redis_url: str, prefix: str, batch: int, count: int) -> float:
    rows = pending(url)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-m", "outboxkit", "--log-level", "warning", "relay", "--db", url, "--broker",
            redis_url, "--stream-prefix", prefix, "--batch-size", str(batch), "--once", "--lease-ttl", "3",
            "--replay-window", "0"]  # fmt: skip
    started = time.perf_counter()
    procs = [subprocess.Popen(args, env=env, cwd=ROOT) for _ in range(count)]
    for p in procs:
        p.wait(timeout=600)
    return rows / (time.perf_counter() - started)


def _writer(url: str, seconds: float, counter: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    done = 0
    with psycopg.connect(_dsn(url)) as conn:
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            conn.execute(
                "INSERT INTO outbox (message_id, topic, key, key_hash, type, source, headers, payload,"
                " created_at, available_at, attempts) VALUES (gen_random_uuid(), 'w', 'k', 1, 't', 's',"
                " '{}', '{\"a\": 1}', now(), now(), 0)"
            )
            conn.commit()
            done += 1
    with counter.get_lock():
        counter.value += done


def writers_rate(url: str, writers: int, seconds: float) -> float:
    counter = multiprocessing.Value("q", 0)
    procs = [multiprocessing.Process(target=_writer, args=(url, seconds, counter)) for _ in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return counter.value / seconds


def commit_rates(url: str, writers: int, seconds: float, rounds: int) -> dict[str, object]:
    """8 writers' single-row commits per second: no trigger; trigger + idle relay (NOTIFY each commit);
    trigger + busy relay (no NOTIFY). Interleaved in rounds, medians reported."""
    dsn = _dsn(url)
    busy, notify, none = [], [], []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(rounds):
            conn.execute("DELETE FROM outboxkit_relay_member")
            busy.append(writers_rate(url, writers, seconds))
            conn.execute(
                "INSERT INTO outboxkit_relay_member VALUES ('outbox', 'bench', 'h', 1, now(), now(),"
                " now() + interval '1 hour', true)"
            )
            notify.append(writers_rate(url, writers, seconds))
            conn.execute("DELETE FROM outboxkit_relay_member")
            conn.execute("ALTER TABLE outbox DISABLE TRIGGER outboxkit_notify")
            none.append(writers_rate(url, writers, seconds))
            conn.execute("ALTER TABLE outbox ENABLE TRIGGER outboxkit_notify")
            conn.execute("DELETE FROM outbox")
    med = statistics.median
    return {
        "no_trigger_commits_s": round(med(none)),
        "trigger_relay_busy_commits_s": round(med(busy)),
        "trigger_relay_idle_notify_each_commit_s": round(med(notify)),
        "busy_vs_no_trigger": round(med([b / n for b, n in zip(busy, none, strict=True)]), 3),
        "notify_vs_no_trigger": round(med([x / n for x, n in zip(notify, none, strict=True)]), 3),
    }


def latency(url: str, redis_url: str, prefix: str, rate: int, seconds: float, *, listen: bool,
            poll: float) -> dict[str, float]:  # fmt: skip
    """Commit-to-stream latency: a paced writer records commit times, a reader XREADs the stream."""
    stream = f"{prefix}lat"
    # The relay runs in its own process, as in production (no GIL shared with the writer).
    args = [sys.executable, "-m", "outboxkit", "--log-level", "warning", "relay", "--db", url, "--broker",
            redis_url, "--stream-prefix", prefix, "--poll-interval", str(poll),
            "--replay-window", "0"]  # fmt: skip
    if not listen:
        args.append("--no-listen")
    relay_proc = subprocess.Popen(args, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    time.sleep(2.0)
    committed: dict[int, float] = {}
    received: dict[int, float] = {}
    total = int(rate * seconds)

    def reader() -> None:
        client = redis.Redis.from_url(redis_url)
        last = "0-0"
        while len(received) < total:
            reply = client.xread({stream: last}, block=2000, count=1000)
            now = time.perf_counter()
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    last = entry_id
                    received[int(json.loads(fields[b"data"])["n"])] = now
        client.close()

    read_thread = threading.Thread(target=reader, daemon=True)
    read_thread.start()
    with psycopg.connect(_dsn(url)) as conn:
        start = time.perf_counter()
        for n in range(total):
            target = start + n / rate
            while (wait := target - time.perf_counter()) > 0:
                time.sleep(wait)
            conn.execute(
                "INSERT INTO outbox (message_id, topic, key, key_hash, type, source, headers, payload,"
                " created_at, available_at, attempts) VALUES (gen_random_uuid(), 'lat', %s, %s, 't', 's',"
                " '{}', jsonb_build_object('n', %s::int), now(), now(), 0)",
                (f"k{n % 50}", n % 50, n),
            )
            conn.commit()
            committed[n] = time.perf_counter()
    read_thread.join(timeout=30)
    relay_proc.terminate()
    relay_proc.wait(timeout=10)
    lat = sorted((received[n] - committed[n]) * 1000 for n in committed if n in received)
    return {
        "events": total,
        "received": len(lat),
        "p50_ms": round(statistics.median(lat), 2),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
        "max_ms": round(lat[-1], 2),
    }


def run(args: argparse.Namespace, url: str, redis_url: str) -> dict[str, object]:
    outbox.upgrade(url)
    result: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "rows": args.rows,
        "batch_size": args.batch,
    }
    if args.only in (None, "throughput"):
        result.update(throughput(args, url, redis_url))
    if args.only in (None, "writers"):
        result["commit_rate_8_writers"] = commit_rates(url, 8, args.writer_seconds, args.rounds)
    if args.only == "memory":
        result["memory"] = memory(args, url, redis_url)
    if args.only in (None, "latency"):
        result["latency_notify_1000_s"] = latency(url, redis_url, "bench:ln:", 1000, args.latency_seconds,
                                                  listen=True, poll=1.0)  # fmt: skip
        result["latency_poll_100ms_1000_s"] = latency(url, redis_url, "bench:lp:", 1000, args.latency_seconds,
                                                      listen=False, poll=0.1)  # fmt: skip
    return result


def throughput(args: argparse.Namespace, url: str, redis_url: str) -> dict[str, object]:
    """Raw loop, one relay and one vs two relay processes, interleaved in rounds (medians reported).

    Interleaving keeps the ratios meaningful on a machine whose speed drifts
    (shared CPUs): each ratio compares runs a few seconds apart.
    """
    raw, one, kept, p1, p2 = [], [], [], [], []
    for r in range(args.rounds):
        fill(url, args.rows)
        raw.append(raw_loop(url, redis_url, f"bench:raw{r}", args.batch))
        fill(url, args.rows)
        one.append(relay_in_process(url, redis_url, f"bench:relay{r}:", args.batch, 0))
        fill(url, args.rows)
        kept.append(relay_in_process(url, redis_url, f"bench:kept{r}:", args.batch, 3600))
        with psycopg.connect(_dsn(url), autocommit=True) as conn:
            conn.execute("DELETE FROM outbox")
        fill(url, args.rows)
        p1.append(relay_processes(url, redis_url, f"bench:p1{r}:", args.batch, 1))
        fill(url, args.rows)
        p2.append(relay_processes(url, redis_url, f"bench:p2{r}:", args.batch, 2))
    med = statistics.median
    return {
        "raw_rows_s": round(med(raw)),
        "relay_rows_s": round(med(one)),
        "relay_vs_raw": round(med([o / r for o, r in zip(one, raw, strict=True)]), 3),
        "relay_keep_for_replay_rows_s": round(med(kept)),
        "one_process_rows_s": round(med(p1)),
        "two_processes_rows_s": round(med(p2)),
        "two_vs_one": round(med([b / a for a, b in zip(p1, p2, strict=True)]), 3),
        "rounds": {
            "raw": [round(x) for x in raw],
            "relay": [round(x) for x in one],
            "one_process": [round(x) for x in p1],
            "two_processes": [round(x) for x in p2],
        },
    }


def memory(args: argparse.Namespace, url: str, redis_url: str) -> dict[str, object]:
    """RSS of one relay process sampled while it drains ``--rows`` rows (memory must stay flat)."""
    fill(url, args.rows)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "outboxkit", "--log-level", "warning", "relay", "--db", url, "--broker",
           redis_url, "--stream-prefix", "bench:mem:", "--once", "--replay-window", "0"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    samples: list[int] = []
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
        except OSError:
            break
        samples += [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")]
        time.sleep(0.25)
    tenth = max(len(samples) // 10, 1)
    return {
        "rows": args.rows,
        "rss_mib_first_10pct_max": round(max(samples[:tenth]) / 1024, 1),
        "rss_mib_last_10pct_max": round(max(samples[-tenth:]) / 1024, 1),
        "rss_mib_peak": round(max(samples) / 1024, 1),
        "samples": len(samples),
    }


def main() -> None:
    # Library code logs through structlog; a benchmark only wants warnings.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--writer-seconds", type=float, default=5.0)
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument(
        "--db", help="postgresql+psycopg:// URL of an empty database (default: start a server)"
    )
    parser.add_argument("--redis", help="redis:// URL (default: start a server)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--only", choices=["throughput", "writers", "latency", "memory"], help="run one part")
    args = parser.parse_args()
    if args.db and args.redis:
        print(json.dumps(run(args, args.db, args.redis), indent=2))
        return
    from tests._servers import PostgresServer, RedisServer  # noqa: PLC0415 - only without --db/--redis

    with PostgresServer(durable=True) as pg, RedisServer() as rs:
        url = pg.create_database("bench")
        print(json.dumps(run(args, url, rs.url), indent=2))


if __name__ == "__main__":
    main()
