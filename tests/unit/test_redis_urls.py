"""Redis Cluster and Sentinel URLs, the durability setting and hash-tagged stream names (#11)."""

from __future__ import annotations

import datetime as dt

import pytest

from brokers import Durability, StreamLayout, connect_publisher, needs_hash_tags
from brokers._durability import split_durability
from brokers.redis_streams._seed_urls import parse_seed_url
from outbox import ConfigError
from relay import RelayConfig

SECRET = "pa:ss@w/rd"
QUOTED = "pa%3Ass%40w%2Frd"


def test_cluster_url_with_seeds_credentials_tls_and_durability() -> None:
    """Several seeds (default port 6379), a quoted password, TLS options and durability are typed fields."""
    url = f"rediss+cluster://relay:{QUOTED}@a.example:7000,b.example,[::1]:7002?ssl_ca_certs=/ca.pem&durability=replicas=1&durability_timeout=0.5"
    parsed = parse_seed_url(url)
    assert parsed.kind == "cluster"
    assert parsed.seeds == (("a.example", 7000), ("b.example", 6379), ("::1", 7002))
    assert (parsed.username, parsed.password) == ("relay", SECRET)
    assert parsed.tls
    assert parsed.tls_options == {"ssl_ca_certs": "/ca.pem"}
    assert parsed.durability == Durability(replicas=1, timeout=dt.timedelta(seconds=0.5))
    assert SECRET not in repr(parsed)


def test_sentinel_url_names_master_db_and_sentinel_credentials() -> None:
    """A sentinel URL carries the master's name, a database and the sentinels' own password."""
    parsed = parse_seed_url("redis+sentinel://:pw@s1,s2:26380/mymaster/2?sentinel_password=spw")
    assert parsed.seeds == (("s1", 26379), ("s2", 26380))
    assert (parsed.master, parsed.db, parsed.password, parsed.sentinel_password) == (
        "mymaster",
        2,
        "pw",
        "spw",
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (f"redis+cluster://u:{QUOTED}@host:notaport", "bad host"),
        (f"redis+cluster://u:{QUOTED}@host:70000", "bad host"),
        (f"redis+cluster://u:{QUOTED}@h1,,h2", "bad host"),
        (f"redis+cluster://u:{QUOTED}@h1/0", "no path"),
        (f"redis+cluster://u:{QUOTED}@h1?db=3", "unknown option 'db'"),
        (f"redis+sentinel://u:{QUOTED}@s1:26379", "master's name"),
        (f"redis+sentinel://u:{QUOTED}@s1:26379/m/x", "master's name"),
        (f"redis+cluster://u:{QUOTED}@h1?durability=replicas=x", "unknown broker durability"),
        (f"redis+cluster://u:{QUOTED}@h1?durability=replicas=99", "replicas must be 0..16"),
        (f"redis+cluster://u:{QUOTED}@h1?durability_timeout=soon", "durability_timeout"),
    ],
)
def test_malformed_urls_are_one_config_error_without_the_password(url: str, says: str) -> None:
    """Each malformed part is a ConfigError naming it; the password is never in the message."""
    with pytest.raises(ConfigError, match=says) as caught:
        connect_publisher(url)
    assert "ss@w" not in str(caught.value)
    assert QUOTED not in str(caught.value)


def test_durability_settings_and_their_commands() -> None:
    """none waits for nothing; replicas=N is WAIT N ms; aof is WAITAOF 1 0 ms; a short reply is a shortfall."""
    assert not Durability.parse("none").waits
    replicas = Durability.parse("replicas=2", timeout=dt.timedelta(seconds=1.5))
    assert replicas.command() == ("WAIT", 2, 1500)
    assert replicas.shortfall(2) is None
    assert replicas.shortfall(1) == "durability replicas=2: 1 of 2 replicas acknowledged within 1.5s"
    aof = Durability.parse("AOF")
    assert aof.command() == ("WAITAOF", 1, 0, 2000)
    assert aof.shortfall([1, 0]) is None
    assert aof.shortfall([0, 0]) is not None
    assert aof.unsupported("ERR unknown command 'WAITAOF'") is not None


def test_split_durability_removes_it_from_the_url_for_redis_py() -> None:
    """redis-py refuses unknown query options, so durability leaves the URL; the override wins."""
    url, durability = split_durability("redis://h:1/0?durability=replicas=1&ssl_cert_reqs=none", "none")
    assert url == "redis://h:1/0?ssl_cert_reqs=none"
    assert not durability.waits


def test_durability_is_refused_for_brokers_that_are_not_redis(tmp_path: object) -> None:
    """--broker-durability on the SQL-table broker is a configuration error, not silently ignored."""
    with pytest.raises(ConfigError, match="Redis brokers only"):
        connect_publisher("sqlite:///b.db", durability="replicas=1")


def test_hash_tagged_layout_gives_each_partition_its_own_tag() -> None:
    """With hash_tags the part after the prefix is the tag: partitions land in different slots."""
    layout = StreamLayout(prefix="orders:", default_partitions=3, hash_tags=True)
    assert layout.streams_of("payments") == [
        "orders:{payments:0}",
        "orders:{payments:1}",
        "orders:{payments:2}",
    ]
    assert StreamLayout(prefix="orders:", hash_tags=True).stream_for("payments", 7) == "orders:{payments}"
    assert StreamLayout(prefix="orders:").stream_for("payments", 7) == "orders:payments"


def test_relay_config_refuses_a_cluster_broker_without_hash_tags() -> None:
    """A library user who forgets hash_tags for redis+cluster:// gets one clear error at once."""
    assert needs_hash_tags("rediss+cluster://h:1")
    assert not needs_hash_tags("redis://h:1")
    with pytest.raises(ConfigError, match="hash_tags=True"):
        RelayConfig(database_url="sqlite://", broker_url="redis+cluster://h:1")
    with pytest.raises(ConfigError, match="unknown broker durability"):
        RelayConfig(database_url="sqlite://", broker_url="redis://h:1", broker_durability="all")


def test_multi_host_urls_are_redacted_with_every_host_kept() -> None:
    """Cluster and Sentinel URLs keep their hosts when logged; the master's and the sentinels' passwords are masked."""
    from outbox._redact import redact_url  # noqa: PLC0415 - the one redaction function, private

    shown = redact_url("redis+sentinel://u:pw1@s1:26379,s2:26379/m?sentinel_password=pw2&ssl_cert_reqs=none")
    assert shown == "redis+sentinel://u:***@s1:26379,s2:26379/m?sentinel_password=***&ssl_cert_reqs=none"
    assert redact_url("redis+cluster://:pw@h1:1,h2:2") == "redis+cluster://:***@h1:1,h2:2"
