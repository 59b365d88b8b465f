//! Retention: which closed segments a log deletes, and what a run did.
//!
//! SKELETON: types fixed; the implementation is in progress.

/// What one retention run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    /// When the run started, ms since the epoch.
    pub time_ms: i64,
    pub duration_ms: u64,
    pub segments_deleted: usize,
    pub bytes_reclaimed: u64,
    pub records_removed: u64,
    /// The log start offset after the run.
    pub log_start_offset: i64,
    /// Why segments went, e.g. `retention.ms=604800000 breached by 3 segments`.
    pub reasons: Vec<String>,
}

impl std::fmt::Display for RetentionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} segments deleted, {} bytes reclaimed, {} records removed, log start offset {}, {} ms",
            self.segments_deleted,
            self.bytes_reclaimed,
            self.records_removed,
            self.log_start_offset,
            self.duration_ms
        )?;
        if !self.reasons.is_empty() {
            write!(f, " ({})", self.reasons.join("; "))?;
        }
        Ok(())
    }
}
