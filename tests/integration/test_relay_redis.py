"""The relay against real PostgreSQL and Redis: gap, rejection, fencing, data loss, outages, leases."""

from __future__ import annotations

import datetime as dt
import functools
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url as sa_url
from sqlalchemy.pool import NullPool
from structlog.testing import capture_logs

import outbox
from brokers import Fence, Outcome, OutgoingEntry, StreamLayout
from brokers.redis_streams import RedisStreamsPublisher
from outbox import BrokerAuthError
from relay import Relay, RelayConfig
from relay._leases import LeaseManager
from tests._cli import run_cli
from tests._relay_support import (
    assert_complete_and_ordered,
    outbox_count,
    redis_entries,
    relay_thread,
    seq_of,
    wait_until,
    write_events,
)
from tests._servers import free_port


def _config(db: str, broker: str, prefix: str, **kw: object) -> RelayConfig:
    defaults: dict[str, object] = {
        "database_url": db,
        "broker_url": broker,
        "layout": StreamLayout(prefix=prefix),
        "poll_interval": dt.timedelta(seconds=0.05),
    }
    return RelayConfig(**{**defaults, **kw})  # type: ignore[arg-type]


def _xlen(client: redis.Redis, stream: str) -> int:
    return int(client.xlen(stream))


def test_relay_visibility_gap_late_commit_is_relayed(pg_url: str, redis_url: str, stream_prefix: str,
                                                     redis_client: redis.Redis) -> None:  # fmt: skip
    """A transaction holding a smaller id that commits after larger ids were relayed is still relayed."""
    engine = create_engine(pg_url, poolclass=NullPool)
    slow = engine.connect()
    slow_tx = slow.begin()
    late_id = outbox.publish(slow, "orders", {"seq": -1}, key="late")  # takes the smallest id, uncommitted
    stream = f"{stream_prefix}orders"
    with relay_thread(_config(pg_url, redis_url, stream_prefix)):
        later = write_events(pg_url, 20)
        wait_until(lambda: _xlen(redis_client, stream) == 20)
        slow_tx.commit()
        wait_until(lambda: _xlen(redis_client, stream) == 21)
    slow.close()
    engine.dispose()
    ids = [f["id"] for f in redis_entries(redis_client, [stream])]
    assert ids == [*later, str(late_id)]
    assert outbox_count(pg_url) == 0


def test_relay_redis_rejection_dead_letters_and_retry_keeps_key_order(
    pg_url: str, redis_url: str, stream_prefix: str, redis_client: redis.Redis
) -> None:
    """An entry Redis refuses (WRONGTYPE) is retried, dead-lettered; `dead-letters retry` relays it before later rows of its key."""
    redis_client.set(f"{stream_prefix}bad", "not a stream")
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        outbox.publish(conn, "bad", {"seq": 0}, key="k")
        outbox.publish(conn, "good", {"seq": 1}, key="other")
    cfg = _config(pg_url, redis_url, stream_prefix, max_attempts=2, retry_base=dt.timedelta(seconds=0.1),
                  retry_max=dt.timedelta(seconds=0.1), once=True)  # fmt: skip
    with capture_logs() as logs:
        Relay(cfg).run()
        time.sleep(0.15)
        Relay(cfg).run()
    assert _xlen(redis_client, f"{stream_prefix}good") == 1
    rejected = [e for e in logs if e["event"] == "relay.message_rejected"]
    assert rejected
    assert "WRONGTYPE" in rejected[0]["error"]
    listed = run_cli("dead-letters", "list", "--db", pg_url)
    assert listed.returncode == 0
    assert "WRONGTYPE" in listed.stdout
    assert "\tbad\t" in listed.stdout
    # A later message of the same key is waiting when the dead letter is retried.
    with engine.begin() as conn:
        outbox.publish(conn, "bad", {"seq": 2}, key="k", delay=dt.timedelta(seconds=0.5))
    dry = run_cli("dead-letters", "retry", "--all", "--dry-run", "--db", pg_url)
    assert dry.returncode == 0, dry.stderr
    assert "would retry 1" in dry.stdout
    redis_client.delete(f"{stream_prefix}bad")
    done = run_cli("dead-letters", "retry", "--all", "--by", "alice", "--db", pg_url)
    assert done.returncode == 0, done.stderr
    time.sleep(0.6)
    Relay(cfg).run()
    assert [seq_of(f) for f in redis_entries(redis_client, [f"{stream_prefix}bad"])] == [0, 2]
    with engine.connect() as conn:
        row = conn.execute(text("SELECT retried_by, retried_at FROM outbox_dead_letter")).one()
    assert row.retried_by == "alice"
    assert row.retried_at is not None
    purge = run_cli("dead-letters", "purge", "--all", "--db", pg_url)
    assert purge.returncode == 0
    assert "purged 1" in purge.stdout
    engine.dispose()


