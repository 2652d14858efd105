"""The fault soak with the servers under the suite's control, so broker and PostgreSQL restarts are faults too.

    python -m tests.soak --profile smoke|full --seed N [--broker redis|nats] [--out DIR]

Starts a private PostgreSQL and Redis (tests/_servers.py) or a 3-node NATS
JetStream cluster (tests/_nats.py), runs :func:`outboxkit.soak.run` against
them with :class:`LocalServers` / :class:`LocalNatsServers` as its server
faults (a Redis restart; a JetStream node SIGKILLed and started again), prints
the verdict and exits 0 when every guarantee held, 1 on any violation. ``outboxkit soak`` is the same run against servers you give it,
without the server restarts (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import redis

from outboxkit.soak import PROFILES, Verdict, preflight, run, verdict_json
from tests._nats import NatsCluster
from tests._servers import PostgresServer, RedisServer

SENTINEL = "Sentinel-pw-7f3a9c"  # must never appear in any log, error or status output


class LocalServers:
    """Restarts of the suite's own servers: the first Redis restart loses everything, later ones keep an AOF."""

    def __init__(self, pg: PostgresServer, rds: RedisServer) -> None:
        self.pg = pg
        self.rds = rds

    def restart_postgres(self) -> None:
        """Immediate shutdown, then start."""
        self.pg.restart()

    def restart_broker(self, target: int) -> None:
        """SIGKILL Redis and start it again; afterwards switch AOF on at runtime so the next SIGKILL keeps what was written."""
        self.rds.kill()
        self.rds.restart(persistence=self.rds.persistence)
        if self.rds.persistence != "none":
            return
        client = redis.Redis.from_url(self.rds.url)
        try:
            client.config_set("appendfsync", "always")
            client.config_set("appendonly", "yes")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                info = client.info("persistence")
                if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
                    break
                time.sleep(0.1)
        finally:
            client.close()
        self.rds.persistence = "aof"


class LocalNatsServers:
    """Restarts of the suite's PostgreSQL and of one node of its NATS cluster at a time."""

    def __init__(self, pg: PostgresServer, cluster: NatsCluster) -> None:
        self.pg = pg
        self.cluster = cluster

    def restart_postgres(self) -> None:
        """Immediate shutdown, then start."""
        self.pg.restart()

    def restart_broker(self, target: int) -> None:
        """SIGKILL JetStream node ``target`` (its streams' leaders move) and start it on its data again."""
        node = self.cluster.nodes[target % len(self.cluster.nodes)]
        node.kill()
        node.start()  # waits until the node answers JetStream requests again


def run_with_local_servers(profile: str, seed: int, out: Path, *, broker: str = "redis") -> Verdict:
    """Start PostgreSQL and the broker (``redis`` or ``nats``), run the soak with server faults, stop them."""
    with PostgresServer(durable=True) as pg:
        pg.create_database("soak")
        # The PostgreSQL server trusts loopback, so the sentinel password is
        # accepted and ignored: it is there only to prove it never leaks.
        db = pg.url("soak").replace("outboxkit@", f"outboxkit:{SENTINEL}@", 1)
        if broker == "nats":
            with NatsCluster() as cluster:
                # ack_wait=5: an acknowledgement lost with a killed node comes back in seconds.
                url = cluster.url() + "?ack_wait=5"
                preflight(db, url)
                return run(
                    PROFILES[profile], seed, out, db=db, broker=url, servers=LocalNatsServers(pg, cluster)
                )
        with RedisServer(password=SENTINEL) as rds:
            preflight(db, rds.url)
            return run(PROFILES[profile], seed, out, db=db, broker=rds.url, servers=LocalServers(pg, rds))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the soak, print the verdict."""
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--broker", choices=("redis", "nats"), default="redis")
    parser.add_argument("--out", type=Path, default=None, help="bundle directory (default: a new temp dir)")
    args = parser.parse_args(argv)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix=f"outboxkit-soak-{args.profile}-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"soak: profile={args.profile} seed={args.seed} broker={args.broker} bundle={out}", flush=True)
    verdict = run_with_local_servers(args.profile, args.seed, out, broker=args.broker)
    print(json.dumps(verdict_json(verdict), indent=2))
    print("soak: OK" if verdict.ok else f"soak: FAILED: {'; '.join(verdict.violations)}", flush=True)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
