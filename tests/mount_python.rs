//! Another language on the mount: a Python client (`tests/client.py`) produces with
//! `os.write`/`os.fsync` and consumes with `readlines`, `seek` and the JSON files; another
//! (`tests/kv_client.py`) uses `keys/` as a key-value store with plain file I/O.

mod common;

use std::process::Command;

use common::{read_string, Mount};

#[test]
fn python_client_produces_and_consumes() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("py", 1);
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/client.py");
    let out = Command::new("python3")
        .arg(client)
        .arg(m.path("py/0"))
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 102");
    // What Python wrote is what the shell tools read.
    let log = read_string(&m.path("py/0/log"));
    assert_eq!(log.lines().count(), 102);
    assert!(log.starts_with("py 0 0\npy 0 1\n"));
    assert!(log.ends_with("late\nvé\n"));
}

#[test]
fn python_client_uses_keys_as_a_key_value_store() {
    let Some(m) = Mount::new() else { return };
    m.create_topic("kv", 1);
    common::write_once(&m.path("kv/config"), b"cleanup.policy=compact\n").unwrap();
    let client = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kv_client.py");
    let out = Command::new("python3")
        .arg(client)
        .arg(m.path("kv/0"))
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "kv client failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // 50 users - 7 deleted + blob, empty, big, the unicode key.
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok 47");
    // What Python stored is what the shell reads.
    assert_eq!(read_string(&m.path("kv/0/keys/user:000")), "v2");
    assert_eq!(
        read_string(&m.path("kv/0/keys/user:002")),
        r#"{"id": 2, "name": "user 2"}+more"#
    );
}
