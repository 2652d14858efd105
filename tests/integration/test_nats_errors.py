"""NATS failures are typed library errors that never show a password (#11)."""

from __future__ import annotations

import pytest

from brokers import OutgoingEntry, connect_publisher, connect_subscriber
from outbox.errors import BrokerAuthError, BrokerError, ConfigError
from tests._nats import ADMIN, CONSUMER_USER, RELAY_USER, NatsCluster
from tests._servers import LOCALHOST, free_port


def _url(cluster: NatsCluster, user: str, password: str) -> str:
    return f"nats://{user}:{password}@{LOCALHOST}:{cluster.nodes[0].port}"


def test_nats_publisher_errors_are_typed_and_hide_the_password(nats_cluster: NatsCluster) -> None:
    """Malformed URL: ConfigError; no server: BrokerError; wrong password or permission: BrokerAuthError."""
    with pytest.raises(ConfigError):
        connect_publisher(f"nats://relay:{RELAY_USER[1]}@h1:port")
    dead = f"nats://relay:{RELAY_USER[1]}@{LOCALHOST}:{free_port()}"
    cases = [
        (dead, BrokerError, "unavailable during the connection"),
        (_url(nats_cluster, "relay", CONSUMER_USER[1]), BrokerAuthError, "credentials were refused"),
        # The consumer's user may not publish to the toolkit's subjects.
        (_url(nats_cluster, *CONSUMER_USER), BrokerAuthError, "a permission is missing"),
    ]
    for url, error, needle in cases:
        publisher = connect_publisher(url)
        try:
            with pytest.raises(error) as caught:
                token = publisher.publish([]).incarnation
                publisher.publish([OutgoingEntry("orders", {"id": "1", "data": "{}"})], incarnation=token)
        finally:
            publisher.close()
        assert needle in str(caught.value)
        assert error is BrokerError or isinstance(caught.value, BrokerAuthError)
        assert not any(secret in str(caught.value) for secret in (RELAY_USER[1], CONSUMER_USER[1]))


async def test_nats_subscriber_without_the_permission_is_refused(nats_cluster: NatsCluster) -> None:
    """The relay's user cannot create a consumer group: BrokerAuthError naming the permission."""
    subscriber = connect_subscriber(_url(nats_cluster, *RELAY_USER))
    try:
        with pytest.raises(BrokerAuthError) as caught:
            await subscriber.ensure_group("orders", "billing")
    finally:
        await subscriber.aclose()
    assert "a permission is missing" in str(caught.value)
    assert RELAY_USER[1] not in str(caught.value)
    assert ADMIN[1] not in str(caught.value)
