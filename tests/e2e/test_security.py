"""Security: least-privilege roles from docs/security.md, TLS Redis with ACL users, no secret leaks."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session

from outbox import publish
from relay import RelayConfig
from tests._cli import REPO_ROOT, run_cli
from tests._inbox import count_effects, domain
from tests._servers import LOCALHOST, NO_RETRY, RedisServer

pytestmark = pytest.mark.e2e
DOC = (REPO_ROOT / "docs" / "security.md").read_text()
SENTINEL = "Sentinel-pw-93b1"


ROLES = ("orders_app", "outboxkit_relay", "outboxkit_consumer")


def apply_grants(url: str, *markers: str) -> None:
    """Run the documented grant blocks as the superuser; roles are server-wide, so drop leftovers first."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for role in ROLES:
            conn.execute(sa.text(f"DROP ROLE IF EXISTS {role}"))
        for marker in markers:
            conn.execute(sa.text(doc_block(marker)))
    engine.dispose()


def doc_block(marker: str) -> str:
    """The fenced block right after ``<!-- marker -->`` in docs/security.md."""
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z-]*\n(.*?)```", DOC, re.DOTALL)
    assert match, f"no block {marker} in docs/security.md"
    return match.group(1)


def _as(url: str, role: str) -> str:
    return url.replace("//outboxkit@", f"//{role}@", 1)


def _publish_orders(url: str, count: int) -> None:
    engine = sa.create_engine(url)
    with Session(engine) as session, session.begin():
        for n in range(count):
            publish(session, "orders.created", {"n": n}, key=f"o-{n}")
    engine.dispose()


def _relay_and_consume(
    db_relay: str, db_consumer: str, broker_relay: str, broker_consumer: str, prefix: str
) -> None:
    relayed = run_cli(
        "relay", "--db", db_relay, "--broker", broker_relay, "--stream-prefix", prefix, "--once"
    )
    assert relayed.returncode == 0, relayed.stderr[-2000:]
    consumed = run_cli(
        "consume", "tests.e2e.inbox_app:registry", "--db", db_consumer, "--broker", broker_consumer,
        "--group", "billing", "--stream-prefix", prefix, "--block", "0.2", "--once",
    )  # fmt: skip
    assert consumed.returncode == 0, consumed.stderr[-2000:]


@pytest.fixture
def acl_redis(redis_server_factory: object) -> RedisServer:
    assert callable(redis_server_factory)
    server: RedisServer = redis_server_factory()
    client = redis.Redis.from_url(server.url, retry=NO_RETRY)
    for line in doc_block("acl:redis").strip().splitlines():
        client.execute_command(*line.split())
    client.close()
    return server


def _redis_user_url(server: RedisServer, user: str, password: str, scheme: str = "redis") -> str:
    return f"{scheme}://{user}:{password}@{LOCALHOST}:{server.port}/0"


# The prefix the documented ACL allows (`~orders:*`); each test has its own Redis server.
DOC_PREFIX = "orders:"


def test_security_least_privilege_roles_run_relay_and_consumer(pg_url: str, acl_redis: RedisServer) -> None:
    """The documented PostgreSQL grants and the Redis ACL users limited to `~orders:*` are enough for writers, relay and consumer, and every key written carries the prefix (issue #9)."""
    engine = sa.create_engine(pg_url)
    domain.create_all(engine)
    apply_grants(pg_url, "grants:app", "grants:relay", "grants:consumer")
    with engine.begin() as conn:
        # The handlers' own table, as any service grants its consumer.
        conn.execute(sa.text("GRANT INSERT, SELECT (id) ON test_effect TO outboxkit_consumer"))
        conn.execute(sa.text("GRANT USAGE ON SEQUENCE test_effect_id_seq TO outboxkit_consumer"))
    engine.dispose()
    _publish_orders(_as(pg_url, "orders_app"), 5)
    _relay_and_consume(
        _as(pg_url, "outboxkit_relay"),
        _as(pg_url, "outboxkit_consumer"),
        _redis_user_url(acl_redis, "relay", "relay-secret"),
        _redis_user_url(acl_redis, "consumer", "consumer-secret"),
        DOC_PREFIX,
    )
    assert count_effects(pg_url) == 5
    admin = redis.Redis.from_url(acl_redis.url, retry=NO_RETRY, decode_responses=True)
    keys = sorted(admin.scan_iter(match="*"))
    assert f"{DOC_PREFIX}orders.created" in keys
    assert any(":outboxkit:members" in k for k in keys), keys  # the consumer's keys exist ...
    assert all(k.startswith(DOC_PREFIX) for k in keys), keys  # ... and carry the prefix
    admin.close()


def test_security_redis_acl_confines_users_to_the_prefix(acl_redis: RedisServer) -> None:
    """The documented Redis users cannot write a key outside `~orders:*`: the ACL is a boundary (issue #9)."""
    for user, password in (("relay", "relay-secret"), ("consumer", "consumer-secret")):
        client = redis.Redis.from_url(_redis_user_url(acl_redis, user, password), retry=NO_RETRY)
        client.set(f"{DOC_PREFIX}probe", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set("elsewhere:probe", "1")
        client.close()


def test_security_least_privilege_is_really_enforced(pg_url: str) -> None:
    """The relay role cannot write application data: the grants are a boundary, not decoration."""
    apply_grants(pg_url, "grants:relay")
    relay_engine = sa.create_engine(_as(pg_url, "outboxkit_relay"))
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), relay_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outboxkit_inbox (consumer, message_id, topic, processed_at, attempts) VALUES ('x', 'y', 't', now(), 1)"
            )
        )
    relay_engine.dispose()


class TlsRedisServer(RedisServer):
    """redis-server listening on TLS only, with a certificate signed by a CA made for the test."""

    def __init__(self, certs: Path) -> None:
        super().__init__(password=SENTINEL)
        self.certs = certs

    def _argv(self, port: int) -> list[str]:
        argv = super()._argv(port)
        return [*argv, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(self.certs / "server.crt"),
                "--tls-key-file", str(self.certs / "server.key"), "--tls-ca-cert-file", str(self.certs / "ca.crt"),
                "--tls-auth-clients", "no"]  # fmt: skip

    def _probe(self, port: int) -> None:
        client = redis.Redis(host=LOCALHOST, port=port, password=self.password, ssl=True,
                             ssl_ca_certs=str(self.certs / "ca.crt"), socket_timeout=2, retry=NO_RETRY)  # fmt: skip
        try:
            client.ping()
        finally:
            client.close()


def _make_certs(directory: Path) -> Path:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=outboxkit-test-ca",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (directory / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext",
    )
    (directory / "server.key").chmod(0o644)  # read by redis-server
    return directory


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedisServer]:
    certs = tmp_path / "certs"
    certs.mkdir()
    with TlsRedisServer(_make_certs(certs)) as server:
        yield server


def test_security_tls_redis_relay_and_consumer(
    pg_url: str, tls_redis: TlsRedisServer, stream_prefix: str
) -> None:
    """rediss:// with a CA file: relay and consumer work over TLS, and plain redis:// is refused by the server."""
    engine = sa.create_engine(pg_url)
    domain.create_all(engine)
    engine.dispose()
    _publish_orders(pg_url, 3)
    ca = tls_redis.certs / "ca.crt"
    url = f"rediss://:{SENTINEL}@{LOCALHOST}:{tls_redis.port}/0?ssl_ca_certs={ca}"
    _relay_and_consume(pg_url, pg_url, url, url, stream_prefix)
    assert count_effects(pg_url) == 3
    _publish_orders(pg_url, 1)  # something to send, so the relay must talk to the broker
    plain = run_cli(
        "relay",
        "--db",
        pg_url,
        "--broker",
        f"redis://:{SENTINEL}@{LOCALHOST}:{tls_redis.port}/0",
        "--once",
        timeout=120,
    )
    assert plain.returncode != 0
    assert SENTINEL not in plain.stderr + plain.stdout


def test_security_wrong_passwords_never_leak(
    pg_url: str, redis_server_factory: object, stream_prefix: str
) -> None:
    """Refused passwords, status output and config reprs never show the password."""
    assert callable(redis_server_factory)
    server: RedisServer = redis_server_factory(password="right-password")
    wrong = f"redis://:{SENTINEL}@{LOCALHOST}:{server.port}/0"
    for args in (
        ["relay", "--db", pg_url, "--broker", wrong, "--once"],
        [
            "consume",
            "tests.e2e.inbox_app:registry",
            "--db",
            pg_url,
            "--broker",
            wrong,
            "--group",
            "g",
            "--once",
        ],
        ["status", "--db", pg_url, "--broker", wrong],
        [
            "relay",
            "--db",
            f"postgresql+psycopg://nobody:{SENTINEL}@{LOCALHOST}:1/db",
            "--broker",
            wrong,
            "--once",
        ],
    ):
        result = run_cli(*args, timeout=120)
        assert SENTINEL not in result.stdout + result.stderr, args
        assert "Traceback" not in result.stderr, args
    config = RelayConfig(database_url=f"postgresql+psycopg://u:{SENTINEL}@h/db", broker_url=wrong)
    assert SENTINEL not in repr(config)
    assert SENTINEL not in str(config)


def test_security_status_with_password_urls_hides_them(pg_url: str, redis_server_factory: object) -> None:
    """`outboxkit status` against working password-protected servers prints no password."""
    assert callable(redis_server_factory)
    server: RedisServer = redis_server_factory(password=SENTINEL)
    db = pg_url.replace("//outboxkit@", f"//outboxkit:{SENTINEL}@", 1)
    result = run_cli("status", "--db", db, "--broker", server.url)
    assert result.returncode == 0, result.stderr
    assert SENTINEL not in result.stdout + result.stderr
    json_result = run_cli("status", "--db", db, "--broker", server.url, "--json")
    assert SENTINEL not in json_result.stdout + json_result.stderr
