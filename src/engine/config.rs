//! Per-topic log configuration, with Kafka's key names, units and defaults.

use super::record::{Compression, TimestampType};

/// Which cleanup a topic's closed segments get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    pub delete: bool,
    pub compact: bool,
}

/// The effective configuration of one partition log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes` (1 GiB): roll when the active segment would exceed this.
    pub segment_bytes: u32,
    /// `segment.ms` (7 d): roll when the active segment's first batch is this old.
    pub segment_ms: i64,
    /// `segment.messages` (unlimited = None): roll after this many records.
    pub segment_messages: Option<u64>,
    /// `segment.index.bytes` (10 MiB): preallocated size of each index.
    pub segment_index_bytes: u32,
    /// `index.interval.bytes` (4096): log bytes between index entries.
    pub index_interval_bytes: u32,
    /// `retention.ms` (7 d; -1 = unlimited).
    pub retention_ms: i64,
    /// `retention.bytes` (-1 = unlimited).
    pub retention_bytes: i64,
    /// `cleanup.policy` (`delete`).
    pub cleanup_policy: CleanupPolicy,
    /// `min.cleanable.dirty.ratio` (0.5).
    pub min_cleanable_dirty_ratio: f64,
    /// `delete.retention.ms` (1 d).
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms` (0).
    pub min_compaction_lag_ms: i64,
    /// `max.message.bytes` (1 MiB): largest batch accepted, in bytes.
    pub max_message_bytes: u32,
    /// `message.timestamp.type` (`CreateTime`).
    pub message_timestamp_type: TimestampType,
    /// `compression.type` (`none` here; Kafka's `producer` has no meaning without a producer).
    pub compression_type: Compression,
    /// `flush.messages` (off = None): fsync after this many unflushed records.
    pub flush_messages: Option<u64>,
    /// `flush.ms` (off = None): fsync when the oldest unflushed record is this old.
    pub flush_ms: Option<i64>,
    /// `file.delete.delay.ms` (60 s).
    pub file_delete_delay_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            segment_messages: None,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            cleanup_policy: CleanupPolicy {
                delete: true,
                compact: false,
            },
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_message_bytes: 1024 * 1024,
            message_timestamp_type: TimestampType::CreateTime,
            compression_type: Compression::None,
            flush_messages: None,
            flush_ms: None,
            file_delete_delay_ms: 60_000,
        }
    }
}

/// Why a config key or value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown config key {key:?}")]
    UnknownKey { key: String },
    #[error("invalid value {value:?} for {key}: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("malformed config line {line:?}: expected key=value")]
    MalformedLine { line: String },
}

/// Prints and parses "off" for the optional `i64` keys the way Kafka does: as `Long.MAX_VALUE`.
const OFF: i64 = i64::MAX;

impl CleanupPolicy {
    /// Kafka's spelling: `delete`, `compact` or `compact,delete`.
    pub fn name(self) -> &'static str {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            (false, true) => "delete",
            // Not constructible through `LogConfig::set`; printed honestly if built by hand.
            (false, false) => "",
        }
    }
}

impl LogConfig {
    /// Every key `set` and `get` accept, with Kafka's names, sorted.
    pub const KEYS: &'static [&'static str] = &[
        "cleanup.policy",
        "compression.type",
        "delete.retention.ms",
        "file.delete.delay.ms",
        "flush.messages",
        "flush.ms",
        "index.interval.bytes",
        "max.message.bytes",
        "message.timestamp.type",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.index.bytes",
        "segment.messages",
        "segment.ms",
    ];

    /// Sets one key from its text form, with Kafka's units and bounds. Surrounding whitespace
    /// in `value` is ignored, as Kafka's parser does. On error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        let v = value.trim();
        match key {
            "segment.bytes" => self.segment_bytes = parse_u32(v, 14).map_err(bad)?,
            "segment.ms" => self.segment_ms = parse_i64(v, 1).map_err(bad)?,
            "segment.messages" => {
                let n = parse_i64(v, 1).map_err(bad)?;
                self.segment_messages = (n != OFF).then_some(n as u64);
            }
            "segment.index.bytes" => self.segment_index_bytes = parse_u32(v, 8).map_err(bad)?,
            "index.interval.bytes" => self.index_interval_bytes = parse_u32(v, 0).map_err(bad)?,
            "retention.ms" => self.retention_ms = parse_i64(v, -1).map_err(bad)?,
            "retention.bytes" => self.retention_bytes = parse_i64(v, i64::MIN).map_err(bad)?,
            "cleanup.policy" => self.cleanup_policy = parse_cleanup_policy(v).map_err(bad)?,
            "min.cleanable.dirty.ratio" => {
                let ratio: f64 = v
                    .parse()
                    .map_err(|_| bad("not a decimal number".to_string()))?;
                if !(0.0..=1.0).contains(&ratio) {
                    return Err(bad("must be between 0 and 1".to_string()));
                }
                self.min_cleanable_dirty_ratio = ratio;
            }
            "delete.retention.ms" => self.delete_retention_ms = parse_i64(v, 0).map_err(bad)?,
            "min.compaction.lag.ms" => self.min_compaction_lag_ms = parse_i64(v, 0).map_err(bad)?,
            "max.message.bytes" => self.max_message_bytes = parse_u32(v, 0).map_err(bad)?,
            "message.timestamp.type" => {
                self.message_timestamp_type = match v {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad("must be CreateTime or LogAppendTime".to_string())),
                }
            }
            "compression.type" => {
                self.compression_type = Compression::ALL
                    .into_iter()
                    .find(|c| c.name() == v)
                    .ok_or_else(|| bad("must be one of none, gzip, snappy, lz4, zstd".into()))?
            }
            "flush.messages" => {
                let n = parse_i64(v, 1).map_err(bad)?;
                self.flush_messages = (n != OFF).then_some(n as u64);
            }
            "flush.ms" => {
                let n = parse_i64(v, 0).map_err(bad)?;
                self.flush_ms = (n != OFF).then_some(n);
            }
            "file.delete.delay.ms" => self.file_delete_delay_ms = parse_i64(v, 0).map_err(bad)?,
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_string(),
                })
            }
        }
        Ok(())
    }

    /// The value of `key` as Kafka prints it (`None` for an unknown key). The unlimited
    /// `flush.messages`, `flush.ms` and `segment.messages` print as 9223372036854775807.
    pub fn get(&self, key: &str) -> Option<String> {
        let off_or = |n: Option<String>| n.unwrap_or_else(|| OFF.to_string());
        Some(match key {
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "segment.messages" => off_or(self.segment_messages.map(|n| n.to_string())),
            "segment.index.bytes" => self.segment_index_bytes.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "cleanup.policy" => self.cleanup_policy.name().to_string(),
            // `{:?}` keeps the ".0" of whole numbers, as Java's Double.toString does.
            "min.cleanable.dirty.ratio" => format!("{:?}", self.min_cleanable_dirty_ratio),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "min.compaction.lag.ms" => self.min_compaction_lag_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => self.message_timestamp_type.name().to_string(),
            "compression.type" => self.compression_type.name().to_string(),
            "flush.messages" => off_or(self.flush_messages.map(|n| n.to_string())),
            "flush.ms" => off_or(self.flush_ms.map(|n| n.to_string())),
            "file.delete.delay.ms" => self.file_delete_delay_ms.to_string(),
            _ => return None,
        })
    }

    /// Every key as `key=value\n`, sorted by key: what a topic's `config` file reads.
    pub fn to_properties(&self) -> String {
        let mut out = String::new();
        for key in Self::KEYS {
            let value = self.get(key).expect("every listed key has a value");
            out.push_str(key);
            out.push('=');
            out.push_str(&value);
            out.push('\n');
        }
        out
    }

    /// Parses `key=value` lines (split at the first `=`, whitespace around key and value
    /// trimmed). Blank lines and lines starting with `#` are ignored. Keys and values are not
    /// checked here; [`LogConfig::apply`] does that.
    pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let mut pairs = Vec::new();
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match trimmed.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    pairs.push((key.trim().to_string(), value.trim().to_string()));
                }
                _ => {
                    return Err(ConfigError::MalformedLine {
                        line: line.to_string(),
                    })
                }
            }
        }
        Ok(pairs)
    }

    /// A copy of this config with every pair set, in order (a later pair for the same key
    /// wins). All or nothing: the first bad pair is the error and `self` is never changed.
    pub fn apply(&self, pairs: &[(String, String)]) -> Result<LogConfig, ConfigError> {
        let mut config = self.clone();
        for (key, value) in pairs {
            config.set(key, value)?;
        }
        Ok(config)
    }
}

