//! What each inode of the mount is, and the rules that turn names into nodes.
//!
//! A [`Node`] names a file by its place in the interface, never by a path on disk: the topic
//! name (validated by the log manager), the partition number (canonical decimal below the
//! count), offsets (canonical decimal `i64`) and segment names (only those the log lists). No
//! name a user can type reaches outside the data directory.

use std::sync::Arc;

/// A topic's partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionId {
    pub topic: Arc<str>,
    pub partition: u32,
}

impl std::fmt::Display for PartitionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// The fixed files of a topic directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicFile {
    Config,
    Partitions,
    Control,
}

/// The fixed files of a partition directory (views and subdirectories aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionFile {
    Append,
    AppendJsonl,
    Stats,
    Control,
}

/// The subdirectories of a partition directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionDir {
    From,
    /// `follow/`: streams that wait for new records (see [`crate::fs::follow`]).
    Follow,
    Time,
    Segments,
    Keys,
    /// `groups/`: committed offsets of consumer groups.
    Groups,
    /// `consume/`: read what a group has not consumed yet.
    Consume,
}

/// How a view renders each record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViewKind {
    /// The value bytes, then `\n`.
    Log,
    /// The record as one JSON object, then `\n`.
    Jsonl,
}

/// How a single record file renders its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordFormat {
    /// `<offset>`: the exact value bytes.
    Value,
    /// `<offset>.json`: the record as JSON.
    Json,
}

/// One view file: `log`, `log.jsonl`, `from/<offset>` or `from/<offset>.jsonl`.
///
/// `generation` is the log's view generation when the view was looked up
/// (`Log::view_generation`): it changes whenever records below the log end are removed
/// (`delete-records`, retention, compaction), which gives new lookups a new inode, while
/// handles opened before keep theirs and so keep their byte coordinates. `start_offset` is
/// the log start offset of that generation: where `log` begins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewId {
    pub partition: PartitionId,
    pub kind: ViewKind,
    pub generation: u64,
    pub start_offset: i64,
    /// `Some(offset)` for `from/<offset>`: the view starts at that record.
    pub from: Option<i64>,
}

/// Every kind of inode in the mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    Root,
    Readme,
    RootControl,
    Topic(Arc<str>),
    TopicFile(Arc<str>, TopicFile),
    Partition(PartitionId),
    PartitionFile(PartitionId, PartitionFile),
    PartitionDir(PartitionId, PartitionDir),
    Record(PartitionId, i64, RecordFormat),
    View(ViewId),
    /// `time/<T>`, keyed by the parsed timestamp in ms.
    Time(PartitionId, i64),
    /// A raw file of `segments/`, by its file name.
    Segment(PartitionId, Arc<str>),
    /// `keys/<key>`: the latest value of a key whose bytes are a valid file name
    /// (see [`is_key_file_name`]).
    Key(PartitionId, Arc<str>),
    /// `groups/<group>`: the group's committed offset (the name follows topic naming rules).
    Group(PartitionId, Arc<str>),
    /// `consume/<group>`: the records after the group's committed offset.
    Consume(PartitionId, Arc<str>),
    /// `follow/<offset>` or `follow/end` (and `.jsonl`): a stream, see [`crate::fs::follow`].
    Follow(PartitionId, FollowFrom, ViewKind),
}

impl Node {
    /// The topic this node belongs to, if any.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Node::Root | Node::Readme | Node::RootControl => None,
            Node::Topic(t) | Node::TopicFile(t, _) => Some(t),
            Node::Partition(p)
            | Node::PartitionFile(p, _)
            | Node::PartitionDir(p, _)
            | Node::Record(p, _, _)
            | Node::Time(p, _)
            | Node::Segment(p, _)
            | Node::Key(p, _)
            | Node::Group(p, _)
            | Node::Consume(p, _)
            | Node::Follow(p, _, _) => Some(&p.topic),
            Node::View(v) => Some(&v.partition.topic),
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(
            self,
            Node::Root | Node::Topic(_) | Node::Partition(_) | Node::PartitionDir(_, _)
        )
    }

    /// A short human name for logs.
    pub fn describe(&self) -> String {
        match self {
            Node::Root => "/".into(),
            Node::Readme => "/README".into(),
            Node::RootControl => "/control".into(),
            Node::Topic(t) => format!("/{t}"),
            Node::TopicFile(t, f) => format!("/{t}/{}", topic_file_name(*f)),
            Node::Partition(p) => format!("/{p}"),
            Node::PartitionFile(p, f) => format!("/{p}/{}", partition_file_name(*f)),
            Node::PartitionDir(p, d) => format!("/{p}/{}", partition_dir_name(*d)),
            Node::Record(p, o, RecordFormat::Value) => format!("/{p}/{o}"),
            Node::Record(p, o, RecordFormat::Json) => format!("/{p}/{o}.json"),
            Node::View(v) => {
                let ext = match v.kind {
                    ViewKind::Log => "",
                    ViewKind::Jsonl => ".jsonl",
                };
                match v.from {
                    None => format!(
                        "/{}/log{ext} (generation {}, start offset {})",
                        v.partition, v.generation, v.start_offset
                    ),
                    Some(o) => format!("/{}/from/{o}{ext}", v.partition),
                }
            }
            Node::Time(p, t) => format!("/{p}/time/{t}"),
            Node::Segment(p, name) => format!("/{p}/segments/{name}"),
            Node::Key(p, key) => format!("/{p}/keys/{key}"),
            Node::Group(p, group) => format!("/{p}/groups/{group}"),
            Node::Consume(p, group) => format!("/{p}/consume/{group}"),
            Node::Follow(p, from, kind) => {
                let ext = match kind {
                    ViewKind::Log => "",
                    ViewKind::Jsonl => ".jsonl",
                };
                match from {
                    FollowFrom::Offset(o) => format!("/{p}/follow/{o}{ext}"),
                    FollowFrom::End => format!("/{p}/follow/end{ext}"),
                }
            }
        }
    }
}

