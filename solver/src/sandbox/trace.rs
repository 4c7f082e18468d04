//! Timestamps of a `RUN`'s phases, for finding where per-step time goes
//! (`RBUILD_SANDBOX_TRACE=1`; off by default, and then a relaxed load).
//!
//! Each mark is one line `rbuild-trace <label> <CLOCK_MONOTONIC ns>` on
//! stderr: the solver's own on rbuild's stderr, the sandbox's (sent before
//! the command is executed) on the step's stderr, i.e. in the build log.
//! The clock is the same in every process, so marks of the solver, the init
//! and pid 1 subtract. `bench/run_breakdown.sh` turns them into a table.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// Environment variable turning the marks on (read once, by the solver).
const TRACE_ENV: &str = "RBUILD_SANDBOX_TRACE";

static ON: AtomicBool = AtomicBool::new(false);

/// Whether marks are written (the solver reads the environment once; a
/// sandbox init is told by its request, its environment being empty).
pub(crate) fn enabled() -> bool {
    static READ: OnceLock<()> = OnceLock::new();
    READ.get_or_init(|| {
        if std::env::var_os(TRACE_ENV).is_some_and(|v| v == "1") {
            ON.store(true, Ordering::Relaxed);
        }
    });
    ON.load(Ordering::Relaxed)
}

/// Turns marks on in this process (a sandbox init whose request says so).
pub(crate) fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Writes one mark if tracing is on.
pub fn mark(label: &str) {
    if !enabled() {
        return;
    }
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    let ns = t.tv_sec as u128 * 1_000_000_000 + t.tv_nsec as u128;
    // One write(2), so lines of concurrent writers do not interleave.
    let _ = rustix::io::write(rustix::stdio::stderr(), format!("rbuild-trace {label} {ns}\n").as_bytes());
}
