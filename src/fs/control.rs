//! The `control` files: command parsing and the record of recent outcomes shown on read.
//!
//! One command per `write()`: `roll`, `flush`, `retention`, `compact`, `delete-records <offset>`
//! (a trailing newline and surrounding blanks are ignored). Which commands a `control` file
//! takes depends on where it is ([`Scope`]); anything else is refused with `InvalidInput`.

use std::collections::VecDeque;

use crate::fs::error::{FsError, FsResult};
use crate::fs::time::format_rfc3339_ms;

/// Where a `control` file lives, which decides the commands it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The mount root: every topic.
    Root,
    /// A topic: all its partitions.
    Topic,
    /// One partition.
    Partition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Roll,
    Flush,
    Retention,
    Compact,
    DeleteRecords(i64),
}

impl Command {
    pub fn name(self) -> String {
        match self {
            Command::Roll => "roll".into(),
            Command::Flush => "flush".into(),
            Command::Retention => "retention".into(),
            Command::Compact => "compact".into(),
            Command::DeleteRecords(o) => format!("delete-records {o}"),
        }
    }
}

/// The usage line shown when reading a `control` file of `scope`.
pub fn usage(scope: Scope) -> &'static str {
    match scope {
        Scope::Root => "flush | retention | compact",
        Scope::Topic => "roll | flush | retention | compact",
        Scope::Partition => "roll | flush | retention | compact | delete-records <offset>",
    }
}

/// Parses the content of one `write()` to a `control` file of `scope`.
pub fn parse_command(data: &[u8], scope: Scope) -> FsResult<Command> {
    let text =
        std::str::from_utf8(data).map_err(|_| FsError::invalid("control command is not UTF-8"))?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let Some(line) = lines.next() else {
        return Err(FsError::invalid(format!(
            "empty control command; expected one of: {}",
            usage(scope)
        )));
    };
    if lines.next().is_some() {
        return Err(FsError::invalid("one control command per write"));
    }
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    let command = match (verb, args.as_slice()) {
        ("roll", []) => Command::Roll,
        ("flush", []) => Command::Flush,
        ("retention", []) => Command::Retention,
        ("compact", []) => Command::Compact,
        ("delete-records", [offset]) => {
            let offset = offset
                .parse::<i64>()
                .ok()
                .filter(|o| *o >= 0)
                .ok_or_else(|| {
                    FsError::invalid(format!(
                        "delete-records needs a non-negative offset, got {offset:?}"
                    ))
                })?;
            Command::DeleteRecords(offset)
        }
        _ => {
            return Err(FsError::invalid(format!(
                "unknown control command {line:?}; expected one of: {}",
                usage(scope)
            )))
        }
    };
    let allowed = match (scope, command) {
        (_, Command::Flush | Command::Retention | Command::Compact) => true,
        (Scope::Topic | Scope::Partition, Command::Roll) => true,
        (Scope::Partition, Command::DeleteRecords(_)) => true,
        (Scope::Root, Command::Roll) | (Scope::Root | Scope::Topic, Command::DeleteRecords(_)) => {
            false
        }
    };
    if !allowed {
        return Err(FsError::invalid(format!(
            "{verb:?} is not accepted here; expected one of: {}",
            usage(scope)
        )));
    }
    Ok(command)
}

/// One executed command and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub time_ms: i64,
    pub command: String,
    /// `Ok(detail)` or `Err(reason)`.
    pub result: Result<String, String>,
}

/// The last few outcomes of one `control` file, oldest first.
#[derive(Debug, Default)]
pub struct OutcomeLog {
    entries: VecDeque<Outcome>,
}

impl OutcomeLog {
    /// How many outcomes a `control` file remembers.
    pub const CAPACITY: usize = 16;

    pub fn push(&mut self, outcome: Outcome) {
        if self.entries.len() == Self::CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back(outcome);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Outcome> {
        self.entries.iter()
    }
}

/// The text of a `control` file: usage, then recent outcomes, newest last.
pub fn render(scope: Scope, log: Option<&OutcomeLog>) -> String {
    let mut text = format!("# commands: {}\n# recent:\n", usage(scope));
    for outcome in log.into_iter().flat_map(OutcomeLog::iter) {
        let time = format_rfc3339_ms(outcome.time_ms);
        match &outcome.result {
            Ok(detail) if detail.is_empty() => {
                text.push_str(&format!("{time} {}: ok\n", outcome.command))
            }
            Ok(detail) => text.push_str(&format!("{time} {}: ok ({detail})\n", outcome.command)),
            Err(reason) => text.push_str(&format!("{time} {}: error: {reason}\n", outcome.command)),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_per_scope() {
        assert_eq!(
            parse_command(b"roll\n", Scope::Partition).unwrap(),
            Command::Roll
        );
        assert_eq!(
            parse_command(b"  flush ", Scope::Root).unwrap(),
            Command::Flush
        );
        assert_eq!(
            parse_command(b"delete-records 42\n", Scope::Partition).unwrap(),
            Command::DeleteRecords(42)
        );
        assert_eq!(
            parse_command(b"compact", Scope::Topic).unwrap(),
            Command::Compact
        );
        assert!(parse_command(b"roll", Scope::Root).is_err());
        assert!(parse_command(b"delete-records 4", Scope::Topic).is_err());
    }

    #[test]
    fn refuses_unknown_or_malformed_commands() {
        for bad in [
            &b""[..],
            b"\n",
            b"rol",
            b"roll now",
            b"delete-records",
            b"delete-records x",
            b"delete-records -1",
            b"delete-records 1 2",
            b"roll\nflush\n",
            b"\xff",
        ] {
            assert!(
                matches!(
                    parse_command(bad, Scope::Partition),
                    Err(FsError::InvalidInput(_))
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn renders_recent_outcomes_newest_last() {
        let mut log = OutcomeLog::default();
        for i in 0..(OutcomeLog::CAPACITY + 2) {
            log.push(Outcome {
                time_ms: i as i64,
                command: format!("c{i}"),
                result: if i % 2 == 0 {
                    Ok(String::new())
                } else {
                    Err("boom".into())
                },
            });
        }
        let text = render(Scope::Partition, Some(&log));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("# commands: {}", usage(Scope::Partition)));
        assert_eq!(lines.len(), 2 + OutcomeLog::CAPACITY);
        assert!(lines[2].ends_with("c2: ok"));
        assert!(lines.last().unwrap().ends_with("c17: error: boom"));
    }
}
