//! The partition's `stats` file: facts about the log as one JSON object.
//!
//! Fields: `log_start_offset`, `log_end_offset`, `recovery_point`, `size_bytes`,
//! `segment_count`, `first_dirty_offset` (the cleaner checkpoint: offsets below it have been
//! compacted), `view_generation` (changes whenever records below the log end are removed), then
//! the last outcomes `last_roll`, `last_retention`, `last_compaction` (each `null` until the
//! first one).

use serde_json::{json, Value};

use crate::fs::time::format_rfc3339_ms;
use crate::storage::{CompactionOutcome, LogStats, RetentionOutcome, RollOutcome};

pub fn roll_json(roll: &RollOutcome) -> Value {
    json!({
        "time_ms": roll.time_ms,
        "time": format_rfc3339_ms(roll.time_ms),
        "reason": roll.reason,
        "new_base_offset": roll.new_base_offset,
    })
}

pub fn retention_json(run: &RetentionOutcome) -> Value {
    json!({
        "time_ms": run.time_ms,
        "time": format_rfc3339_ms(run.time_ms),
        "duration_ms": run.duration_ms,
        "segments_deleted": run.segments_deleted,
        "bytes_reclaimed": run.bytes_reclaimed,
        "records_removed": run.records_removed,
        "log_start_offset": run.log_start_offset,
        "reasons": run.reasons,
    })
}

pub fn compaction_json(run: &CompactionOutcome) -> Value {
    json!({
        "time_ms": run.time_ms,
        "time": format_rfc3339_ms(run.time_ms),
        "duration_ms": run.duration_ms,
        "skipped": run.skipped,
        "segments_before": run.segments_before,
        "segments_after": run.segments_after,
        "bytes_before": run.bytes_before,
        "bytes_after": run.bytes_after,
        "bytes_reclaimed": run.bytes_reclaimed(),
        "dirty_bytes": run.dirty_bytes,
        "records_removed": run.records_removed,
        "tombstones_removed": run.tombstones_removed,
        "dirty_ratio": run.dirty_ratio,
        "first_dirty_offset": run.first_dirty_offset,
    })
}

/// The `stats` object of a partition.
pub fn stats_json(stats: &LogStats) -> Value {
    json!({
        "log_start_offset": stats.log_start_offset,
        "log_end_offset": stats.log_end_offset,
        "recovery_point": stats.recovery_point,
        "size_bytes": stats.size_bytes,
        "segment_count": stats.segment_count,
        "first_dirty_offset": stats.first_dirty_offset,
        "view_generation": stats.view_generation,
        "last_roll": stats.last_roll.as_ref().map(roll_json),
        "last_retention": stats.last_retention.as_ref().map(retention_json),
        "last_compaction": stats.last_compaction.as_ref().map(compaction_json),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_render_with_times_and_counts() {
        let stats = LogStats {
            log_start_offset: 10,
            log_end_offset: 40,
            recovery_point: 40,
            size_bytes: 1234,
            segment_count: 3,
            last_roll: None,
            last_retention: Some(RetentionOutcome {
                time_ms: 1_700_000_000_000,
                duration_ms: 3,
                segments_deleted: 2,
                bytes_reclaimed: 500,
                records_removed: 10,
                log_start_offset: 10,
                reasons: vec!["retention.bytes=100 breached by 2 segments".into()],
            }),
            last_compaction: Some(CompactionOutcome {
                time_ms: 1_700_000_000_500,
                skipped: Some("nothing cleanable".into()),
                first_dirty_offset: 30,
                ..Default::default()
            }),
            first_dirty_offset: 30,
            view_generation: 7,
        };
        let v = stats_json(&stats);
        assert_eq!(v["view_generation"], 7);
        assert_eq!(v["first_dirty_offset"], 30);
        assert_eq!(v["last_roll"], Value::Null);
        let r = &v["last_retention"];
        assert_eq!(r["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(r["segments_deleted"], 2);
        assert_eq!(r["bytes_reclaimed"], 500);
        assert_eq!(r["records_removed"], 10);
        let c = &v["last_compaction"];
        assert_eq!(c["skipped"], "nothing cleanable");
        assert_eq!(c["first_dirty_offset"], 30);
        assert_eq!(c["tombstones_removed"], 0);
    }
}
