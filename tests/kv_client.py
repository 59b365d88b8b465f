#!/usr/bin/env python3
"""A key-value store over an lmqfs partition's keys/ directory, used by tests/mount_python.rs.

Usage: kv_client.py PARTITION_DIR

Puts, gets, overwrites, lists and deletes keys with plain file I/O (open/write/read/os.remove,
os.listdir), checks every answer against a dict, and prints "ok <live keys>" on success. Exits
non-zero with a message on the first mismatch.
"""

import errno
import json
import os
import sys


def check(cond, what):
    if not cond:
        sys.exit("kv client check failed: " + what)


class Store:
    """A dict-like view of keys/: one file per live key, its content the latest value."""

    def __init__(self, partition):
        self.dir = os.path.join(partition, "keys")

    def put(self, key, value):
        with open(os.path.join(self.dir, key), "wb") as f:
            f.write(value)

    def get(self, key):
        try:
            with open(os.path.join(self.dir, key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def delete(self, key):
        os.remove(os.path.join(self.dir, key))

    def keys(self):
        return sorted(os.listdir(self.dir))


def main():
    part = sys.argv[1]
    store = Store(part)
    model = {}

    check(store.keys() == [], "keys/ is not empty at first: %r" % store.keys())

    # Put: text, binary, empty, large (written in several chunks), unicode names.
    for i in range(50):
        key = "user:%03d" % i
        value = json.dumps({"id": i, "name": "user %d" % i}).encode()
        store.put(key, value)
        model[key] = value
    store.put("blob", bytes(range(256)) * 4)
    model["blob"] = bytes(range(256)) * 4
    store.put("empty", b"")
    model["empty"] = b""
    big = b"0123456789abcdef" * 40000
    with open(os.path.join(store.dir, "big"), "wb") as f:
        for i in range(0, len(big), 50000):
            f.write(big[i : i + 50000])
    model["big"] = big
    store.put("caf\u00e9 \u2615", "unicode name".encode())
    model["caf\u00e9 \u2615"] = "unicode name".encode()

    # Overwrite, including with a shorter value, and read back.
    for i in range(0, 50, 5):
        key = "user:%03d" % i
        store.put(key, b"v2")
        model[key] = b"v2"

    # Delete some; a deleted key reads as missing and deleting it again is ENOENT.
    for i in range(1, 50, 7):
        key = "user:%03d" % i
        store.delete(key)
        del model[key]
        check(store.get(key) is None, "deleted key %s still reads" % key)
        try:
            store.delete(key)
            check(False, "deleting %s twice succeeded" % key)
        except OSError as e:
            check(e.errno == errno.ENOENT, "second delete errno %r" % e.errno)

    # Append mode adds to the current value, like any file.
    with open(os.path.join(store.dir, "user:002"), "ab") as f:
        f.write(b"+more")
    model["user:002"] += b"+more"

    # Get and list agree with the model.
    check(store.keys() == sorted(model), "list: %r != %r" % (store.keys(), sorted(model)))
    for key, value in model.items():
        got = store.get(key)
        check(got == value, "get %s: %r != %r" % (key, got[:40] if got else got, value[:40]))
        check(os.stat(os.path.join(store.dir, key)).st_size == len(value), "size of %s" % key)
    check(store.get("never") is None, "a key never written reads")

    # The log holds what the store did: every put and delete as a keyed record.
    with open(os.path.join(part, "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    deletes = [r for r in records if r["value"] is None and r.get("value_b64") is None]
    check(len(deletes) == len(range(1, 50, 7)), "tombstones in the log: %d" % len(deletes))
    check(all(r["key"] is not None or r.get("key_b64") for r in records), "a keyless record")

    # Compaction keeps every answer.
    with open(os.path.join(part, "control"), "w") as f:
        f.write("roll\n")
    with open(os.path.join(part, "control"), "w") as f:
        f.write("compact\n")
    check(store.keys() == sorted(model), "list after compaction")
    for key, value in model.items():
        check(store.get(key) == value, "get %s after compaction" % key)

    print("ok %d" % len(model))


if __name__ == "__main__":
    main()
