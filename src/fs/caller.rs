//! The thread behind a request, as `/proc/<tid>/status` describes it: its process (for the
//! partial line of an `append` file) and its pending signals (for a blocked `follow/` read).

/// The text of one thread's `/proc/<tid>/status`.
pub struct ThreadStatus(String);

impl ThreadStatus {
    /// `None` when the thread is gone (or `/proc` is not mounted).
    pub fn read(tid: u32) -> Option<ThreadStatus> {
        std::fs::read_to_string(format!("/proc/{tid}/status"))
            .ok()
            .map(ThreadStatus)
    }

    /// The value of the line `name:` (`name` without its colon), trimmed.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.0.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
        })
    }
}

/// The process (thread group id) of thread `tid`; `None` for 0 (unknown) or a thread gone.
pub fn process_of(tid: u32) -> Option<u32> {
    if tid == 0 {
        return None;
    }
    ThreadStatus::read(tid)?.field("Tgid")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_thread_belongs_to_this_process() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        assert_eq!(process_of(tid), Some(std::process::id()));
        assert_eq!(process_of(0), None);
        assert_eq!(process_of(u32::MAX), None);
    }
}
