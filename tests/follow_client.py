"""follow/ from Python: poll wakes on append and not before; wake-up latency.

usage: follow_client.py poll PARTITION_DIR
       follow_client.py latency PARTITION_DIR COUNT
"""
import os
import select
import sys
import threading
import time


def poll_wakes_on_append(partition):
    fd = os.open(os.path.join(partition, "follow", "end"), os.O_RDONLY)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    # Nothing appended yet: not readable.
    events = poller.poll(300)
    assert events == [], f"readable before any append: {events}"
    with open(os.path.join(partition, "append"), "w") as append:
        append.write("woken\n")
    started = time.monotonic()
    events = poller.poll(5000)
    assert events and events[0][1] & select.POLLIN, f"no POLLIN after the append: {events}"
    data = os.read(fd, 65536)
    assert data == b"woken\n", data
    # Drained: not readable again until the next append.
    assert poller.poll(200) == [], "readable again with nothing new"
    os.close(fd)
    print(f"ok poll woke in {(time.monotonic() - started) * 1000:.1f} ms")


def latency(partition, count):
    fd = os.open(os.path.join(partition, "follow", "end"), os.O_RDONLY)
    append = os.open(os.path.join(partition, "append"), os.O_WRONLY)
    written = {}
    received = {}

    def reader():
        pending = b""
        while len(received) < count:
            chunk = os.read(fd, 65536)
            now = time.perf_counter_ns()
            assert chunk, "end of stream"
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                received[int(line)] = now

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(count):
        os.write(append, f"{i}\n".encode())
        written[i] = time.perf_counter_ns()
        # One record at a time: wait for it before the next.
        deadline = time.monotonic() + 5
        while i not in received:
            assert time.monotonic() < deadline, f"record {i} not seen within 5 s"
            time.sleep(0.0005)
    thread.join()
    samples = sorted(max(0, received[i] - written[i]) / 1000 for i in range(count))
    p50 = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, (len(samples) * 99) // 100)]
    print(f"ok latency p50 {p50:.0f} us p99 {p99:.0f} us over {count} appends")


if __name__ == "__main__":
    if sys.argv[1] == "poll":
        poll_wakes_on_append(sys.argv[2])
    elif sys.argv[1] == "latency":
        latency(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]}")