pub const README: &str = "README";
pub const CONTROL: &str = "control";
pub const CONFIG: &str = "config";
pub const PARTITIONS: &str = "partitions";
pub const APPEND: &str = "append";
pub const APPEND_JSONL: &str = "append.jsonl";
pub const STATS: &str = "stats";
pub const LOG: &str = "log";
pub const LOG_JSONL: &str = "log.jsonl";
pub const FROM: &str = "from";
pub const FOLLOW: &str = "follow";
/// `follow/end`: new records only.
pub const FOLLOW_END: &str = "end";
pub const TIME: &str = "time";
pub const SEGMENTS: &str = "segments";
pub const KEYS: &str = "keys";
pub const GROUPS: &str = "groups";
pub const CONSUME: &str = "consume";

pub fn topic_file_name(f: TopicFile) -> &'static str {
    match f {
        TopicFile::Config => CONFIG,
        TopicFile::Partitions => PARTITIONS,
        TopicFile::Control => CONTROL,
    }
}

pub fn partition_file_name(f: PartitionFile) -> &'static str {
    match f {
        PartitionFile::Append => APPEND,
        PartitionFile::AppendJsonl => APPEND_JSONL,
        PartitionFile::Stats => STATS,
        PartitionFile::Control => CONTROL,
    }
}

pub fn partition_dir_name(d: PartitionDir) -> &'static str {
    match d {
        PartitionDir::From => FROM,
        PartitionDir::Follow => FOLLOW,
        PartitionDir::Time => TIME,
        PartitionDir::Segments => SEGMENTS,
        PartitionDir::Keys => KEYS,
        PartitionDir::Groups => GROUPS,
        PartitionDir::Consume => CONSUME,
    }
}

pub fn parse_topic_file(name: &str) -> Option<TopicFile> {
    Some(match name {
        CONFIG => TopicFile::Config,
        PARTITIONS => TopicFile::Partitions,
        CONTROL => TopicFile::Control,
        _ => return None,
    })
}

/// What a name inside a partition directory denotes, before checking it against the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionEntry {
    File(PartitionFile),
    Dir(PartitionDir),
    View(ViewKind),
    Record(i64, RecordFormat),
}

pub fn parse_partition_entry(name: &str) -> Option<PartitionEntry> {
    Some(match name {
        APPEND => PartitionEntry::File(PartitionFile::Append),
        APPEND_JSONL => PartitionEntry::File(PartitionFile::AppendJsonl),
        STATS => PartitionEntry::File(PartitionFile::Stats),
        CONTROL => PartitionEntry::File(PartitionFile::Control),
        LOG => PartitionEntry::View(ViewKind::Log),
        LOG_JSONL => PartitionEntry::View(ViewKind::Jsonl),
        FROM => PartitionEntry::Dir(PartitionDir::From),
        FOLLOW => PartitionEntry::Dir(PartitionDir::Follow),
        TIME => PartitionEntry::Dir(PartitionDir::Time),
        SEGMENTS => PartitionEntry::Dir(PartitionDir::Segments),
        KEYS => PartitionEntry::Dir(PartitionDir::Keys),
        GROUPS => PartitionEntry::Dir(PartitionDir::Groups),
        CONSUME => PartitionEntry::Dir(PartitionDir::Consume),
        _ => match name.strip_suffix(".json") {
            Some(offset) => PartitionEntry::Record(parse_offset(offset)?, RecordFormat::Json),
            None => PartitionEntry::Record(parse_offset(name)?, RecordFormat::Value),
        },
    })
}

/// Where a `follow/` stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FollowFrom {
    /// `follow/<offset>`: that offset (or the log start, if retention passed it).
    Offset(i64),
    /// `follow/end`: the log end when the file is opened: new records only.
    End,
}

/// `follow/<offset>`, `follow/end`, and their `.jsonl` forms.
pub fn parse_follow_entry(name: &str) -> Option<(FollowFrom, ViewKind)> {
    let (start, kind) = match name.strip_suffix(".jsonl") {
        Some(start) => (start, ViewKind::Jsonl),
        None => (name, ViewKind::Log),
    };
    let from = match start {
        FOLLOW_END => FollowFrom::End,
        offset => FollowFrom::Offset(parse_offset(offset)?),
    };
    Some((from, kind))
}

