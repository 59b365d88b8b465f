//! Turning bytes written to `append` / `append.jsonl` into records.
//!
//! Each `write()` contributes its complete lines as one batch; the unterminated remainder is
//! kept per open file ([`PendingLine`]) and joined with the next write, or appended as a record
//! of its own on close. When a write fails (bad JSON, a record too large), nothing of it is
//! appended and the pending remainder is discarded too, so the file continues from a clean
//! line boundary. A write whose unterminated remainder (joined with the pending tail when it
//! has no newline) is longer than `max.message.bytes` fails the same way, in that write: such a
//! line could never become a record, so its complete lines are not appended either.

use std::borrow::Cow;

use crate::fs::error::{FsError, FsResult};
use crate::fs::json::parse_record_line;
use crate::storage::{NewRecord, StorageError};

/// How lines of an append file become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFormat {
    /// One record per line; the line (without `\n`) is the value.
    Lines,
    /// One record per JSON line; blank lines are skipped.
    Jsonl,
}

/// The unterminated tail of an open append file.
#[derive(Debug, Default)]
pub struct PendingLine {
    bytes: Vec<u8>,
}

impl PendingLine {
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn clear(&mut self) {
        self.bytes = Vec::new();
    }

    /// Splits one write into the records of its complete lines (joined with the pending tail)
    /// and the new tail. `RecordTooLarge` when the new tail would be longer than
    /// `max_line_bytes` (the topic's `max.message.bytes`). Nothing changes on error; the caller
    /// commits with [`Self::commit`] once the records are appended. Lines of
    /// [`AppendFormat::Lines`] stay slices of `data` (only a line joined with the pending tail is
    /// copied).
    pub fn split<'d>(
        &self,
        data: &'d [u8],
        format: AppendFormat,
        max_line_bytes: usize,
    ) -> FsResult<Split<'d>> {
        let last_newline = memchr::memrchr(b'\n', data);
        let tail_bytes = match last_newline {
            Some(last_newline) => data.len() - last_newline - 1,
            None => self.bytes.len() + data.len(),
        };
        if tail_bytes > max_line_bytes {
            return Err(StorageError::RecordTooLarge {
                size: tail_bytes,
                max_message_bytes: max_line_bytes,
            }
            .into());
        }
        let mut split = Split {
            joined: None,
            values: Vec::new(),
            records: Vec::new(),
            tail_start: 0,
        };
        let Some(last_newline) = last_newline else {
            return Ok(split);
        };
        let complete = &data[..=last_newline];
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', complete) {
            let piece = &data[start..i];
            let joined =
                (start == 0 && !self.bytes.is_empty()).then(|| [&self.bytes, piece].concat());
            match format {
                AppendFormat::Lines => match joined {
                    Some(line) => split.joined = Some(line),
                    None => split.values.push(piece),
                },
                AppendFormat::Jsonl => {
                    let line = joined.unwrap_or_else(|| piece.to_vec());
                    if let Some(record) = line_to_record(line, format)? {
                        split.records.push(record);
                    }
                }
            }
            start = i + 1;
        }
        split.tail_start = last_newline + 1;
        Ok(split)
    }

    /// Makes the tail of `data` (from `split.tail_start`) the pending line.
    pub fn commit(&mut self, data: &[u8], split: &Split) {
        if split.tail_start == 0 {
            self.bytes.extend_from_slice(data);
        } else {
            self.bytes = data[split.tail_start..].to_vec();
        }
    }

    /// The pending line as a record for close, emptying it.
    pub fn take_record(&mut self, format: AppendFormat) -> FsResult<Option<NewRecord>> {
        let line = std::mem::take(&mut self.bytes);
        if line.is_empty() {
            return Ok(None);
        }
        line_to_record(line, format)
    }
}

/// The records of one write and where its unterminated tail starts.
#[derive(Debug)]
pub struct Split<'d> {
    /// [`AppendFormat::Lines`]: the first line, when it continues the pending tail.
    joined: Option<Vec<u8>>,
    /// [`AppendFormat::Lines`]: the other complete lines, in order.
    values: Vec<&'d [u8]>,
    /// [`AppendFormat::Jsonl`]: the parsed records.
    pub records: Vec<NewRecord>,
    pub tail_start: usize,
}

