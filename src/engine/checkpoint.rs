//! A partition's recovery-point checkpoint and clean-shutdown marker.
//!
//! `<partition dir>/lmqfs-checkpoint` holds, as text:
//!
//! ```text
//! version=1
//! recovery_point=<first offset not known to be on disk>
//! log_start_offset=<log start offset>
//! ```
//!
//! It is replaced atomically (write `.tmp`, fsync, rename, fsync the directory), so it is always
//! either the old or the new version. A stale recovery point only means a longer recovery; it is
//! never ahead of what was fsynced.
//!
//! `<partition dir>/.lmqfs-clean-shutdown` exists only between a clean close and the next open:
//! open removes it first, so a crash at any later point leaves no marker.
//!
//! Neither file is checksummed: a checkpoint that does not parse is ignored (with a warning)
//! and the whole partition is recovered. Thread-safety: these are plain functions over files;
//! the owning [`crate::engine::Log`] calls them under its lock, so one writer at a time.

use std::path::{Path, PathBuf};

use super::error::IoResultExt;
use super::io::{file_system, OpenMode};
use super::{EngineError, Result};

pub const CHECKPOINT_FILE: &str = "lmqfs-checkpoint";
pub const CLEAN_SHUTDOWN_FILE: &str = ".lmqfs-clean-shutdown";

/// What the checkpoint file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Checkpoint {
    pub recovery_point: i64,
    pub log_start_offset: i64,
}

impl Checkpoint {
    /// Reads `dir`'s checkpoint; a missing file is the empty checkpoint (offset 0).
    pub fn read(dir: &Path) -> Result<Checkpoint> {
        let path = dir.join(CHECKPOINT_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Checkpoint::default()),
            Err(e) => return Err(EngineError::io(&path, e)),
        };
        let mut checkpoint = Checkpoint::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let corrupt = |reason: &str| EngineError::Corrupt {
                path: path.clone(),
                position: 0,
                reason: format!("{reason}: {line:?}"),
            };
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| corrupt("not key=value"))?;
            let value: i64 = value.trim().parse().map_err(|_| corrupt("not a number"))?;
            match key.trim() {
                "version" if value == 1 => {}
                "version" => return Err(corrupt("unsupported version")),
                "recovery_point" => checkpoint.recovery_point = value,
                "log_start_offset" => checkpoint.log_start_offset = value,
                _ => return Err(corrupt("unknown key")),
            }
        }
        Ok(checkpoint)
    }

    /// Atomically replaces `dir`'s checkpoint.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = format!(
            "version=1\nrecovery_point={}\nlog_start_offset={}\n",
            self.recovery_point, self.log_start_offset
        );
        write_atomically(&dir.join(CHECKPOINT_FILE), text.as_bytes())
    }
}

/// Whether `dir` was closed cleanly (the marker exists).
pub fn has_clean_shutdown_marker(dir: &Path) -> bool {
    dir.join(CLEAN_SHUTDOWN_FILE).exists()
}

/// Removes the marker durably, before the log changes anything.
pub fn remove_clean_shutdown_marker(dir: &Path) -> Result<()> {
    let path = dir.join(CLEAN_SHUTDOWN_FILE);
    match file_system().remove(&path) {
        Ok(()) => fsync_dir(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::io(&path, e)),
    }
}

/// Writes the marker durably, after everything else of a clean close is on disk.
pub fn write_clean_shutdown_marker(dir: &Path) -> Result<()> {
    write_atomically(&dir.join(CLEAN_SHUTDOWN_FILE), b"")
}

/// Writes `path` as a whole or not at all: a `.tmp` sibling, fsync, rename, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let file = file_system().open(&tmp, OpenMode::Truncate).at(&tmp)?;
    file.write_all_at(bytes, 0).at(&tmp)?;
    file.sync_data().at(&tmp)?;
    drop(file);
    file_system().rename(&tmp, path).at(path)?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// fsyncs a directory, making renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    file_system().sync_dir(dir).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_defaults_to_zero() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), Checkpoint::default());
        let c = Checkpoint {
            recovery_point: 42,
            log_start_offset: 7,
        };
        c.write(dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()).unwrap(), c);
        assert!(!dir.path().join("lmqfs-checkpoint.tmp").exists());
    }

    #[test]
    fn garbage_checkpoint_is_a_corrupt_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CHECKPOINT_FILE), "recovery_point=abc\n").unwrap();
        assert!(matches!(
            Checkpoint::read(dir.path()),
            Err(EngineError::Corrupt { .. })
        ));
    }

    #[test]
    fn clean_shutdown_marker_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_clean_shutdown_marker(dir.path()));
        write_clean_shutdown_marker(dir.path()).unwrap();
        assert!(has_clean_shutdown_marker(dir.path()));
        remove_clean_shutdown_marker(dir.path()).unwrap();
        assert!(!has_clean_shutdown_marker(dir.path()));
        remove_clean_shutdown_marker(dir.path()).unwrap();
    }
}
