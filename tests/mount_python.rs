//! Another language on the mount: a Python client (`tests/client.py`) produces with
//! `os.write`/`os.fsync` and consumes with `readlines`, `seek` and the JSON files.

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