def test_relay_fence_refuses_a_stale_batch_atomically(redis_url: str, stream_prefix: str,
                                                      redis_client: redis.Redis) -> None:  # fmt: skip
    """After epoch 2 was seen, a batch fenced at epoch 1 writes nothing; epoch 2 and newer go through."""
    publisher = RedisStreamsPublisher(redis_url, key_prefix=stream_prefix)
    stream = f"{stream_prefix}orders"
    entry = OutgoingEntry(stream, {"id": "x"}, order_key="k")
    token = publisher.publish([]).incarnation  # learn the broker's incarnation
    publisher.publish([], fences=[Fence("outbox:3", 2)], incarnation=token)
    with pytest.raises(outbox.FencedError):
        publisher.publish([entry], fences=[Fence("outbox:3", 1)], incarnation=token)
    assert _xlen(redis_client, stream) == 0
    publisher.publish([entry], fences=[Fence("outbox:3", 2)], incarnation=token)
    publisher.publish([entry], fences=[Fence("outbox:3", 3)], incarnation=token)
    assert _xlen(redis_client, stream) == 2
    publisher.close()


def test_relay_paused_past_its_lease_is_fenced(pg_url: str, redis_url: str, stream_prefix: str,
                                               redis_client: redis.Redis) -> None:  # fmt: skip
    """A relay whose lease was taken over while it held a claimed batch cannot publish that batch."""
    write_events(pg_url, 10)
    ttl = dt.timedelta(seconds=1)
    stale = Relay(_config(pg_url, redis_url, stream_prefix, lease_ttl=ttl, relay_id="a-stale"))
    stale.leases.ensure_partitions()
    stale.leases.refresh(now=dt.datetime.now(dt.UTC))
    owned = sorted(stale.leases.view.epochs)
    batch = stale.store_claim(owned)  # claimed ... then "paused"
    time.sleep(1.2)
    newer = Relay(_config(pg_url, redis_url, stream_prefix, lease_ttl=ttl, relay_id="b-new", once=True))
    newer.run()  # takes every partition over (epoch + 1) and publishes
    stream = f"{stream_prefix}orders"
    assert _xlen(redis_client, stream) == 10
    stale.leases.view.valid_until = time.monotonic() + 60  # it still believes its lease
    with pytest.raises(outbox.FencedError):
        stale._relay_batch(batch, owned)
    assert _xlen(redis_client, stream) == 10
    stale.close()


def test_relay_leases_rebalance_when_relays_join_and_leave(pg_url: str) -> None:
    """A second relay gets half the partitions; when the first leaves, the second takes all with new epochs."""
    engine = create_engine(pg_url)
    ttl = dt.timedelta(seconds=5)
    a = LeaseManager(engine, scope="outbox", relay_id="a", partitions=8, ttl=ttl)
    b = LeaseManager(engine, scope="outbox", relay_id="b", partitions=8, ttl=ttl)
    a.ensure_partitions()
    now = dt.datetime.now(dt.UTC)
    assert sorted(a.refresh(now=now).epochs) == list(range(8))
    assert b.refresh(now=now).epochs == {}  # joined; a still holds everything
    assert sorted(a.refresh(now=now).epochs) == [0, 2, 4, 6]  # a releases b's share
    assert sorted(b.refresh(now=now).epochs) == [1, 3, 5, 7]
    a.leave()
    view = b.refresh(now=now)
    assert sorted(view.epochs) == list(range(8))
    assert view.epochs[0] == 2  # a's partition: taken over, epoch 1 -> 2
    assert view.epochs[1] == 2  # b's own: renewed, still the epoch b took it at
    engine.dispose()


