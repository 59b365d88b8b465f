//! Blocking reads and `poll` for `follow/` streams, without holding a worker thread.
//!
//! A read of a stream that finds no record is *parked*: its `ReplyData` is kept here and the
//! worker thread returns to serve other requests, so a thousand idle followers cost a thousand
//! small entries, not a thousand threads. When the filesystem reports an append to a partition
//! ([`StreamListener::appended`]), the parked reads and registered polls of that partition are
//! handed to one waker thread, which answers the reads that now have data (re-parking the
//! others) and notifies the polls, so the kernel asks again. Nothing polls the log: a reader
//! wakes because an append happened.
//!
//! A parked read that raced with an append or a topic deletion is never lost: each partition
//! has an append sequence number, and the mount a count of topic deletions; both are read before
//! the attempt and checked under the lock before parking, and if either moved, the read is tried
//! again instead.
//!
//! Ending a blocked read:
//! - the topic is deleted: the waker retries the read, which reads end-of-file;
//! - the mount stops ([`Streams::shutdown`]): every parked read gets end-of-file;
//! - a signal (Ctrl-C): fuser does not hand the kernel's FUSE_INTERRUPT to the filesystem, so
//!   the waker looks at each parked reader's pending signals (`/proc/<tid>/status`) every
//!   [`SIGNAL_CHECK`] and answers EINTR when one is pending and not blocked; the kernel then
//!   delivers the signal (a `cat` dies on SIGINT as usual). This is the only timer here, and it
//!   reads nothing of the log.

use std::collections::HashMap;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use fuser::{Errno, PollEvents, PollNotifier, ReplyData, ReplyPoll};
use log::{debug, warn};

use crate::fs::caller::ThreadStatus;
use crate::fs::node::PartitionId;
use crate::fs::{FsError, LmqFs, StreamListener, StreamRead};

/// How often parked readers are checked for a pending signal.
pub const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// A read waiting for records.
struct Parked {
    fh: u64,
    size: u32,
    /// The reader's thread id, for its pending signals.
    tid: u32,
    reply: ReplyData,
}

#[derive(Default)]
struct State {
    closed: bool,
    /// Appends seen per partition.
    sequence: HashMap<PartitionId, u64>,
    /// Topic deletions seen.
    deletions: u64,
    parked: HashMap<PartitionId, Vec<Parked>>,
    polls: HashMap<PartitionId, Vec<PollNotifier>>,
}

/// What the waker thread is asked to do.
enum Job {
    /// Retry these reads and notify these polls.
    Wake(Vec<Parked>, Vec<PollNotifier>),
    Stop,
}

/// The parked reads and polls of one mount. See the module docs.
pub struct Streams {
    fs: Arc<LmqFs>,
    state: Mutex<State>,
    jobs: Mutex<Sender<Job>>,
    waker: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    /// What a reader of `partition` checks before parking: nothing happened since it looked.
    fn changes(&self, partition: &PartitionId) -> (u64, u64) {
        (
            self.sequence.get(partition).copied().unwrap_or(0),
            self.deletions,
        )
    }

    /// Takes the parked reads and polls of the partitions `which` selects.
    fn take_waiting(
        &mut self,
        which: impl Fn(&PartitionId) -> bool,
    ) -> (Vec<Parked>, Vec<PollNotifier>) {
        let keys: Vec<PartitionId> = self
            .parked
            .keys()
            .chain(self.polls.keys())
            .filter(|p| which(p))
            .cloned()
            .collect();
        let mut parked = Vec::new();
        let mut polls = Vec::new();
        for key in keys {
            parked.extend(self.parked.remove(&key).unwrap_or_default());
            polls.extend(self.polls.remove(&key).unwrap_or_default());
        }
        (parked, polls)
    }
}

impl Streams {
    /// Starts the waker thread and registers with `fs` for append notices.
    pub fn start(fs: Arc<LmqFs>) -> std::io::Result<Arc<Streams>> {
        let (jobs, receiver) = channel::<Job>();
        let streams = Arc::new(Streams {
            fs: Arc::clone(&fs),
            state: Mutex::new(State::default()),
            jobs: Mutex::new(jobs),
            waker: Mutex::new(None),
        });
        let weak = Arc::downgrade(&streams);
        let handle = std::thread::Builder::new()
            .name("lmqfs-streams".into())
            .spawn(move || loop {
                let job = receiver.recv_timeout(SIGNAL_CHECK);
                let Some(streams) = weak.upgrade() else {
                    return;
                };
                match job {
                    Ok(Job::Wake(parked, polls)) => {
                        for p in polls {
                            if let Err(e) = p.notify() {
                                debug!("poll notification failed: {e}");
                            }
                        }
                        for p in parked {
                            streams.attempt(p);
                        }
                    }
                    Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => streams.interrupt_signalled(),
                }
            })?;
        *lock(&streams.waker) = Some(handle);
        fs.set_stream_listener(Arc::clone(&streams) as Arc<dyn StreamListener>);
        Ok(streams)
    }

    /// Whether `fh` is a stream (its reads and polls come here).
    pub fn is_stream(&self, fh: u64) -> Option<PartitionId> {
        self.fs.stream_partition(fh)
    }

    /// Answers a read of stream `fh` now, or parks it until the partition grows. `tid` is
    /// the reading thread, whose pending signals can end the wait.
    pub fn read(&self, fh: u64, size: u32, tid: u32, reply: ReplyData) {
        self.attempt(Parked {
            fh,
            size,
            tid,
            reply,
        });
    }

