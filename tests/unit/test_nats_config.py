"""NATS URLs parse into a typed config; bad ones are one ConfigError without the secret (#11)."""

from __future__ import annotations

from pathlib import Path

import pytest

from brokers.nats_jetstream import parse_nats_url
from brokers.nats_jetstream._names import stream_name, subject_of, toolkit_stream
from outbox.errors import ConfigError

SECRET = "s3cret-never-shown"


def test_nats_url_with_seeds_user_and_options(tmp_path: Path) -> None:
    """Several seeds, user/password, TLS files and settings all land in the config."""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = parse_nats_url(
        f"nats://relay:{SECRET}@n1:4223,n2,n3:4225?ca={ca}&replicas=1&dedup_window=900&ack_wait=30&timeout=2"
    )
    assert config.servers == ("nats://n1:4223", "nats://n2:4222", "nats://n3:4225")
    assert (config.user, config.password, config.token) == ("relay", SECRET, None)
    assert (config.tls, config.ca, config.replicas) == (True, str(ca), 1)
    assert (config.dedup_window, config.ack_wait, config.timeout) == (900.0, 30.0, 2.0)
    assert SECRET not in config.description
    assert SECRET not in repr(config)


def test_nats_url_token_and_tls_scheme() -> None:
    """A user without a password is a token; tls:// requires TLS; replicas default to the cluster's."""
    config = parse_nats_url(f"tls://{SECRET}@n1")
    assert (config.token, config.user, config.tls, config.replicas) == (SECRET, None, True, None)
    assert config.description == "tls://***@n1"


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        (f"nats://u:{SECRET}@n1:notaport", "bad port"),
        (f"nats://u:{SECRET}@n1?replica=3", "unknown option 'replica'"),
        (f"nats://u:{SECRET}@n1?replicas=9", "replicas must be 1 to 5"),
        (f"nats://u:{SECRET}@n1?storage=disk", "storage must be file or memory"),
        (f"nats://u:{SECRET}@n1?creds=/no/such.creds", "does not exist"),
        (f"nats://u:{SECRET}@n1?cert=/x.pem", "both cert and key"),
        (f"nats://u:{SECRET}@n1/path", "no path"),
        (f"nats://u:{SECRET}@n1?timeout=-1", "must be positive"),
        (f"nats://u:{SECRET}@,n2", "bad host"),
        ("nats://x:1:2", "bad host"),
    ],
)
def test_nats_url_errors_are_one_config_error_without_the_secret(url: str, needle: str) -> None:
    """Each malformed URL raises ConfigError saying what is wrong, password masked."""
    with pytest.raises(ConfigError) as caught:
        parse_nats_url(url)
    assert needle in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("stream", ["orders", "svc:orders.created:3", "a_b.c", "x-y_2E"])
def test_nats_stream_names_escape_reversibly(stream: str) -> None:
    """Dots and underscores are escaped so two toolkit streams never share a JetStream stream."""
    name = stream_name(stream)
    assert "." not in name
    assert toolkit_stream(name) == stream
    assert subject_of(stream) == f"outboxkit.{name}"
    assert stream_name("a_b") != stream_name("a.b")
