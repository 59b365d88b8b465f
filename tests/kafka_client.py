"""A real Kafka client (confluent-kafka) beside a cluster mount, for tests/mount_cluster.rs.

    kafka_client.py produce BOOTSTRAP TOPIC     produce three records with keys, headers and
                                               timestamps; print their offsets as JSON
    kafka_client.py consume BOOTSTRAP TOPIC N   print the first N records of partition 0 as
                                               JSON lines (offset, key, value, headers,
                                               timestamp, timestamp_type)
    kafka_client.py committed BOOTSTRAP GROUP TOPIC
                                               print GROUP's committed offset of TOPIC-0
                                               (-1001 when none)
"""

import json
import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

# What `produce` writes: (key, value, headers, timestamp ms).
RECORDS = [
    (b"user-1", b"from kafka", [("trace", b"abc"), ("n", b"1")], 1700000000000),
    (None, b"no key", [], 1700000001000),
    (b"user-2", b"\xff\x00binary", [("empty", b"")], 1700000002000),
]


def produce(bootstrap, topic):
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True}
    )
    offsets = []

    def delivered(err, msg):
        if err is not None:
            raise SystemExit(f"delivery failed: {err}")
        offsets.append(msg.offset())

    for key, value, headers, ts in RECORDS:
        producer.produce(
            topic,
            value=value,
            key=key,
            headers=headers,
            timestamp=ts,
            partition=0,
            on_delivery=delivered,
        )
    if producer.flush(30) != 0:
        raise SystemExit("flush timed out")
    print(json.dumps(offsets))


def text(b):
    if b is None:
        return None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return "b64:" + __import__("base64").b64encode(b).decode()


def consume(bootstrap, topic, count):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "kafka-client-test",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    while seen < count:
        msg = consumer.poll(20)
        if msg is None:
            raise SystemExit(f"timed out after {seen} records")
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise SystemExit(f"consume failed: {msg.error()}")
        ts_type, ts = msg.timestamp()
        kind = {
            TIMESTAMP_CREATE_TIME: "CreateTime",
            TIMESTAMP_LOG_APPEND_TIME: "LogAppendTime",
        }.get(ts_type, "none")
        headers = {k: text(v) for k, v in (msg.headers() or [])}
        print(
            json.dumps(
                {
                    "offset": msg.offset(),
                    "key": text(msg.key()),
                    "value": text(msg.value()),
                    "headers": headers,
                    "timestamp": ts,
                    "timestamp_type": kind,
                }
            )
        )
        seen += 1
    consumer.close()


def committed(bootstrap, group, topic):
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
    )
    [tp] = consumer.committed([TopicPartition(topic, 0)], timeout=20)
    print(tp.offset)
    consumer.close()


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "produce":
        produce(*args)
    elif command == "consume":
        consume(args[0], args[1], int(args[2]))
    elif command == "committed":
        committed(*args)
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main()
