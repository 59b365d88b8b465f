//! The filesystem layer's error type: what went wrong, in the words a log reader needs.
//!
//! The FUSE adapter turns each variant into one errno in a single exhaustive `match`
//! (`crate::fuse::errno`), so a new variant forces an errno decision there.

use crate::storage::StorageError;

pub type FsResult<T> = std::result::Result<T, FsError>;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The name does not exist (or no longer exists): unknown topic, partition, offset, file.
    #[error("no such file: {0}")]
    NotFound(String),

    /// The input was understood but is not acceptable: bad JSON, bad command, bad number.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The operation can never be done on this file (unlink of a fixed file, mkdir outside
    /// the root, chmod, ...).
    #[error("operation not permitted: {0}")]
    NotPermitted(String),

    /// The file was opened in a mode its kind refuses (read of `append`, write to a view).
    #[error("access denied: {0}")]
    AccessDenied(String),

    /// A read or write through a handle that was not opened for it, or an unknown handle.
    #[error("bad file handle: {0}")]
    BadHandle(String),

    /// A name longer than a file name may be (255 bytes).
    #[error("name too long: {0}")]
    NameTooLong(String),

    /// A directory operation on a file, or the reverse.
    #[error("not a directory: {0}")]
    NotADirectory(String),

    #[error("is a directory: {0}")]
    IsADirectory(String),

    /// Someone else holds it: a second `consume/<group>` of the same group and partition.
    #[error("busy: {0}")]
    Busy(String),

    /// The mount is read-only.
    #[error("read-only mount")]
    ReadOnly,

    /// A command this version does not implement yet.
    #[error("not implemented in this version: {0}")]
    NotImplemented(String),

    /// A read of a stream (`follow/`) found nothing yet and cannot wait here.
    #[error("would block: {0}")]
    WouldBlock(String),

    /// The data of an old view generation is no longer present on disk.
    #[error("view data no longer available: {0}")]
    Gone(String),

    /// Storage refused or failed; its error says why.
    #[error(transparent)]
    Storage(#[from] StorageError),

    /// A local I/O error outside the engine (raw segment reads).
    #[error("I/O error on {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl FsError {
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        FsError::NotFound(what.to_string())
    }
    pub fn invalid(what: impl std::fmt::Display) -> Self {
        FsError::InvalidInput(what.to_string())
    }
    pub fn not_permitted(what: impl std::fmt::Display) -> Self {
        FsError::NotPermitted(what.to_string())
    }
}
