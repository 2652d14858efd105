"""Kafka adapter pieces without a broker: URL parsing, topic naming, the CloudEvents mapping, positions."""

from __future__ import annotations

import uuid

import pytest

from brokers import Delivery, connect_publisher
from brokers.kafka import Partitioner, parse_kafka_url
from brokers.kafka._topics import KafkaTarget, fence_topic, stream_name, target_of
from brokers.kafka._wire import fields_from_record, record_from_fields
from inbox._positions import BatchPositions
from outbox import ConfigError, DecodeError, decode_entry, encode_entry

SENTINEL = "S3NTINEL-pw"


def test_kafka_url_parses_servers_sasl_and_tls_options() -> None:
    """Several brokers, default port, SASL over TLS with files: librdkafka settings, password only in them."""
    config = parse_kafka_url(
        f"kafka+ssl://alice:{SENTINEL}@b1,b2:9093?sasl_mechanism=scram-sha-256&ssl_ca=/ca.pem&partitioner=murmur2_random"
    )
    assert config.bootstrap_servers == ("b1:9092", "b2:9093")
    assert config.partitioner is Partitioner.MURMUR2_RANDOM
    settings = config.client_settings()
    assert settings["security.protocol"] == "SASL_SSL"
    assert settings["sasl.mechanism"] == "SCRAM-SHA-256"
    assert settings["sasl.password"] == SENTINEL
    assert settings["ssl.ca.location"] == "/ca.pem"
    assert config.description == "kafka+ssl://alice:***@b1:9092,b2:9093"
    assert SENTINEL not in repr(config)


def test_kafka_url_without_user_is_plaintext_and_percent_decodes_credentials() -> None:
    """``kafka://`` alone is PLAINTEXT; a user makes it SASL_PLAINTEXT with SCRAM-SHA-512 by default."""
    assert parse_kafka_url("kafka://localhost").client_settings()["security.protocol"] == "PLAINTEXT"
    config = parse_kafka_url("kafka://a%40b:p%2Fw@h:1")
    assert (config.username, config.password, config.sasl_mechanism) == ("a@b", "p/w", "SCRAM-SHA-512")
    assert config.client_settings()["security.protocol"] == "SASL_PLAINTEXT"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"kafka://u:{SENTINEL}@", "names no broker"),
        (f"kafka://u:{SENTINEL}@h:0", "invalid broker address"),
        (f"kafka://u:{SENTINEL}@h:99999", "invalid broker address"),
        (f"kafka://u:{SENTINEL}@h b:1", "invalid broker address"),
        (f"kafka://:{SENTINEL}@h:1", "no user name"),
        (f"kafka://u:{SENTINEL}@h:1?acks=1", "unknown Kafka URL option"),
        (f"kafka://u:{SENTINEL}@h:1?partitioner=random", "unknown partitioner"),
        (f"kafka://u:{SENTINEL}@h:1?transactional=maybe", "true or false"),
        (f"kafka://u:{SENTINEL}@h:1?client_id=a%20b", "client_id"),
        (f"kafka://h:1?sasl_mechanism=PLAIN&x={SENTINEL}", "unknown Kafka URL option"),
        ("kafka://h:1?sasl_mechanism=PLAIN", "no user"),
    ],
)
def test_kafka_url_errors_are_config_errors_without_the_password(url: str, message: str) -> None:
    """Each malformed URL is one ConfigError saying what is wrong; the password never appears."""
    with pytest.raises(ConfigError) as caught:
        parse_kafka_url(url)
    assert message in str(caught.value)
    assert SENTINEL not in str(caught.value)


def test_kafka_publisher_refuses_a_stream_max_length_and_a_prefix_with_a_colon() -> None:
    """Kafka trims by retention, and its topic names have no ':': both are ConfigErrors at connect time."""
    with pytest.raises(ConfigError, match="retention"):
        connect_publisher("kafka://127.0.0.1:1", max_len=100)
    with pytest.raises(ConfigError, match="orders-svc"):
        connect_publisher("kafka://127.0.0.1:1", key_prefix="svc:")


def test_kafka_streams_map_to_topic_partitions_within_249_characters() -> None:
    """``t`` is partition 0 of a one-partition topic, ``t:3`` partition 3; names Kafka refuses are ConfigErrors."""
    assert target_of("svc.orders") == KafkaTarget("svc.orders", 0)
    assert target_of("svc.orders:3") == KafkaTarget("svc.orders", 3)
    assert stream_name("svc.orders", 3, 4) == "svc.orders:3"
    assert stream_name("svc.orders", 0, 1) == "svc.orders"
    assert target_of("a" * 249).topic == "a" * 249
    with pytest.raises(ConfigError, match="at most 249"):
        target_of("a" * 250)
    with pytest.raises(ConfigError, match="no ':'"):
        target_of("svc:orders")
    assert fence_topic("svc.") == "svc.__outboxkit_fences"


def test_kafka_record_carries_cloudevents_binary_mode_headers() -> None:
    """Attributes become ``ce_*`` headers, datacontenttype ``content-type``, data the value, the key the subject."""
    fields = encode_entry(message_id=uuid.uuid4(), topic="orders", type="order.created", source="svc", key="o-1",
                          time=__import__("datetime").datetime.now(__import__("datetime").UTC),
                          headers_json="{}", data_json='{"n": 1}')  # fmt: skip
    key, value, headers = record_from_fields(fields)
    names = [name for name, _ in headers]
    assert key == b"o-1"
    assert value == b'{"n": 1}'
    assert {
        "ce_id",
        "ce_type",
        "ce_source",
        "ce_specversion",
        "ce_time",
        "ce_subject",
        "content-type",
    } <= set(names)
    assert "ce_data" not in names
    decoded = decode_entry(fields_from_record(value, headers))
    assert (decoded.key, decoded.type, decoded.payload) == ("o-1", "order.created", {"n": 1})


def test_kafka_record_without_cloudevents_headers_does_not_decode() -> None:
    """A foreign record (no ``ce_`` headers) is a DecodeError: the consumer dead-letters it with the reason."""
    with pytest.raises(DecodeError, match="specversion"):
        decode_entry(fields_from_record(b"{}", [("traceparent", b"00-ab")]))


def _deliveries(*offsets: int) -> list[Delivery]:
    return [Delivery(stream="t", entry_id=str(o), fields={}, deliveries=1) for o in offsets]


def test_batch_positions_never_pass_an_unfinished_record() -> None:
    """Out-of-order completion (a failing message retried after its batch) keeps the stored position behind it."""
    positions = BatchPositions(_deliveries(10, 11, 12, 13))
    assert positions.after(["10"]) == 11
    positions.finish(["10"])
    positions.finish(["12"])  # 11 is being retried later
    assert positions.after(["13"]) == 11
    positions.finish(["13"])
    assert positions.after(["11"]) == 14
