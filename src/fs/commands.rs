//! Writes to `control`, `config` and `partitions`, and the command runner behind `control`.
//!
//! A command runs synchronously in the writing thread: the `write()` returns when it finished
//! on every partition it concerns. At topic and root level it runs on all of them even when one
//! fails, and the write then fails with the first error's errno. What each partition's run did
//! (segments deleted or cleaned, bytes reclaimed, records removed, duration) is the outcome
//! detail shown when reading the `control` file; `stats` shows each partition's last retention
//! and compaction.
//!
//! `compact` on one partition of a topic whose `cleanup.policy` lacks `compact` is refused by the
//! engine (EINVAL); at topic and root level such topics are skipped, and the outcome says so.

use std::sync::Arc;

use log::{info, warn};

use crate::fs::control::{self, Command, Outcome};
use crate::fs::error::{FsError, FsResult};
use crate::fs::filesystem::{lock, LmqFs};
use crate::fs::node::{Node, PartitionFile, PartitionId, TopicFile};
use crate::storage::{now_ms, LogConfig, StorageError};

/// What a command did, partition by partition.
#[derive(Debug, Default)]
pub struct CommandReport {
    /// One entry per partition run or topic skipped, in the order they happened.
    pub lines: Vec<String>,
    /// The first failure, which the `write()` returns.
    pub first_error: Option<FsError>,
}

