//! Retention: which closed segments a log deletes, and what a run did.
//!
//! Kafka's `deleteOldSegments`: from the oldest segment on, while one of these holds, the
//! segment goes (the active segment never does):
//! - `retention.ms` (if `cleanup.policy` contains `delete` and it is not -1): the segment's
//!   largest timestamp is older than now minus `retention.ms`;
//! - `retention.bytes` (same condition on the policy, not -1): the log would still be at least
//!   `retention.bytes` without it;
//! - the log start offset (whatever the policy): the segment lies wholly below it (after
//!   `delete-records`).
//!
//! Deletion itself is the log's: it renames the files `.deleted`, keeps them open for readers
//! of older view generations, and removes them after `file.delete.delay.ms`.

use std::path::PathBuf;

use super::LogConfig;

/// What retention and the cleaner need to know of a closed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFacts {
    pub base_offset: i64,
    /// The next segment's base offset: every offset of this segment is below it.
    pub end_offset: i64,
    pub size_bytes: u64,
    /// -1 for an empty segment.
    pub largest_timestamp: i64,
    pub log_path: PathBuf,
}

/// How many of the oldest closed segments retention deletes, and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionPlan {
    pub segments: usize,
    pub reasons: Vec<String>,
}

/// Decides which of `closed` (oldest first) go. `total_bytes` counts every segment, the
/// active one included.
pub fn plan(
    closed: &[SegmentFacts],
    total_bytes: u64,
    config: &LogConfig,
    log_start_offset: i64,
    now_ms: i64,
) -> RetentionPlan {
    let delete = config.cleanup_policy.delete;
    let (mut by_time, mut by_size, mut by_start) = (0usize, 0usize, 0usize);
    let mut bytes_left = total_bytes as i64;
    let mut segments = 0;
    for segment in closed {
        let below_start = segment.end_offset <= log_start_offset;
        let expired = delete
            && config.retention_ms >= 0
            && segment.largest_timestamp < now_ms.saturating_sub(config.retention_ms);
        let oversize = delete
            && config.retention_bytes >= 0
            && bytes_left - segment.size_bytes as i64 >= config.retention_bytes;
        if !(below_start || expired || oversize) {
            break;
        }
        // One reason per segment, in Kafka's order of checks.
        if expired {
            by_time += 1;
        } else if oversize {
            by_size += 1;
        } else {
            by_start += 1;
        }
        bytes_left -= segment.size_bytes as i64;
        segments += 1;
    }
    let mut reasons = Vec::new();
    if by_time > 0 {
        reasons.push(format!(
            "{by_time} past retention.ms={}",
            config.retention_ms
        ));
    }
    if by_size > 0 {
        reasons.push(format!(
            "{by_size} beyond retention.bytes={}",
            config.retention_bytes
        ));
    }
    if by_start > 0 {
        reasons.push(format!(
            "{by_start} below the log start offset {log_start_offset}"
        ));
    }
    RetentionPlan { segments, reasons }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sizes_and_times: &[(u64, i64)]) -> Vec<SegmentFacts> {
        let mut base = 0;
        sizes_and_times
            .iter()
            .map(|&(size, ts)| {
                let f = SegmentFacts {
                    base_offset: base,
                    end_offset: base + 10,
                    size_bytes: size,
                    largest_timestamp: ts,
                    log_path: PathBuf::new(),
                };
                base += 10;
                f
            })
            .collect()
    }

    #[test]
    fn deletes_the_oldest_prefix_by_time_size_and_start() {
        let mut config = LogConfig {
            retention_ms: 1000,
            ..LogConfig::default()
        };
        let closed = facts(&[(100, 10), (100, 20), (100, 5000), (100, 30)]);
        // By time: the first two are older than now - 1000; the third stops the prefix.
        let p = plan(&closed, 500, &config, 0, 5000);
        assert_eq!(p.segments, 2);
        assert_eq!(p.reasons, vec!["2 past retention.ms=1000".to_string()]);
        // By size: 500 bytes in all, keep at least 250: two segments go.
        config.retention_ms = -1;
        config.retention_bytes = 250;
        let p = plan(&closed, 500, &config, 0, 5000);
        assert_eq!(p.segments, 2);
        // By log start offset, even under cleanup.policy=compact.
        config.retention_bytes = -1;
        config.cleanup_policy.delete = false;
        config.cleanup_policy.compact = true;
        let p = plan(&closed, 500, &config, 25, 5000);
        assert_eq!(p.segments, 2, "[0,10) and [10,20) are wholly below 25");
        config.retention_ms = 0;
        assert_eq!(plan(&closed, 500, &config, 0, 5000).segments, 0);
    }
}
