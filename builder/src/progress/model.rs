//! What the progress views show, in BuildKit's terms: vertices (steps) with
//! start and completion times, their statuses (sub-tasks with byte counts)
//! and the tail of their logs. Solver events and export phases update it;
//! each mode renders the [`Change`] it returns.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use chrono::{DateTime, Utc};

/// Log lines kept per vertex: BuildKit keeps 10 to print when a step fails.
pub const LOG_TAIL: usize = 10;

/// Characters kept of each tail line: more never fits a terminal, and a
/// step printing one endless line must not grow the view's memory.
const MAX_LINE: usize = 1024;

/// A moment, as wall-clock time (for rawjson) and monotonic time (for
/// durations that must not jump with the clock).
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    pub wall: DateTime<Utc>,
    pub mono: Instant,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp { wall: Utc::now(), mono: Instant::now() }
    }
}

/// A sub-task of a vertex (`exporting layers`, `pushing sha256:...`).
#[derive(Clone, Debug)]
pub struct StatusRec {
    pub id: String,
    pub current: u64,
    pub total: u64,
    pub started: Stamp,
    pub updated: Stamp,
    pub completed: Option<Stamp>,
}

/// One step of the build.
#[derive(Clone, Debug)]
pub struct VertexRec {
    pub digest: String,
    pub name: String,
    pub inputs: Vec<String>,
    pub started: Option<Stamp>,
    pub completed: Option<Stamp>,
    pub cached: bool,
    pub error: Option<String>,
    pub statuses: Vec<StatusRec>,
    /// The latest log lines, already made safe for a terminal.
    pub tail: VecDeque<String>,
}

impl VertexRec {
    pub fn is_running(&self) -> bool {
        self.started.is_some() && self.completed.is_none()
    }

    /// Time spent so far (or in all, once completed).
    pub fn elapsed(&self, now: Instant) -> f64 {
        match (self.started, self.completed) {
            (Some(s), Some(c)) => c.mono.duration_since(s.mono).as_secs_f64(),
            (Some(s), None) => now.duration_since(s.mono).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// What an update changed, for the mode to render.
#[derive(Clone, Debug)]
pub enum Change {
    /// A vertex was announced, started, cached, completed or failed.
    Vertex(usize),
    /// A vertex printed a line.
    Log { vertex: usize, stream: u8, line: String, at: Stamp },
    /// A status of a vertex started, progressed or completed.
    Status { vertex: usize, status: usize },
    /// A warning of the build.
    Warning(String),
}

/// Every vertex seen, in the order they were first announced.
#[derive(Debug, Default)]
pub struct Trace {
    pub vertices: Vec<VertexRec>,
    by_digest: HashMap<String, usize>,
    /// Vertices in the order they started (or were found cached): the
    /// order of the TTY view's lines.
    pub started_order: Vec<usize>,
    pub warnings: Vec<String>,
}

impl Trace {
    /// The vertex `digest`, announced now if it was not.
    pub fn vertex(&mut self, digest: &str, name: &str) -> usize {
        if let Some(&i) = self.by_digest.get(digest) {
            return i;
        }
        let i = self.vertices.len();
        self.vertices.push(VertexRec {
            digest: digest.to_string(),
            name: name.to_string(),
            inputs: Vec::new(),
            started: None,
            completed: None,
            cached: false,
            error: None,
            statuses: Vec::new(),
            tail: VecDeque::new(),
        });
        self.by_digest.insert(digest.to_string(), i);
        i
    }

    pub fn index(&self, digest: &str) -> Option<usize> {
        self.by_digest.get(digest).copied()
    }

    pub fn start(&mut self, i: usize, at: Stamp) {
        let v = &mut self.vertices[i];
        if v.started.is_none() {
            self.started_order.push(i);
        }
        v.started = Some(at);
        v.completed = None;
    }

    pub fn complete(&mut self, i: usize, at: Stamp) {
        if self.vertices[i].started.is_none() {
            self.start(i, at);
        }
        self.vertices[i].completed = Some(at);
    }

    pub fn log(&mut self, i: usize, line: &str) {
        let tail = &mut self.vertices[i].tail;
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        // A tab's width depends on the column: spaces keep lines measurable.
        tail.push_back(terminal_safe(line).replace('\t', " ").chars().take(MAX_LINE).collect());
    }

    /// Steps counted in the header: (completed, total).
    pub fn counts(&self) -> (usize, usize) {
        (self.vertices.iter().filter(|v| v.completed.is_some()).count(), self.vertices.len())
    }
}

/// `line` with what a terminal would interpret removed: escape sequences
/// (a Dockerfile is untrusted and could otherwise move the cursor, clear the
/// screen or retitle the window), other control characters, and everything
/// before a carriage return (progress bars redraw their line with `\r`).
pub fn terminal_safe(line: &str) -> String {
    let line = line.trim_end_matches('\r');
    let line = line.rsplit('\r').next().unwrap_or("");
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => skip_escape(&mut chars),
            // Harmless to a terminal, and what `/proc` files separate
            // fields with; the TTY view widens them itself.
            '\t' => out.push('\t'),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips the rest of an escape sequence: CSI (`ESC [ ... final`), OSC
/// (`ESC ] ... BEL|ST`) or a two-character escape.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.next() {
        Some('[') => {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
        Some(']' | 'P' | '_' | '^') => {
            while let Some(c) = chars.next() {
                if c == '\x07' {
                    break;
                }
                if c == '\x1b' && chars.peek() == Some(&'\\') {
                    chars.next();
                    break;
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_are_removed() {
        assert_eq!(terminal_safe("a\x1b[2J\x1b[1;1Hb"), "ab");
        assert_eq!(terminal_safe("\x1b]0;pwned\x07title"), "title");
        assert_eq!(terminal_safe("\x1b]8;;http://x\x1b\\link"), "link");
        assert_eq!(terminal_safe("10%\r50%\r100%"), "100%");
        assert_eq!(terminal_safe("a\tb\x08c\u{9b}d"), "a\tbcd");
        assert_eq!(terminal_safe("done\r"), "done");
    }
}