def test_relay_dead_relay_partitions_taken_after_ttl(pg_url: str) -> None:
    """Partitions of a relay that stopped heartbeating are taken over once its lease expires."""
    engine = create_engine(pg_url)
    ttl = dt.timedelta(seconds=2)
    a = LeaseManager(engine, scope="outbox", relay_id="a", partitions=4, ttl=ttl)
    b = LeaseManager(engine, scope="outbox", relay_id="b", partitions=4, ttl=ttl)
    a.ensure_partitions()
    t0 = dt.datetime.now(dt.UTC)
    a.refresh(now=t0)
    b.refresh(now=t0)
    a.refresh(now=t0)
    b.refresh(now=t0)
    assert sorted(b.view.epochs) == [1, 3]
    later = t0 + dt.timedelta(seconds=3)  # a is silent past its TTL
    assert sorted(b.refresh(now=later).epochs) == [0, 1, 2, 3]
    engine.dispose()


def test_relay_notify_wakes_an_idle_relay_quickly(pg_url: str, redis_url: str, stream_prefix: str,
                                                  redis_client: redis.Redis) -> None:  # fmt: skip
    """With LISTEN/NOTIFY an idle relay polling every 10 s relays a new commit within a second."""
    cfg = _config(pg_url, redis_url, stream_prefix, poll_interval=dt.timedelta(seconds=10))
    stream = f"{stream_prefix}orders"
    with relay_thread(cfg) as daemon:
        wait_until(lambda: bool(daemon.leases.view.epochs))
        time.sleep(0.5)  # let it go idle
        for i in range(3):
            started = time.monotonic()
            write_events(pg_url, 1, start=i)
            wait_until(lambda n=i + 1: _xlen(redis_client, stream) == n, timeout=5)
            assert time.monotonic() - started < 1.0
            time.sleep(0.2)


def test_relay_redis_restart_without_persistence_republishes(
    pg_url: str, redis_server_factory: object, stream_prefix: str
) -> None:
    """Redis restarted with no persistence loses its streams; the relay re-publishes the replay window by itself."""
    server = redis_server_factory(persistence="none")  # type: ignore[operator]
    client = redis.Redis.from_url(server.url)
    stream = f"{stream_prefix}orders"
    ids = write_events(pg_url, 200)
    cfg = _config(pg_url, server.url, stream_prefix, replay_window=dt.timedelta(minutes=5))
    with capture_logs() as logs, relay_thread(cfg):
        wait_until(lambda: _xlen(client, stream) == 200)
        server.restart()
        more = write_events(pg_url, 50, start=200)
        wait_until(lambda: _safe_xlen(client, stream) == 250, timeout=30)
    assert_complete_and_ordered(redis_entries(client, [stream]), ids + more)
    assert any(e["event"] == "relay.broker_data_lost" for e in logs)
    client.close()


def _safe_xlen(client: redis.Redis, stream: str) -> int:
    try:
        return int(client.xlen(stream))
    except redis.RedisError:
        return -1


def test_relay_survives_redis_outage_and_resumes(pg_url: str, redis_server_factory: object,
                                                 stream_prefix: str) -> None:  # fmt: skip
    """Redis stopped for a while: the relay backs off, keeps the rows, and resumes when Redis is back."""
    server = redis_server_factory(persistence="aof")  # type: ignore[operator]
    client = redis.Redis.from_url(server.url)
    stream = f"{stream_prefix}orders"
    first = write_events(pg_url, 50)
    with capture_logs() as logs, relay_thread(_config(pg_url, server.url, stream_prefix)):
        wait_until(lambda: _safe_xlen(client, stream) == 50)
        server.stop()
        during = write_events(pg_url, 50, start=50)
        time.sleep(1.5)
        assert outbox_count(pg_url) == 50  # kept while the broker is down
        server.start()
        wait_until(lambda: _safe_xlen(client, stream) == 100, timeout=30)
    assert_complete_and_ordered(redis_entries(client, [stream]), first + during)
    assert any(e["event"] == "relay.publish_failed" for e in logs)
    client.close()


