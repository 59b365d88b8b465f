"""Produce and consume throughput through a cluster mount, against the same broker driven
directly by confluent-kafka, in one run.

    python tests/bench/cluster_throughput.py [--records N] [--size BYTES] [--write-bytes BYTES]

Needs: a release build (`cargo build --release`), FUSE (root, or fusermount3), a Tansu
binary in LMQFS_TANSU_BIN and confluent-kafka importable by this Python (`.ci/run` makes
both in target/kafka-venv: run this with target/kafka-venv/bin/python). Starts Tansu with
in-memory storage on a free loopback port and `lmqfs mount --bootstrap-server` on a temporary
directory, and stops both at the end.

Through the mount: `write()`s of --write-bytes of newline-separated records to
`<topic>/0/append` (each write one produce request, acks=all, idempotent), then one sequential
read of `<topic>/0/log` (a fresh mount's cache is empty: every byte is fetched). Directly: a
confluent-kafka producer with the same acks and idempotence (linger.ms=5), then a consumer
reading the partition from offset 0.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, seconds=20):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the broker did not start")


def records(n, size):
    # Each record: a counter padded to `size` bytes with 'x' (no newlines inside).
    for i in range(n):
        head = b"%010d " % i
        yield head + b"x" * max(0, size - len(head))


def through_mount(mnt, topic, n, size, write_bytes):
    os.mkdir(os.path.join(mnt, topic))
    append = os.path.join(mnt, topic, "0", "append")
    fd = os.open(append, os.O_WRONLY | os.O_APPEND)
    buf = bytearray()
    started = time.perf_counter()
    for r in records(n, size):
        buf += r + b"\n"
        if len(buf) >= write_bytes:
            os.write(fd, bytes(buf))
            buf.clear()
    if buf:
        os.write(fd, bytes(buf))
    os.close(fd)
    produce_s = time.perf_counter() - started

    log = os.path.join(mnt, topic, "0", "log")
    started = time.perf_counter()
    lines = 0
    with open(log, "rb", buffering=0) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            lines += chunk.count(b"\n")
    consume_s = time.perf_counter() - started
    if lines != n:
        raise SystemExit(f"read {lines} records through the mount, expected {n}")
    return produce_s, consume_s


def direct(bootstrap, topic, n, size):
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.size": 1000000,
        }
    )
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(err)

    started = time.perf_counter()
    for r in records(n, size):
        while True:
            try:
                producer.produce(topic, value=r, partition=0, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    if producer.flush(120) != 0 or failures:
        raise SystemExit(f"direct produce failed: {failures[:3]}")
    produce_s = time.perf_counter() - started

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "throughput",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    started = time.perf_counter()
    consumer.assign([TopicPartition(topic, 0, 0)])
    seen = 0
    while seen < n:
        for msg in consumer.consume(num_messages=10000, timeout=10):
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise SystemExit(f"direct consume failed: {msg.error()}")
            seen += 1
    consume_s = time.perf_counter() - started
    consumer.close()
    return produce_s, consume_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=100, help="bytes per record value")
    parser.add_argument("--write-bytes", type=int, default=256 * 1024)
    args = parser.parse_args()

    tansu = os.environ.get("LMQFS_TANSU_BIN")
    if not tansu:
        raise SystemExit("set LMQFS_TANSU_BIN to a Tansu binary (see .ci/run)")
    lmqfs = os.path.join(REPO, "target", "release", "lmqfs")
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    bootstrap = f"127.0.0.1:{port}"
    work = tempfile.mkdtemp(prefix="lmqfs-bench.")
    mnt = os.path.join(work, "mnt")
    os.mkdir(mnt)
    broker = subprocess.Popen(
        [tansu, "broker", "--listener-url", listener, "--advertised-listener-url", listener,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mounted = False
    try:
        wait_listening(port)
        env = dict(os.environ, LMQFS_LOG_FILE=os.path.join(work, "daemon.log"))
        subprocess.run([lmqfs, "mount", mnt, "--bootstrap-server", bootstrap],
                       check=True, env=env)
        mounted = True
        n, size = args.records, args.size
        payload_mb = n * size / 1e6
        m_prod, m_cons = through_mount(mnt, "via-mount", n, size, args.write_bytes)
        d_prod, d_cons = direct(bootstrap, "direct", n, size)
        print(f"{n} records of {size} bytes ({payload_mb:.1f} MB of values), Tansu in memory, "
              f"one partition, acks=all, idempotent")
        print(f"{'':34}{'records/s':>12}{'MB/s':>9}{'seconds':>9}")
        for name, secs in [
            ("produce through the mount", m_prod),
            ("produce with confluent-kafka", d_prod),
            ("consume through the mount (cat log)", m_cons),
            ("consume with confluent-kafka", d_cons),
        ]:
            print(f"{name:34}{n / secs:12.0f}{payload_mb / secs:9.1f}{secs:9.2f}")
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)
        broker.kill()
        broker.wait()
        if not os.path.ismount(mnt):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