/// `from/<offset>` or `from/<offset>.jsonl`.
pub fn parse_from_entry(name: &str) -> Option<(i64, ViewKind)> {
    match name.strip_suffix(".jsonl") {
        Some(offset) => Some((parse_offset(offset)?, ViewKind::Jsonl)),
        None => Some((parse_offset(name)?, ViewKind::Log)),
    }
}

/// Canonical non-negative decimal `i64`: digits only, no sign, no leading zeros (except "0").
/// One spelling per number, so one inode per record.
pub fn parse_canonical_i64(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.is_empty() || b.len() > 19 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if b.len() > 1 && b[0] == b'0' {
        return None;
    }
    text.parse().ok()
}

/// An offset as a file name.
pub fn parse_offset(text: &str) -> Option<i64> {
    parse_canonical_i64(text)
}

/// A partition number as a directory name: canonical decimal below `count`.
pub fn parse_partition(text: &str, count: u32) -> Option<u32> {
    let n = parse_canonical_i64(text)?;
    u32::try_from(n).ok().filter(|p| *p < count)
}

/// Longest file name Linux allows (`NAME_MAX`).
pub const MAX_FILE_NAME_BYTES: usize = 255;

/// Whether a record key can appear as a file of `keys/`: UTF-8, non-empty, at most
/// [`MAX_FILE_NAME_BYTES`] bytes, no `/` or NUL, not `.` or `..`. Other keys are reachable
/// through `append.jsonl` and `log.jsonl` only.
pub fn is_key_file_name(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= MAX_FILE_NAME_BYTES
        && key != b"."
        && key != b".."
        && !key.iter().any(|b| *b == b'/' || *b == 0)
        && std::str::from_utf8(key).is_ok()
}

/// Segment file names the log can list: 20-digit base offset and one of the three extensions.
pub fn is_segment_file_name(name: &str) -> bool {
    let Some((base, ext)) = name.split_once('.') else {
        return false;
    };
    base.len() == 20
        && base.bytes().all(|b| b.is_ascii_digit())
        && matches!(ext, "log" | "index" | "timeindex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_canonical_decimal() {
        assert_eq!(parse_offset("0"), Some(0));
        assert_eq!(parse_offset("42"), Some(42));
        assert_eq!(parse_offset("9223372036854775807"), Some(i64::MAX));
        for bad in [
            "",
            "00",
            "007",
            "+1",
            "-1",
            "1e3",
            " 1",
            "1 ",
            "9223372036854775808",
            "x",
        ] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn partitions_must_be_below_the_count() {
        assert_eq!(parse_partition("0", 1), Some(0));
        assert_eq!(parse_partition("2", 3), Some(2));
        assert_eq!(parse_partition("3", 3), None);
        assert_eq!(parse_partition("01", 3), None);
        assert_eq!(parse_partition("..", 3), None);
        assert_eq!(parse_partition("4294967296", u32::MAX), None);
    }

    #[test]
    fn partition_entries_parse() {
        assert_eq!(
            parse_partition_entry("append"),
            Some(PartitionEntry::File(PartitionFile::Append))
        );
        assert_eq!(
            parse_partition_entry("log.jsonl"),
            Some(PartitionEntry::View(ViewKind::Jsonl))
        );
        assert_eq!(
            parse_partition_entry("17"),
            Some(PartitionEntry::Record(17, RecordFormat::Value))
        );
        assert_eq!(
            parse_partition_entry("17.json"),
            Some(PartitionEntry::Record(17, RecordFormat::Json))
        );
        assert_eq!(parse_partition_entry("17.jsonl"), None);
        assert_eq!(parse_partition_entry("../x"), None);
        assert_eq!(
            parse_partition_entry("keys"),
            Some(PartitionEntry::Dir(PartitionDir::Keys))
        );
        assert_eq!(parse_from_entry("5.jsonl"), Some((5, ViewKind::Jsonl)));
        assert_eq!(parse_from_entry("5"), Some((5, ViewKind::Log)));
        assert_eq!(parse_from_entry("5.json"), None);
    }

    #[test]
    fn key_file_names_are_what_linux_accepts_as_names() {
        for good in [
            &b"k"[..],
            b"user:42",
            b"a b",
            "ü".as_bytes(),
            b"...",
            &[b'x'; 255],
        ] {
            assert!(
                is_key_file_name(good),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/b",
            b"a\0b",
            b"\xff",
            &[b'x'; 256],
        ] {
            assert!(!is_key_file_name(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn segment_names_are_strict() {
        assert!(is_segment_file_name("00000000000000000000.log"));
        assert!(is_segment_file_name("00000000000000000042.timeindex"));
        assert!(!is_segment_file_name("00000000000000000000.log.deleted"));
        assert!(!is_segment_file_name("../../etc/passwd"));
        assert!(!is_segment_file_name("0.log"));
    }
}
