//! The file interface's semantics, free of FUSE: paths, virtual files, views, control and config.
//!
//! Records are reached only through [`crate::storage`]'s traits; unit tests build the embedded
//! engine behind them.
//!
//! - [`node`]: what each inode is and how names parse (topic, partition, offset, segment).
//! - [`inode`]: the inode table (numbers never reused; lookups counted and forgotten).
//! - [`filesystem`]: [`LmqFs`], every operation of the interface over inode numbers.
//! - [`view`]: the byte mapping of `log` / `log.jsonl` / `from/<offset>` (sparse checkpoints).
//! - [`append`]: lines written to `append` / `append.jsonl` into records.
//! - [`caller`]: the thread behind a request (its process, its pending signals).
//! - [`json`]: records as JSON, both ways.
//! - [`control`]: `control` command parsing and the recent outcomes shown on read.
//! - [`commands`]: writes to `control`, `config`, `partitions`; the command runner.
//! - [`keys`]: `keys/`, a partition as a key-value map.
//! - [`groups`]: `groups/` and `consume/`, consumer group offsets.
//! - [`follow`]: `follow/`, streams that wait for new records.
//! - [`stats`]: the partition's `stats` JSON.
//! - [`time`]: RFC 3339 and milliseconds.
//! - [`error`]: [`FsError`], mapped to errno in one place by the FUSE adapter.

pub mod append;
pub mod caller;
pub mod commands;
pub mod control;
pub mod error;
pub mod filesystem;
pub mod follow;
pub mod groups;
pub mod inode;
pub mod json;
pub mod keys;
pub mod node;
pub mod stats;
pub mod time;
pub mod view;

pub use error::{FsError, FsResult};
pub use filesystem::{
    AccessMode, Attr, CachePolicy, DirEntry, Entry, FileKind, FsOptions, LmqFs, Opened, SetAttr,
};
pub use follow::{StreamListener, StreamRead};