impl<'d> Split<'d> {
    /// The values of the complete lines of [`AppendFormat::Lines`], in order (a copy of the
    /// list only when the first line continues the pending tail).
    pub fn values(&self) -> Cow<'_, [&[u8]]> {
        match self.joined.as_deref() {
            None => Cow::Borrowed(&self.values),
            Some(joined) => Cow::Owned(
                std::iter::once(joined)
                    .chain(self.values.iter().copied())
                    .collect(),
            ),
        }
    }

    /// How many records the write holds.
    pub fn len(&self) -> usize {
        usize::from(self.joined.is_some()) + self.values.len() + self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn line_to_record(line: Vec<u8>, format: AppendFormat) -> FsResult<Option<NewRecord>> {
    match format {
        AppendFormat::Lines => Ok(Some(NewRecord::value(line))),
        AppendFormat::Jsonl => {
            if line.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            parse_record_line(&line)
                .map(Some)
                .map_err(|reason| FsError::invalid(format!("append.jsonl: {reason}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1024;

    fn values(split: &Split) -> Vec<String> {
        split
            .values()
            .iter()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn complete_lines_and_tail() {
        let mut p = PendingLine::default();
        let data = b"a\nbb\ncc";
        let s = p.split(data, AppendFormat::Lines, LIMIT).unwrap();
        assert_eq!(values(&s), ["a", "bb"]);
        p.commit(data, &s);
        assert_eq!(p.len(), 2);
        let data = b"c\n\nd";
        let s = p.split(data, AppendFormat::Lines, LIMIT).unwrap();
        assert_eq!(values(&s), ["ccc", ""]);
        p.commit(data, &s);
        let tail = p.take_record(AppendFormat::Lines).unwrap().unwrap();
        assert_eq!(tail.value.unwrap(), b"d");
        assert!(p.is_empty());
        assert!(p.take_record(AppendFormat::Lines).unwrap().is_none());
    }

    #[test]
    fn partial_writes_accumulate() {
        let mut p = PendingLine::default();
        for piece in [&b"he"[..], b"ll", b"o"] {
            let s = p.split(piece, AppendFormat::Lines, LIMIT).unwrap();
            assert!(s.is_empty());
            p.commit(piece, &s);
        }
        let s = p.split(b"\r\n", AppendFormat::Lines, LIMIT).unwrap();
        assert_eq!(values(&s), ["hello\r"], "only the newline is stripped");
    }

    #[test]
    fn jsonl_lines_parse_and_bad_lines_change_nothing() {
        let mut p = PendingLine::default();
        let first = br#"{"value":"#;
        let s = p.split(first, AppendFormat::Jsonl, LIMIT).unwrap();
        p.commit(first, &s);
        let data = b"\"v\"}\n\n  \n{\"value\":null,\"key\":\"k\"}\n";
        let s = p.split(data, AppendFormat::Jsonl, LIMIT).unwrap();
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.records[1].value, None);
        let bad = b"{\"value\":\"ok\"}\n{nope}\n";
        assert!(matches!(
            p.split(bad, AppendFormat::Jsonl, LIMIT),
            Err(FsError::InvalidInput(_))
        ));
        assert_eq!(p.len(), first.len(), "pending unchanged by a failed split");
    }

    #[test]
    fn a_long_partial_line_fails_the_write_that_carries_it() {
        let mut p = PendingLine::default();
        // `print()` of a long line: one write of a short line and the start of the long one.
        let data = [&b"ok-line\n"[..], &[b'x'; 20]].concat();
        let err = p.split(&data, AppendFormat::Lines, 16).unwrap_err();
        assert!(
            matches!(
                err,
                FsError::Storage(StorageError::RecordTooLarge { size: 20, .. })
            ),
            "{err:?}"
        );
        assert!(p.is_empty(), "a failed split leaves the pending line alone");
        // A tail exactly at the limit is fine, one byte more is not.
        let data = [&b"ok\n"[..], &[b'x'; 16]].concat();
        let s = p.split(&data, AppendFormat::Lines, 16).unwrap();
        p.commit(&data, &s);
        assert_eq!(p.len(), 16);
        assert!(p.split(b"y", AppendFormat::Lines, 16).is_err());
        // A newline in the same write ends the pending line; its length counts there.
        let s = p.split(b"\n", AppendFormat::Lines, 16).unwrap();
        assert_eq!(s.len(), 1);
    }
}