    fn attempt(&self, parked: Parked) {
        let Some(partition) = self.fs.stream_partition(parked.fh) else {
            // Released meanwhile (cannot happen while a read is outstanding).
            parked.reply.data(&[]);
            return;
        };
        loop {
            let before = {
                let state = lock(&self.state);
                if state.closed {
                    drop(state);
                    parked.reply.data(&[]);
                    return;
                }
                state.changes(&partition)
            };
            match self.fs.stream_read(parked.fh, parked.size) {
                Ok(StreamRead::Data(data)) => return parked.reply.data(&data),
                Ok(StreamRead::Eof) => return parked.reply.data(&[]),
                Ok(StreamRead::WouldBlock) => {}
                Err(e) => {
                    return parked
                        .reply
                        .error(super::refuse(&format!("read of stream {partition}"), e))
                }
            }
            let mut state = lock(&self.state);
            if state.closed {
                drop(state);
                return parked.reply.data(&[]);
            }
            if state.changes(&partition) == before {
                state.parked.entry(partition).or_default().push(parked);
                return;
            }
            // An append landed between the attempt and now: try again.
        }
    }

    /// Answers `poll` on stream `fh`: readable now, or registered to be notified.
    pub fn poll(&self, partition: PartitionId, fh: u64, notifier: PollNotifier, reply: ReplyPoll) {
        loop {
            let before = lock(&self.state).changes(&partition);
            match self.fs.stream_ready(fh) {
                Ok(true) => return reply.poll(PollEvents::POLLIN | PollEvents::POLLRDNORM),
                Ok(false) => {}
                Err(FsError::BadHandle(_)) => return reply.poll(PollEvents::POLLNVAL),
                Err(e) => return reply.error(super::refuse("poll of a stream", e)),
            }
            let mut state = lock(&self.state);
            if state.closed {
                return reply.poll(PollEvents::POLLIN | PollEvents::POLLHUP);
            }
            if state.changes(&partition) == before {
                state.polls.entry(partition).or_default().push(notifier);
                return reply.poll(PollEvents::empty());
            }
        }
    }

    /// Ends every parked read with end-of-file and wakes every poll; later reads of streams
    /// read end-of-file at once. Stops the waker thread.
    pub fn shutdown(&self) {
        let (parked, polls) = {
            let mut state = lock(&self.state);
            state.closed = true;
            (
                std::mem::take(&mut state.parked),
                std::mem::take(&mut state.polls),
            )
        };
        for p in parked.into_values().flatten() {
            p.reply.data(&[]);
        }
        for p in polls.into_values().flatten() {
            let _ = p.notify();
        }
        let _ = lock(&self.jobs).send(Job::Stop);
        if let Some(handle) = lock(&self.waker).take() {
            if handle.join().is_err() {
                warn!("the stream waker thread panicked");
            }
        }
    }

    /// Answers EINTR to parked reads whose reader has a signal pending.
    fn interrupt_signalled(&self) {
        let interrupted: Vec<Parked> = {
            let mut state = lock(&self.state);
            let mut out = Vec::new();
            for list in state.parked.values_mut() {
                let mut i = 0;
                while i < list.len() {
                    if has_pending_signal(list[i].tid) {
                        out.push(list.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            out
        };
        for p in interrupted {
            debug!("stream read of thread {} interrupted by a signal", p.tid);
            p.reply.error(Errno::EINTR);
        }
    }

    /// Hands `parked` and `polls` to the waker thread.
    fn wake(&self, parked: Vec<Parked>, polls: Vec<PollNotifier>) {
        if parked.is_empty() && polls.is_empty() {
            return;
        }
        if let Err(e) = lock(&self.jobs).send(Job::Wake(parked, polls)) {
            // The waker is gone (shutting down): answer here.
            if let Job::Wake(parked, polls) = e.0 {
                for p in polls {
                    let _ = p.notify();
                }
                for p in parked {
                    p.reply.data(&[]);
                }
            }
        }
    }
}

impl StreamListener for Streams {
    fn appended(&self, partition: &PartitionId) {
        let (parked, polls) = {
            let mut state = lock(&self.state);
            // Counted even when nobody waits, for readers about to park.
            *state.sequence.entry(partition.clone()).or_default() += 1;
            state.take_waiting(|p| p == partition)
        };
        self.wake(parked, polls);
    }

    fn topic_deleted(&self, topic: &str) {
        let (parked, polls) = {
            let mut state = lock(&self.state);
            state.deletions += 1;
            state.take_waiting(|p| &*p.topic == topic)
        };
        self.wake(parked, polls);
    }
}

/// Whether thread `tid` has a signal pending that it does not block (from
/// `/proc/<tid>/status`: `SigPnd` for the thread, `ShdPnd` for its process, `SigBlk`).
fn has_pending_signal(tid: u32) -> bool {
    let Some(status) = ThreadStatus::read(tid) else {
        // The reader is gone.
        return true;
    };
    let mask = |name: &str| -> u64 {
        status
            .field(name)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    (mask("SigPnd") | mask("ShdPnd")) & !mask("SigBlk") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_has_no_pending_signal() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        assert!(!has_pending_signal(tid));
        assert!(
            has_pending_signal(u32::MAX),
            "a vanished reader counts as interrupted"
        );
    }
}