def test_relay_survives_postgres_restart(pg_server_factory: object, redis_url: str, stream_prefix: str,
                                         redis_client: redis.Redis) -> None:  # fmt: skip
    """PostgreSQL restarted under the relay: it reconnects and relays what is committed afterwards."""
    server = pg_server_factory(durable=True)  # type: ignore[operator]
    url = server.create_database("app")
    outbox.upgrade(url)
    stream = f"{stream_prefix}orders"
    first = write_events(url, 30)
    with capture_logs() as logs, relay_thread(_config(url, redis_url, stream_prefix)):
        # Marked, not only on the stream: a restart between XADD and commit re-sends the batch
        # (an allowed duplicate) and would make an XLEN count meaningless.
        wait_until(lambda: outbox_count(url) == 0 and _xlen(redis_client, stream) >= 30)
        server.restart()
        after = write_events(url, 30, start=30)
        wait_until(lambda: outbox_count(url) == 0, timeout=30)
    assert_complete_and_ordered(redis_entries(redis_client, [stream]), first + after)
    # The restart was seen (not slept through) and logged without the database password (#9).
    events = {e["event"] for e in logs}
    assert events & {"relay.database_unavailable", "relay.listen_lost"}, sorted(events)
    password = sa_url(url).password
    assert not password or str(password) not in repr(logs)


def test_relay_password_never_logged(pg_url: str, redis_server_factory: object, stream_prefix: str) -> None:
    """A Redis password in the broker URL appears in no log event."""
    server = redis_server_factory(password="s3cret-pw")  # type: ignore[operator]
    write_events(pg_url, 5)
    cfg = _config(pg_url, server.url, stream_prefix, once=True)
    with capture_logs() as logs:
        Relay(cfg).run()
    assert "s3cret-pw" not in repr(logs)
    write_events(pg_url, 1)
    bad = _config(pg_url, server.url.replace("s3cret-pw", "wrong-pw"), stream_prefix, once=True)
    with capture_logs() as logs, pytest.raises(BrokerAuthError) as refused:
        Relay(bad).run()  # a refused password is not retried
    assert "wrong-pw" not in repr(logs)
    assert "wrong-pw" not in str(refused.value)


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1."""
    ca_key, ca, key, csr, crt = (directory / n for n in ("ca.key", "ca.crt", "srv.key", "srv.csr", "srv.crt"))
    ext = directory / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=60)
    run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
         "-days", "2", "-subj", "/CN=outboxkit-test-ca"])  # fmt: skip
    run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
         "-subj", "/CN=127.0.0.1"])  # fmt: skip
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-out", str(crt), "-days", "2", "-extfile", str(ext)])  # fmt: skip
    return ca, crt, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make certificates")
def test_relay_publishes_over_tls_with_an_acl_user(pg_url: str, redis_server_factory: object, stream_prefix: str,
                                                  tmp_path: Path) -> None:  # fmt: skip
    """rediss:// with an ACL user and a verified server certificate works, and the password is never logged."""
    ca, crt, key = _tls_files(tmp_path)
    tls_port = free_port()
    server = redis_server_factory(extra_args=[  # type: ignore[operator]
        "--tls-port", str(tls_port), "--tls-cert-file", str(crt), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
        "--user", "relay", "on", ">acl-s3cret", "~*", "&*", "+@all",
    ])  # fmt: skip
    del server
    url = f"rediss://relay:acl-s3cret@127.0.0.1:{tls_port}/0?ssl_ca_certs={ca}"
    ids = write_events(pg_url, 20)
    with capture_logs() as logs:
        Relay(_config(pg_url, url, stream_prefix, once=True)).run()
    client = redis.Redis.from_url(url)
    assert client.acl_whoami() in (b"relay", "relay")
    assert_complete_and_ordered(redis_entries(client, [f"{stream_prefix}orders"]), ids)
    client.close()
    assert "acl-s3cret" not in repr(logs)