impl CommandReport {
    fn record(&mut self, what: &str, result: FsResult<String>) {
        match result {
            Ok(detail) if detail.is_empty() => self.lines.push(format!("{what}: ok")),
            Ok(detail) => self.lines.push(format!("{what}: {detail}")),
            Err(e) => {
                self.lines.push(format!("{what}: error: {e}"));
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// The outcome shown when reading `control`.
    fn summary(&self) -> String {
        self.lines.join("; ")
    }
}

impl LmqFs {
    /// A `write()` to `config`, `partitions` or a `control` file.
    pub(super) fn apply_write(&self, node: &Node, data: &[u8]) -> FsResult<()> {
        match node {
            Node::TopicFile(t, TopicFile::Config) => {
                let text = std::str::from_utf8(data)
                    .map_err(|_| FsError::invalid("config must be UTF-8 key=value lines"))?;
                let pairs = LogConfig::parse_properties(text).map_err(StorageError::from)?;
                if pairs.is_empty() {
                    return Ok(());
                }
                self.storage().alter_config(t, &pairs)?;
                info!("topic {t:?}: config changed: {pairs:?}");
                Ok(())
            }
            Node::TopicFile(t, TopicFile::Partitions) => {
                let text = std::str::from_utf8(data).unwrap_or("").trim();
                let requested = text.parse::<u32>().map_err(|_| {
                    FsError::invalid(format!(
                        "partitions: expected a partition count, got {text:?}"
                    ))
                })?;
                let current = self.topic_exists(t)?;
                if requested != current {
                    self.storage().create_partitions(t, requested)?;
                    info!("topic {t:?}: partitions {current} -> {requested}");
                }
                Ok(())
            }
            Node::RootControl
            | Node::TopicFile(_, TopicFile::Control)
            | Node::PartitionFile(_, PartitionFile::Control) => {
                let (key, scope) = Self::outcome_scope(node).expect("a control node");
                let command = control::parse_command(data, scope)?;
                let time_ms = now_ms();
                let report = self.run_command(node, command);
                let summary = report.summary();
                let result = match &report.first_error {
                    None => Ok(summary),
                    Some(e) if report.lines.len() <= 1 => Err(e.to_string()),
                    Some(_) => Err(summary),
                };
                match &result {
                    Ok(detail) => info!("{}: {}: {detail}", node.describe(), command.name()),
                    Err(reason) => {
                        warn!("{}: {} failed: {reason}", node.describe(), command.name())
                    }
                }
                lock(&self.outcomes).entry(key).or_default().push(Outcome {
                    time_ms,
                    command: command.name(),
                    result,
                });
                match report.first_error {
                    Some(e) => Err(e),
                    None => Ok(()),
                }
            }
            Node::Group(p, group) => self.write_group(p, group, data),
            _ => Err(FsError::BadHandle(format!(
                "{} is not writable",
                node.describe()
            ))),
        }
    }

    /// Runs `command` for the `control` file `node` (already checked to accept it).
    pub(super) fn run_command(&self, node: &Node, command: Command) -> CommandReport {
        let mut report = CommandReport::default();
        match node {
            Node::RootControl => match command {
                // One call: the manager flushes every partition of every topic.
                Command::Flush => {
                    if let Err(e) = self.storage().flush_all() {
                        report.record("all topics", Err(e.into()));
                    }
                }
                _ => {
                    for topic in self.storage().topics() {
                        self.run_on_topic(&Arc::from(topic.as_str()), command, &mut report);
                    }
                    if report.lines.is_empty() {
                        report.lines.push("no topics".into());
                    }
                }
            },
            Node::TopicFile(t, TopicFile::Control) => self.run_on_topic(t, command, &mut report),
            Node::PartitionFile(p, PartitionFile::Control) => {
                let result = self.run_on_partition(p, command);
                match result {
                    Ok(detail) => report.lines.push(detail),
                    Err(e) => {
                        report.lines.push(format!("error: {e}"));
                        report.first_error = Some(e);
                    }
                }
            }
            _ => report.record(
                &node.describe(),
                Err(FsError::invalid(format!(
                    "{} is not accepted by {}",
                    command.name(),
                    node.describe()
                ))),
            ),
        }
        report
    }

    /// Runs `command` on every partition of `topic`; `compact` skips topics that are not
    /// compacted.
    fn run_on_topic(&self, topic: &Arc<str>, command: Command, report: &mut CommandReport) {
        let count = match self.topic_exists(topic) {
            Ok(count) => count,
            Err(e) => return report.record(topic, Err(e)),
        };
        if command == Command::Compact {
            match self.storage().describe_config(topic) {
                Ok(config) if !config.cleanup_policy.compact => {
                    let policy = config.get("cleanup.policy").unwrap_or_default();
                    report
                        .lines
                        .push(format!("{topic}: skipped (cleanup.policy={policy})"));
                    return;
                }
                Ok(_) => {}
                Err(e) => return report.record(topic, Err(e.into())),
            }
        }
        for partition in 0..count {
            let p = PartitionId {
                topic: topic.clone(),
                partition,
            };
            let result = self.run_on_partition(&p, command);
            report.record(&p.to_string(), result);
        }
    }

    /// Runs `command` on one partition; the outcome's detail.
    fn run_on_partition(&self, p: &PartitionId, command: Command) -> FsResult<String> {
        let log = self.partition_log(p)?;
        match command {
            Command::Roll => {
                log.roll()?;
                Ok(format!(
                    "active segment base offset {}",
                    log.log_end_offset()
                ))
            }
            Command::Flush => {
                log.flush()?;
                Ok(format!("recovery point {}", log.flush()?))
            }
            Command::Retention => Ok(self.partition_log(p)?.retention()?.to_string()),
            Command::Compact => Ok(self.partition_log(p)?.compact()?.to_string()),
            Command::DeleteRecords(offset) => {
                let start = log.delete_records(offset)?;
                Ok(format!("log start offset {start}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_keeps_every_line_and_the_first_error() {
        let mut report = CommandReport::default();
        report.record("t/0", Ok("2 segments deleted".into()));
        report.record("t/1", Err(FsError::invalid("first")));
        report.record("t/2", Err(FsError::invalid("second")));
        report.record("t/3", Ok(String::new()));
        assert_eq!(
            report.summary(),
            "t/0: 2 segments deleted; t/1: error: invalid input: first; \
             t/2: error: invalid input: second; t/3: ok"
        );
        assert!(matches!(report.first_error, Some(FsError::InvalidInput(m)) if m == "first"));
    }
}