/// An integer in `min ..= i64::MAX`, as Kafka's `LONG` type with an `atLeast(min)` validator.
fn parse_i64(v: &str, min: i64) -> Result<i64, String> {
    let n = parse_whole(v)?;
    if n < i128::from(min) || n > i128::from(i64::MAX) {
        return Err(format!("must be between {min} and {}", i64::MAX));
    }
    Ok(n as i64)
}

/// An integer in `min ..= i32::MAX`, as Kafka's `INT` type with an `atLeast(min)` validator.
fn parse_u32(v: &str, min: u32) -> Result<u32, String> {
    let n = parse_whole(v)?;
    if n < i128::from(min) || n > i128::from(i32::MAX) {
        return Err(format!("must be between {min} and {}", i32::MAX));
    }
    Ok(n as u32)
}

/// A decimal integer, wide enough that any overflow of the caller's type is a range error.
fn parse_whole(v: &str) -> Result<i128, String> {
    v.parse::<i128>()
        .map_err(|_| "not a whole number".to_string())
}

/// Kafka's list syntax: comma-separated, whitespace around items ignored, each item `delete`
/// or `compact`, at least one.
fn parse_cleanup_policy(v: &str) -> Result<CleanupPolicy, String> {
    let mut policy = CleanupPolicy {
        delete: false,
        compact: false,
    };
    for item in v.split(',').map(str::trim) {
        match item {
            "delete" => policy.delete = true,
            "compact" => policy.compact = true,
            "" => return Err("a list of delete and/or compact, with no empty items".to_string()),
            other => return Err(format!("{other:?} is neither delete nor compact")),
        }
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: &str = "9223372036854775807";

    /// Per key: values that must be accepted, each with what `get` prints afterwards.
    fn good_values() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
        vec![
            (
                "segment.bytes",
                vec![
                    ("14", "14"),
                    (" 1048576 ", "1048576"),
                    ("2147483647", "2147483647"),
                ],
            ),
            (
                "segment.ms",
                vec![("1", "1"), (MAX, MAX), ("+60000", "60000")],
            ),
            (
                "segment.messages",
                vec![("1", "1"), ("1000", "1000"), (MAX, MAX)],
            ),
            (
                "segment.index.bytes",
                vec![("8", "8"), ("12", "12"), ("2147483647", "2147483647")],
            ),
            ("index.interval.bytes", vec![("0", "0"), ("4096", "4096")]),
            (
                "retention.ms",
                vec![("-1", "-1"), ("0", "0"), ("3600000", "3600000")],
            ),
            (
                "retention.bytes",
                vec![
                    ("-1", "-1"),
                    ("-9223372036854775808", "-9223372036854775808"),
                    (MAX, MAX),
                ],
            ),
            (
                "cleanup.policy",
                vec![
                    ("delete", "delete"),
                    ("compact", "compact"),
                    ("compact,delete", "compact,delete"),
                    ("delete,compact", "compact,delete"),
                    (" delete , compact ", "compact,delete"),
                ],
            ),
            (
                "min.cleanable.dirty.ratio",
                vec![("0", "0.0"), ("0.25", "0.25"), ("1", "1.0"), ("1.0", "1.0")],
            ),
            (
                "delete.retention.ms",
                vec![("0", "0"), ("86400000", "86400000")],
            ),
            ("min.compaction.lag.ms", vec![("0", "0"), ("1000", "1000")]),
            (
                "max.message.bytes",
                vec![("0", "0"), ("2147483647", "2147483647")],
            ),
            (
                "message.timestamp.type",
                vec![
                    ("CreateTime", "CreateTime"),
                    ("LogAppendTime", "LogAppendTime"),
                ],
            ),
            (
                "compression.type",
                vec![
                    ("none", "none"),
                    ("gzip", "gzip"),
                    ("snappy", "snappy"),
                    ("lz4", "lz4"),
                    ("zstd", "zstd"),
                ],
            ),
            (
                "flush.messages",
                vec![("1", "1"), ("10000", "10000"), (MAX, MAX)],
            ),
            ("flush.ms", vec![("0", "0"), ("1000", "1000"), (MAX, MAX)]),
            ("file.delete.delay.ms", vec![("0", "0"), ("60000", "60000")]),
        ]
    }

    /// Per key: values that must be refused.
    fn bad_values() -> Vec<(&'static str, Vec<&'static str>)> {
        let not_numbers = ["", "abc", "1.5", "1e3", "0x10"];
        let with = |extra: &[&'static str]| -> Vec<&'static str> {
            not_numbers.iter().chain(extra).copied().collect()
        };
        vec![
            ("segment.bytes", with(&["13", "0", "-1", "2147483648"])),
            ("segment.ms", with(&["0", "-1", "9223372036854775808"])),
            ("segment.messages", with(&["0", "-1"])),
            ("segment.index.bytes", with(&["7", "0", "2147483648"])),
            ("index.interval.bytes", with(&["-1", "2147483648"])),
            ("retention.ms", with(&["-2"])),
            (
                "retention.bytes",
                with(&["9223372036854775808", "-9223372036854775809"]),
            ),
            (
                "cleanup.policy",
                vec![
                    "",
                    " ",
                    "Delete",
                    "compact,",
                    ",delete",
                    "delete,,compact",
                    "none",
                ],
            ),
            (
                "min.cleanable.dirty.ratio",
                vec!["", "abc", "-0.1", "1.01", "NaN", "inf", "-inf"],
            ),
            ("delete.retention.ms", with(&["-1"])),
            ("min.compaction.lag.ms", with(&["-1"])),
            ("max.message.bytes", with(&["-1", "2147483648"])),
            (
                "message.timestamp.type",
                vec!["", "createtime", "CreateTime2", "producer"],
            ),
            (
                "compression.type",
                vec!["", "NONE", "uncompressed", "producer", "brotli", "gzip,lz4"],
            ),
            ("flush.messages", with(&["0", "-1"])),
            ("flush.ms", with(&["-1"])),
            ("file.delete.delay.ms", with(&["-1"])),
        ]
    }

    #[test]
    fn keys_are_sorted_unique_and_all_have_defaults() {
        let mut sorted = LogConfig::KEYS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, LogConfig::KEYS);
        assert_eq!(LogConfig::KEYS.len(), 17);
        let config = LogConfig::default();
        for key in LogConfig::KEYS {
            assert!(config.get(key).is_some(), "{key} has no value");
        }
    }

    #[test]
    fn tables_cover_every_key() {
        let good: Vec<_> = good_values().into_iter().map(|(k, _)| k).collect();
        let bad: Vec<_> = bad_values().into_iter().map(|(k, _)| k).collect();
        for key in LogConfig::KEYS {
            assert!(good.contains(key), "{key} has no good values");
            assert!(bad.contains(key), "{key} has no bad values");
        }
    }

    #[test]
    fn good_values_are_accepted_and_read_back() {
        for (key, values) in good_values() {
            for (value, printed) in values {
                let mut config = LogConfig::default();
                config
                    .set(key, value)
                    .unwrap_or_else(|e| panic!("{key}={value:?} refused: {e}"));
                assert_eq!(config.get(key).as_deref(), Some(printed), "{key}={value:?}");
            }
        }
    }

    #[test]
    fn bad_values_are_refused_and_change_nothing() {
        for (key, values) in bad_values() {
            for value in values {
                let mut config = LogConfig::default();
                let err = config
                    .set(key, value)
                    .expect_err(&format!("{key}={value:?} accepted"));
                match err {
                    ConfigError::InvalidValue {
                        key: k,
                        value: v,
                        reason,
                    } => {
                        assert_eq!((k.as_str(), v.as_str()), (key, value));
                        assert!(!reason.is_empty());
                    }
                    other => panic!("{key}={value:?}: unexpected {other:?}"),
                }
                assert_eq!(
                    config,
                    LogConfig::default(),
                    "{key}={value:?} changed the config"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let mut config = LogConfig::default();
        for key in [
            "",
            "segment",
            "Segment.bytes",
            "partitions",
            "retention.hours",
            "producer",
        ] {
            assert_eq!(
                config.set(key, "1"),
                Err(ConfigError::UnknownKey {
                    key: key.to_string()
                })
            );
            assert_eq!(config.get(key), None);
        }
        assert_eq!(config, LogConfig::default());
    }

    #[test]
    fn defaults_print_as_kafka_does() {
        let expected = "\
cleanup.policy=delete
compression.type=none
delete.retention.ms=86400000
file.delete.delay.ms=60000
flush.messages=9223372036854775807
flush.ms=9223372036854775807
index.interval.bytes=4096
max.message.bytes=1048576
message.timestamp.type=CreateTime
min.cleanable.dirty.ratio=0.5
min.compaction.lag.ms=0
retention.bytes=-1
retention.ms=604800000
segment.bytes=1073741824
segment.index.bytes=10485760
segment.messages=9223372036854775807
segment.ms=604800000
";
        assert_eq!(LogConfig::default().to_properties(), expected);
    }

    #[test]
    fn unlimited_values_map_to_none() {
        let mut config = LogConfig::default();
        config.set("flush.messages", "5").unwrap();
        config.set("flush.ms", "7").unwrap();
        config.set("segment.messages", "9").unwrap();
        assert_eq!(config.flush_messages, Some(5));
        assert_eq!(config.flush_ms, Some(7));
        assert_eq!(config.segment_messages, Some(9));
        for key in ["flush.messages", "flush.ms", "segment.messages"] {
            config.set(key, MAX).unwrap();
        }
        assert_eq!(config.flush_messages, None);
        assert_eq!(config.flush_ms, None);
        assert_eq!(config.segment_messages, None);
    }

    #[test]
    fn typed_fields_follow_set() {
        let mut config = LogConfig::default();
        config.set("cleanup.policy", "compact").unwrap();
        assert_eq!(
            config.cleanup_policy,
            CleanupPolicy {
                delete: false,
                compact: true
            }
        );
        config.set("compression.type", "zstd").unwrap();
        assert_eq!(config.compression_type, Compression::Zstd);
        config
            .set("message.timestamp.type", "LogAppendTime")
            .unwrap();
        assert_eq!(config.message_timestamp_type, TimestampType::LogAppendTime);
        config.set("min.cleanable.dirty.ratio", "0.1").unwrap();
        assert_eq!(config.min_cleanable_dirty_ratio, 0.1);
        config.set("segment.bytes", "1024").unwrap();
        assert_eq!(config.segment_bytes, 1024);
    }

    #[test]
    fn to_properties_round_trips_through_parse_and_apply() {
        let mut config = LogConfig::default();
        for (key, values) in good_values() {
            let (value, _) = values.last().unwrap();
            config.set(key, value).unwrap();
        }
        let text = config.to_properties();
        assert_eq!(text.lines().count(), LogConfig::KEYS.len());
        for (line, key) in text.lines().zip(LogConfig::KEYS) {
            assert!(line.starts_with(&format!("{key}=")), "{line}");
        }
        let pairs = LogConfig::parse_properties(&text).unwrap();
        assert_eq!(LogConfig::default().apply(&pairs).unwrap(), config);
    }

    #[test]
    fn get_output_is_accepted_by_set() {
        let config = LogConfig::default();
        for key in LogConfig::KEYS {
            let mut copy = LogConfig::default();
            copy.set(key, &config.get(key).unwrap()).unwrap();
            assert_eq!(copy, config, "{key}");
        }
    }

    #[test]
    fn parse_properties_skips_comments_and_blank_lines() {
        let text = "# a comment\n\n  retention.ms = 1000 \r\n\t# indented comment\nsegment.bytes=2048\ncompression.type=\nkey=a=b\n";
        let pairs = LogConfig::parse_properties(text).unwrap();
        let expected = [
            ("retention.ms", "1000"),
            ("segment.bytes", "2048"),
            ("compression.type", ""),
            ("key", "a=b"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(pairs, expected);
        assert_eq!(LogConfig::parse_properties("").unwrap(), vec![]);
    }

    #[test]
    fn parse_properties_refuses_malformed_lines() {
        for (text, line) in [
            ("retention.ms", "retention.ms"),
            ("a=1\nnot a pair\n", "not a pair"),
            ("=5", "=5"),
            ("  = 5", "  = 5"),
        ] {
            assert_eq!(
                LogConfig::parse_properties(text),
                Err(ConfigError::MalformedLine {
                    line: line.to_string()
                })
            );
        }
    }

    #[test]
    fn apply_is_all_or_nothing() {
        let base = LogConfig::default();
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let bad_value = pairs(&[("retention.ms", "1000"), ("segment.bytes", "1")]);
        assert!(matches!(
            base.apply(&bad_value),
            Err(ConfigError::InvalidValue { key, .. }) if key == "segment.bytes"
        ));
        let unknown = pairs(&[("retention.ms", "1000"), ("no.such.key", "1")]);
        assert!(matches!(
            base.apply(&unknown),
            Err(ConfigError::UnknownKey { .. })
        ));
        assert_eq!(base, LogConfig::default());

        let good = pairs(&[
            ("retention.ms", "1000"),
            ("retention.ms", "2000"),
            ("flush.ms", "5"),
        ]);
        let applied = base.apply(&good).unwrap();
        assert_eq!(applied.retention_ms, 2000);
        assert_eq!(applied.flush_ms, Some(5));
        assert_eq!(base.apply(&[]).unwrap(), base);
    }
}