def test_redis_publisher_max_len_trims_approximately_and_keeps_the_newest(
    redis_url: str, redis_client: redis.Redis, stream_prefix: str
) -> None:
    """With a MAXLEN the stream is trimmed (approximately) and the newest entries, in order, remain."""
    publisher = RedisStreamsPublisher(redis_url, max_len=10)
    stream = f"{stream_prefix}capped"
    token = publisher.publish([]).incarnation  # as the relay does: learn the broker's incarnation first
    for batch in range(5):
        entries = [
            OutgoingEntry(stream, {"id": f"{batch}-{i}", "data": "{}"}, order_key=None) for i in range(100)
        ]
        result = publisher.publish(entries, incarnation=token)
        assert {o.outcome for o in result.outcomes} == {Outcome.PUBLISHED}
    publisher.close()
    length = redis_client.xlen(stream)
    assert 10 <= length < 500  # trimmed, by whole nodes (approximate MAXLEN ~)
    ids = [fields[b"id"].decode() for _, fields in redis_client.xrange(stream)]
    assert ids[-1] == "4-99"
    assert ids == sorted(ids, key=lambda s: tuple(int(p) for p in s.split("-")))


def _dead_letter_key_k(pg_url: str, redis_url: str, redis_client: redis.Redis, stream_prefix: str,
                       mode: str) -> tuple[RelayConfig, str]:  # fmt: skip
    """Dead-letter message seq 0 of key k (Redis refuses its stream), then commit seq 1, 2 of k."""
    stream = f"{stream_prefix}bad"
    redis_client.set(stream, "not a stream")
    cfg = _config(pg_url, redis_url, stream_prefix, max_attempts=1, once=True, on_dead_letter=mode)
    engine = create_engine(pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        outbox.publish(conn, "bad", {"seq": 0}, key="k")
    Relay(cfg).run()
    redis_client.delete(stream)
    with engine.begin() as conn:
        outbox.publish(conn, "bad", {"seq": 1}, key="k")
        outbox.publish(conn, "bad", {"seq": 2}, key="other")
    engine.dispose()
    Relay(cfg).run()
    return cfg, stream


def test_relay_park_key_holds_later_rows_until_retry_restores_order(
    pg_url: str, redis_url: str, stream_prefix: str, redis_client: redis.Redis
) -> None:
    """With --on-dead-letter park-key a dead letter parks its key; `dead-letters retry` relays it first (#9)."""
    cfg, stream = _dead_letter_key_k(pg_url, redis_url, redis_client, stream_prefix, "park-key")
    assert [seq_of(f) for f in redis_entries(redis_client, [stream])] == [2]  # other keys go on
    assert outbox_count(pg_url) == 1  # seq 1 waits behind the dead letter of k
    shown = run_cli("status", "--db", pg_url)
    assert shown.returncode == 0, shown.stderr
    assert "parked keys (waiting for `dead-letters retry|purge`): k" in shown.stdout
    assert "waiting behind a parked key: 1" in shown.stdout
    done = run_cli("dead-letters", "retry", "--all", "--db", pg_url)
    assert done.returncode == 0, done.stderr
    Relay(cfg).run()
    assert [seq_of(f) for f in redis_entries(redis_client, [stream])] == [2, 0, 1]
    assert outbox_count(pg_url) == 0
    assert "parked keys" not in run_cli("status", "--db", pg_url).stdout


def test_relay_park_key_purge_releases_the_key(
    pg_url: str, redis_url: str, stream_prefix: str, redis_client: redis.Redis
) -> None:
    """Purging the dead letter of a parked key lets its later rows go (#9)."""
    cfg, stream = _dead_letter_key_k(pg_url, redis_url, redis_client, stream_prefix, "park-key")
    purge = run_cli("dead-letters", "purge", "--all", "--db", pg_url)
    assert purge.returncode == 0, purge.stderr
    Relay(cfg).run()
    assert [seq_of(f) for f in redis_entries(redis_client, [stream])] == [2, 1]
    assert outbox_count(pg_url) == 0


def test_relay_skip_mode_relays_past_a_dead_letter(
    pg_url: str, redis_url: str, stream_prefix: str, redis_client: redis.Redis
) -> None:
    """With --on-dead-letter skip later rows of a dead-lettered key are relayed at once (#9)."""
    _, stream = _dead_letter_key_k(pg_url, redis_url, redis_client, stream_prefix, "skip")
    assert sorted(seq_of(f) for f in redis_entries(redis_client, [stream])) == [1, 2]
    assert outbox_count(pg_url) == 0
