//! Key compaction: Kafka's LogCleaner for one partition log.
//!
//! SKELETON: types fixed; the implementation is in progress.

/// Mount-wide cleaner settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanerConfig {
    /// `log.cleaner.dedupe.buffer.size`: bytes of the offset map of one cleaning run.
    pub dedupe_buffer_bytes: usize,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            dedupe_buffer_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What one compaction run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompactionOutcome {
    /// When the run started, ms since the epoch.
    pub time_ms: i64,
    pub duration_ms: u64,
    /// Why nothing was cleaned, when nothing was (the run's other counts are then 0).
    pub skipped: Option<String>,
    /// Segments replaced, and the segments that replaced them.
    pub segments_before: usize,
    pub segments_after: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of the dirty section indexed into the offset map this run.
    pub dirty_bytes: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    /// The dirty ratio when the run started.
    pub dirty_ratio: f64,
    /// The first offset not yet cleaned, after the run (the cleaner checkpoint).
    pub first_dirty_offset: i64,
}

impl CompactionOutcome {
    pub fn bytes_reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

impl std::fmt::Display for CompactionOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(reason) = &self.skipped {
            return write!(f, "nothing cleaned: {reason}");
        }
        write!(
            f,
            "{} segments cleaned into {}, {} bytes reclaimed, {} records removed ({} tombstones), {} dirty bytes, {} ms",
            self.segments_before,
            self.segments_after,
            self.bytes_reclaimed(),
            self.records_removed,
            self.tombstones_removed,
            self.dirty_bytes,
            self.duration_ms
        )
    }
}
