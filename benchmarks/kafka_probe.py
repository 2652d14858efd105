"""Probe the Kafka features of a broker: python benchmarks/kafka_probe.py HOST:PORT (docs/brokers.md)."""

from __future__ import annotations

import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bs = sys.argv[1]
res = {}
adm = AdminClient({"bootstrap.servers": bs})
t = "probe-" + uuid.uuid4().hex[:6]
try:
    fs = adm.create_topics([NewTopic(t, num_partitions=4, replication_factor=1)], operation_timeout=10)
    for f in fs.values():
        f.result(10)
    res["admin_create_topic"] = True
except Exception as e:
    res["admin_create_topic"] = repr(e)
md = adm.list_topics(timeout=10)
res["metadata_partitions"] = len(md.topics[t].partitions) if t in md.topics else None
# bad topic name
try:
    fs = adm.create_topics([NewTopic("bad name!", 1, 1)])
    [f.result(10) for f in fs.values()]
    res["bad_topic_name"] = "accepted"
except Exception as e:
    res["bad_topic_name"] = repr(e)[:200]
p = Producer({"bootstrap.servers": bs, "enable.idempotence": True, "acks": "all"})
dr = []
for i in range(10):
    p.produce(
        t,
        key=f"k{i % 3}".encode(),
        value=f"v{i}".encode(),
        headers=[("ce_id", b"x"), ("content-type", b"application/json")],
        on_delivery=lambda e, m: dr.append((e, m.partition() if m else None, m.offset() if m else None)),
    )
p.flush(10)
res["idempotent_produce"] = [str(e) for e, _, _ in dr if e] or "ok"
res["offsets"] = sorted((pp, o) for _, pp, o in dr)[:4]
# transactions
try:
    tp = Producer({"bootstrap.servers": bs, "transactional.id": "tx-" + t, "transaction.timeout.ms": 10000})
    tp.init_transactions(10)
    tp.begin_transaction()
    tp.produce(t, key=b"k0", value=b"tx1")
    tp.commit_transaction(10)
    res["transactions"] = "ok"
    # zombie fencing
    tp2 = Producer({"bootstrap.servers": bs, "transactional.id": "tx-" + t, "transaction.timeout.ms": 10000})
    tp2.init_transactions(10)
    try:
        tp.begin_transaction()
        tp.produce(t, key=b"k0", value=b"zombie")
        tp.commit_transaction(10)
        res["zombie_fenced"] = "NOT fenced"
    except KafkaException as e:
        res["zombie_fenced"] = repr(e.args[0])[:200]
except Exception as e:
    res["transactions"] = repr(e)[:300]
# consumer groups
g = "g-" + t
c = Consumer(
    {
        "bootstrap.servers": bs,
        "group.id": g,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "isolation.level": "read_committed",
    }
)
c.subscribe([t])
got = []
end = time.time() + 20
while time.time() < end and len(got) < 10:
    m = c.poll(1)
    if m is None:
        continue
    if m.error():
        res.setdefault("consume_errors", []).append(str(m.error()))
        continue
    got.append(m)
res["consumed"] = len(got)
res["headers"] = got[0].headers() if got else None
res["assignment"] = [(x.topic, x.partition) for x in c.assignment()]
try:
    c.commit(message=got[-1], asynchronous=False)
    cm = c.committed([TopicPartition(t, got[-1].partition())], timeout=10)
    res["offset_commit"] = [(x.partition, x.offset) for x in cm]
except Exception as e:
    res["offset_commit"] = repr(e)
try:
    lo, hi = c.get_watermark_offsets(TopicPartition(t, 0), timeout=5)
    res["watermarks"] = (lo, hi)
except Exception as e:
    res["watermarks"] = repr(e)
try:
    offs = c.offsets_for_times([TopicPartition(t, 0, 0)], timeout=5)
    res["offsets_for_times"] = [(x.partition, x.offset) for x in offs]
except Exception as e:
    res["offsets_for_times"] = repr(e)
c.close()
try:
    gl = adm.list_consumer_groups().result(10)
    res["list_groups"] = [x.group_id for x in gl.valid][:5]
except Exception as e:
    res["list_groups"] = repr(e)[:200]
try:
    from confluent_kafka import ConsumerGroupTopicPartitions

    r = adm.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])
    res["list_group_offsets"] = [
        (x.partition, x.offset) for x in next(iter(r.values())).result(10).topic_partitions
    ]
except Exception as e:
    res["list_group_offsets"] = repr(e)[:200]
try:
    from confluent_kafka.admin import OffsetSpec

    r = adm.list_offsets({TopicPartition(t, 0): OffsetSpec.latest()})
    res["list_offsets"] = [v.result(10).offset for v in r.values()]
except Exception as e:
    res["list_offsets"] = repr(e)[:200]
try:
    r = adm.describe_consumer_groups([g])
    d = next(iter(r.values())).result(10)
    res["describe_group"] = (str(d.state), len(d.members))
except Exception as e:
    res["describe_group"] = repr(e)[:200]
for k, v in res.items():
    print(k, "=", v)
