//! `--progress plain`: BuildKit's plain format (progressui's `textMux`).
//! A vertex's block opens with `#N name`; its logs are `#N 0.123 line`
//! (seconds since it started), its statuses `#N id 1.20MB / 3.40MB 0.5s done`,
//! and it closes with `#N DONE 0.5s`, `#N CACHED` or `#N ERROR: ...`. Blocks
//! are separated by a blank line; when another vertex interrupts an open
//! block, `#N ...` marks the cut, as BuildKit does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::model::{Change, Trace, terminal_safe};

/// A status in progress is reprinted after this long or this much progress
/// (BuildKit's `minTimeDelta` and `minProgressDelta`).
const MIN_TIME_DELTA: Duration = Duration::from_secs(5);
const MIN_PROGRESS_DELTA: f64 = 0.05;

#[derive(Default)]
pub struct Plain {
    /// `#N` of each vertex, numbered when first printed.
    numbers: HashMap<usize, usize>,
    current: Option<usize>,
    printed_any: bool,
    /// When and at what byte count each status was last printed.
    last: HashMap<(usize, usize), (Instant, u64)>,
}

/// BuildKit's byte counts (`units.Bytes` with `%.2f`): decimal units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.2}{}", UNITS[unit])
}

/// Seconds since a vertex started, with BuildKit's precision (3 digits
/// below 10s, 2 below 100s, then 1).
fn log_time(seconds: f64) -> String {
    let precision = if seconds < 10.0 {
        3
    } else if seconds < 100.0 {
        2
    } else {
        1
    };
    format!("{seconds:.precision$}")
}

impl Plain {
    fn number(&mut self, vertex: usize) -> usize {
        let next = self.numbers.len() + 1;
        *self.numbers.entry(vertex).or_insert(next)
    }

    /// Opens `vertex`'s block unless it is the open one.
    fn switch_to(&mut self, out: &mut String, trace: &Trace, vertex: usize) -> usize {
        let n = self.number(vertex);
        if self.current != Some(vertex) {
            if let Some(old) = self.current {
                let _ = writeln!(out, "#{} ...", self.number(old));
            }
            if self.printed_any {
                out.push('\n');
            }
            self.printed_any = true;
            let _ = writeln!(out, "#{n} {}", terminal_safe(&trace.vertices[vertex].name));
            self.current = Some(vertex);
        }
        n
    }

    /// The text `change` prints (possibly nothing).
    pub fn render(&mut self, trace: &Trace, change: &Change) -> String {
        let mut out = String::new();
        match change {
            Change::Vertex(i) => {
                let v = &trace.vertices[*i];
                if v.started.is_none() {
                    return out; // announced only: BuildKit prints vertices once they start
                }
                let n = self.switch_to(&mut out, trace, *i);
                if v.completed.is_some() {
                    if let Some(error) = &v.error {
                        let _ = writeln!(out, "#{n} ERROR: {}", terminal_safe(error));
                    } else if v.cached {
                        let _ = writeln!(out, "#{n} CACHED");
                    } else {
                        let _ = writeln!(out, "#{n} DONE {:.1}s", v.elapsed(Instant::now()));
                    }
                    self.current = None;
                }
            }
            Change::Log { vertex, line, at, .. } => {
                let started = trace.vertices[*vertex].started.map(|s| s.mono).unwrap_or(at.mono);
                let n = self.switch_to(&mut out, trace, *vertex);
                let t = log_time(at.mono.saturating_duration_since(started).as_secs_f64());
                let _ = writeln!(out, "#{n} {t} {}", terminal_safe(line));
            }
            Change::Status { vertex, status } => {
                let s = &trace.vertices[*vertex].statuses[*status];
                let key = (*vertex, *status);
                if s.completed.is_none()
                    && let Some((when, current)) = self.last.get(&key)
                {
                    let delta =
                        if s.total > 0 { s.current.saturating_sub(*current) as f64 / s.total as f64 } else { 0.0 };
                    if delta < MIN_PROGRESS_DELTA && when.elapsed() < MIN_TIME_DELTA {
                        return out;
                    }
                }
                self.last.insert(key, (Instant::now(), s.current));
                let n = self.switch_to(&mut out, trace, *vertex);
                let mut line = format!("#{n} {}", terminal_safe(&s.id));
                if s.total != 0 {
                    let _ = write!(line, " {} / {}", bytes(s.current), bytes(s.total));
                } else if s.current != 0 {
                    let _ = write!(line, " {}", bytes(s.current));
                }
                let end = s.completed.unwrap_or(s.updated);
                let secs = end.mono.saturating_duration_since(s.started.mono).as_secs_f64();
                if secs > 0.01 {
                    let _ = write!(line, " {secs:.1}s");
                }
                if s.completed.is_some() {
                    line.push_str(" done");
                }
                out.push_str(&line);
                out.push('\n');
            }
            // Warnings are listed after the build, as buildx does.
            Change::Warning(_) => {}
        }
        out
    }
}
