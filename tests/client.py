#!/usr/bin/env python3
"""A Python client of an lmqfs partition, used by tests/mount_python.rs.

Usage: client.py PARTITION_DIR

Produces with os.open/os.write/os.fsync, consumes with open/readlines/seek and the JSON
files, and checks what it reads. Exits non-zero with a message on the first mismatch and
prints "ok <records>" on success.
"""

import json
import os
import sys


def check(cond, what):
    if not cond:
        sys.exit("client check failed: " + what)


def main():
    part = sys.argv[1]
    append = os.path.join(part, "append")
    log = os.path.join(part, "log")

    # Produce: several lines per os.write, then fsync.
    fd = os.open(append, os.O_WRONLY | os.O_APPEND)
    for batch in range(10):
        lines = "".join("py %d %d\n" % (batch, i) for i in range(10))
        written = os.write(fd, lines.encode())
        check(written == len(lines), "short os.write: %d" % written)
    os.fsync(fd)
    os.close(fd)
    stats = json.load(open(os.path.join(part, "stats")))
    check(stats["log_end_offset"] == 100, "log_end_offset %r" % stats["log_end_offset"])
    check(stats["recovery_point"] == 100, "recovery_point after fsync %r" % stats["recovery_point"])

    # Consume: readlines sees every record once, in order.
    with open(log) as f:
        lines = f.readlines()
    expected = ["py %d %d\n" % (b, i) for b in range(10) for i in range(10)]
    check(lines == expected, "readlines: %r" % lines[:3])

    # Seek: jump to a byte position and read from there, in text and binary mode.
    offsets = []
    pos = 0
    for line in expected:
        offsets.append(pos)
        pos += len(line)
    with open(log, "rb") as f:
        check(f.seek(0, os.SEEK_END) == pos, "SEEK_END is not the exact size")
        f.seek(offsets[57])
        check(f.readline() == b"py 5 7\n", "seek to record 57")
        f.seek(-len(b"py 9 9\n"), os.SEEK_END)
        check(f.read() == b"py 9 9\n", "seek from the end")

    # An open reader sees records produced after it opened.
    with open(log, "rb") as reader:
        reader.read()
        fd = os.open(append, os.O_WRONLY)
        os.write(fd, b"late\n")
        os.close(fd)
        check(reader.read() == b"late\n", "open reader does not see the new record")

    # Single records and JSON.
    with open(os.path.join(part, "57"), "rb") as f:
        check(f.read() == b"py 5 7", "record 57 value")
    with open(os.path.join(part, "100.json")) as f:
        record = json.load(f)
    check(record["offset"] == 100 and record["value"] == "late", "100.json %r" % record)

    # append.jsonl from Python's json module, read back through log.jsonl.
    fd = os.open(os.path.join(part, "append.jsonl"), os.O_WRONLY)
    os.write(fd, (json.dumps({"key": "k", "value": "v\u00e9", "headers": {"h": "1"}}) + "\n").encode())
    os.close(fd)
    with open(os.path.join(part, "log.jsonl")) as f:
        last = [json.loads(l) for l in f][-1]
    check(last["key"] == "k" and last["value"] == "v\u00e9" and last["headers"] == {"h": "1"},
          "log.jsonl last record %r" % last)

    print("ok %d" % (last["offset"] + 1))


if __name__ == "__main__":
    main()
