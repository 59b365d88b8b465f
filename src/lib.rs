//! lmqfs: a Kafka-compatible segmented commit log, exposed as ordinary files through FUSE.
//!
//! Four layers, each depending only on the one below it:
//! - [`engine`]: record batches, segments, indexes, the partition log, recovery and the log
//!   manager. Knows nothing of FUSE.
//! - [`storage`]: the one seam between the file interface and storage (a trait the engine
//!   implements; a Kafka-protocol cluster can too).
//! - [`fs`]: the file interface's semantics (paths, virtual files, the `log` view's byte mapping,
//!   control and config parsing), plain Rust callable without a mount.
//! - [`fuse`]: the thin adapter from `fuser` callbacks to [`fs`].

pub mod dump;
pub mod engine;
pub mod fs;
pub mod fuse;
pub mod storage;
