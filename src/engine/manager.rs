//! The log manager: the data directory, its topics and their partition logs.

/// Owns a data directory.
pub struct LogManager {}
