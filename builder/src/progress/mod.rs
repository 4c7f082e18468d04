//! Progress output, in BuildKit's modes: `tty` (a live view redrawn in
//! place, [`tty`]), `plain` (BuildKit's plain text, [`plain`]), `rawjson`
//! (BuildKit `SolveStatus` JSON lines, [`rawjson`]) and `quiet`. Solver
//! events and the builder's export phases update one [`model::Trace`]; the
//! mode renders each change.

mod model;
mod plain;
mod rawjson;
mod tty;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rbuild_solver::solve::{Event, ProgressSink};
use sha2::Digest as _;

use model::{Change, Stamp, StatusRec, Trace};
pub use plain::bytes;

/// Output modes of `--progress`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain lines.
    Plain,
    /// Live view.
    Tty,
    /// JSON lines.
    RawJson,
    /// Nothing.
    Quiet,
}

impl Mode {
    /// Parses `--progress`; `auto` picks `tty` on a terminal.
    pub fn parse(s: &str, quiet: bool) -> anyhow::Result<Mode> {
        if quiet {
            return Ok(Mode::Quiet);
        }
        Ok(match s {
            "auto" => {
                if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
                    Mode::Tty
                } else {
                    Mode::Plain
                }
            }
            "tty" => Mode::Tty,
            "plain" => Mode::Plain,
            "rawjson" => Mode::RawJson,
            "quiet" => Mode::Quiet,
            other => anyhow::bail!("invalid `--progress {other}`: use auto, tty, plain, rawjson or quiet"),
        })
    }
}

/// The TTY view redraws at most this often.
const FRAME: Duration = Duration::from_millis(100);

struct State {
    trace: Trace,
    plain: plain::Plain,
    out: Box<dyn Write + Send>,
    /// The open export phase, which [`Printer::message`] adds statuses to.
    phase: Option<usize>,
    /// What [`Printer::summary`] recorded, printed when the build ends.
    summaries: Vec<String>,
    screen: tty::Screen,
    finished: bool,
}

struct Shared {
    mode: Mode,
    start: Instant,
    state: Mutex<State>,
    /// Wakes the TTY painter early (to stop).
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere must not silence progress: the data is still
        // consistent enough to print.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Renders `change` in plain and rawjson modes; the TTY painter picks
    /// changes up at its next frame.
    fn emit(&self, state: &mut State, change: Change) {
        let text = match self.mode {
            Mode::RawJson => rawjson::line(&state.trace, &change) + "\n",
            Mode::Plain => {
                let State { plain, trace, .. } = state;
                plain.render(trace, &change)
            }
            Mode::Tty | Mode::Quiet => return,
        };
        // Best effort: a closed stderr must not fail the build.
        let _ = state.out.write_all(text.as_bytes());
        let _ = state.out.flush();
    }

    fn paint(&self, state: &mut State, all: bool) {
        let (width, height) = tty::Screen::size();
        let lines = tty::frame(&state.trace, self.start, Instant::now(), width, height, all);
        let State { screen, out, .. } = state;
        screen.draw(out.as_mut(), &lines, width);
    }
}

/// A progress printer writing to stderr.
pub struct Printer {
    shared: Arc<Shared>,
    painter: Mutex<Option<JoinHandle<()>>>,
    /// Numbers the builder's own vertices, for unique digests.
    next_id: AtomicUsize,
    stopped: Arc<AtomicBool>,
}

impl Printer {
    /// A printer for `mode` on stderr.
    pub fn new(mode: Mode) -> Self {
        Printer::with_output(mode, Box::new(std::io::stderr()))
    }

    /// A printer for `mode` writing to `out`.
    pub fn with_output(mode: Mode, out: Box<dyn Write + Send>) -> Self {
        let shared = Arc::new(Shared {
            mode,
            start: Instant::now(),
            state: Mutex::new(State {
                trace: Trace::default(),
                plain: plain::Plain::default(),
                out,
                phase: None,
                summaries: Vec::new(),
                screen: tty::Screen::default(),
                finished: false,
            }),
            wake: Condvar::new(),
        });
        let stopped = Arc::new(AtomicBool::new(false));
        let painter = (mode == Mode::Tty).then(|| {
            let (shared, stopped) = (shared.clone(), stopped.clone());
            std::thread::spawn(move || {
                let mut state = shared.lock();
                while !stopped.load(Ordering::SeqCst) {
                    shared.paint(&mut state, false);
                    state = shared.wake.wait_timeout(state, FRAME).unwrap_or_else(|e| e.into_inner()).0;
                }
            })
        });
        Printer { shared, painter: Mutex::new(painter), next_id: AtomicUsize::new(0), stopped }
    }

    fn with_state<T>(&self, f: impl FnOnce(&Shared, &mut State) -> T) -> T {
        let mut state = self.shared.lock();
        f(&self.shared, &mut state)
    }

    /// A vertex of the builder's own (an export phase), started now.
    fn own_vertex(&self, state: &mut State, name: &str) -> usize {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        // BuildKit names such vertices by a random digest; a digest of a
        // per-build counter is as unique and keeps runs comparable.
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(format!("rbuild-progress:{n}:{name}"))));
        let i = state.trace.vertex(&digest, name);
        state.trace.start(i, Stamp::now());
        i
    }

    /// Opens an export phase (`exporting to image`, `pushing NAME`): a step
    /// of its own, completed by [`Phase::done`]. Messages and tasks while it
    /// is open become its statuses.
    pub fn phase(&self, name: &str) -> Phase<'_> {
        self.with_state(|shared, state| {
            let vertex = self.own_vertex(state, name);
            let previous = state.phase.replace(vertex);
            shared.emit(state, Change::Vertex(vertex));
            Phase { printer: self, vertex, previous, done: false }
        })
    }

    /// A sub-task of the open phase (or a step of its own when none is
    /// open), started now; byte counts are given with [`Task::set`].
    pub fn task(&self, id: &str) -> Task<'_> {
        self.with_state(|shared, state| match state.phase {
            Some(vertex) => {
                let now = Stamp::now();
                let status = state.trace.vertices[vertex].statuses.len();
                state.trace.vertices[vertex].statuses.push(StatusRec {
                    id: id.to_string(),
                    current: 0,
                    total: 0,
                    started: now,
                    updated: now,
                    completed: None,
                });
                shared.emit(state, Change::Status { vertex, status });
                Task { printer: self, target: TaskTarget::Status { vertex, status } }
            }
            None => {
                let vertex = self.own_vertex(state, id);
                shared.emit(state, Change::Vertex(vertex));
                Task { printer: self, target: TaskTarget::Vertex(vertex) }
            }
        })
    }

    /// Something done: a completed status of the open phase, or a
    /// completed step of its own.
    pub fn message(&self, text: &str) {
        self.with_state(|shared, state| {
            let now = Stamp::now();
            let change = match state.phase {
                Some(vertex) => {
                    let statuses = &mut state.trace.vertices[vertex].statuses;
                    statuses.push(StatusRec {
                        id: text.to_string(),
                        current: 0,
                        total: 0,
                        started: now,
                        updated: now,
                        completed: Some(now),
                    });
                    Change::Status { vertex, status: statuses.len() - 1 }
                }
                None => {
                    let vertex = self.own_vertex(state, text);
                    state.trace.complete(vertex, now);
                    Change::Vertex(vertex)
                }
            };
            shared.emit(state, change);
        });
    }

    /// A warning, listed after the build (and a `warnings` entry in rawjson).
    pub fn warn(&self, text: &str) {
        self.with_state(|shared, state| {
            state.trace.warnings.push(text.to_string());
            shared.emit(state, Change::Warning(text.to_string()));
        });
    }

    /// Records the final summary of one image: its names and digest,
    /// printed with the total time when the build ends.
    pub fn summary(&self, names: &[String], digest: &str) {
        let what = if names.is_empty() { "image".to_string() } else { names.join(", ") };
        self.with_state(|_, state| state.summaries.push(format!("{what} {digest}")));
    }

    /// Ends the output: the TTY view's final frame, the logs of failed
    /// steps, warnings and summaries. Also done on drop.
    pub fn finish(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(painter) = self.painter.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = painter.join();
        }
        let mode = self.shared.mode;
        let elapsed = self.shared.start.elapsed().as_secs_f64();
        self.with_state(|shared, state| {
            if state.finished || matches!(mode, Mode::Quiet | Mode::RawJson) {
                state.finished = true;
                return;
            }
            state.finished = true;
            let mut text = String::new();
            if mode == Mode::Tty {
                shared.paint(state, true);
                // The log window is gone: show what a failed step printed, as
                // buildx does.
                for v in state.trace.vertices.iter().filter(|v| v.error.is_some() && !v.tail.is_empty()) {
                    text.push_str(&format!("------\n > {}:\n", model::terminal_safe(&v.name)));
                    for l in &v.tail {
                        text.push_str(l);
                        text.push('\n');
                    }
                    text.push_str("------\n");
                }
            }
            let warnings = &state.trace.warnings;
            if !warnings.is_empty() {
                let s = if warnings.len() == 1 { "" } else { "s" };
                text.push_str(&format!("\n {} warning{s} found:\n", warnings.len()));
                for w in warnings {
                    text.push_str(&format!(" - {}\n", model::terminal_safe(w)));
                }
            }
            for s in &state.summaries {
                text.push_str(&format!("built {s} in {elapsed:.1}s\n"));
            }
            let _ = state.out.write_all(text.as_bytes());
            let _ = state.out.flush();
        });
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// An open export phase; see [`Printer::phase`].
pub struct Phase<'a> {
    printer: &'a Printer,
    vertex: usize,
    previous: Option<usize>,
    done: bool,
}

impl Phase<'_> {
    /// Completes the phase.
    pub fn done(mut self) {
        self.close(None);
    }

    fn close(&mut self, error: Option<&str>) {
        self.done = true;
        self.printer.with_state(|shared, state| {
            let now = Stamp::now();
            for s in &mut state.trace.vertices[self.vertex].statuses {
                s.completed.get_or_insert(now);
            }
            state.trace.vertices[self.vertex].error = error.map(str::to_string);
            state.trace.complete(self.vertex, now);
            state.phase = self.previous;
            shared.emit(state, Change::Vertex(self.vertex));
        });
    }
}

impl Drop for Phase<'_> {
    /// A phase left without [`Phase::done`] was cut short by an error.
    fn drop(&mut self) {
        if !self.done {
            self.close(Some("failed"));
        }
    }
}

enum TaskTarget {
    Status { vertex: usize, status: usize },
    Vertex(usize),
}

/// A running sub-task; see [`Printer::task`]. Completed on drop.
pub struct Task<'a> {
    printer: &'a Printer,
    target: TaskTarget,
}

impl Task<'_> {
    /// Reports `current` of `total` bytes (0: unknown).
    pub fn set(&self, current: u64, total: u64) {
        if let TaskTarget::Status { vertex, status } = self.target {
            self.printer.with_state(|shared, state| {
                let s = &mut state.trace.vertices[vertex].statuses[status];
                (s.current, s.total, s.updated) = (current, total, Stamp::now());
                shared.emit(state, Change::Status { vertex, status });
            });
        }
    }

    /// Completes the task.
    pub fn done(self) {}
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        self.printer.with_state(|shared, state| {
            let now = Stamp::now();
            let change = match self.target {
                TaskTarget::Status { vertex, status } => {
                    let s = &mut state.trace.vertices[vertex].statuses[status];
                    (s.completed, s.updated) = (Some(now), now);
                    Change::Status { vertex, status }
                }
                TaskTarget::Vertex(vertex) => {
                    state.trace.complete(vertex, now);
                    Change::Vertex(vertex)
                }
            };
            shared.emit(state, change);
        });
    }
}

impl ProgressSink for Printer {
    fn event(&self, event: Event) {
        if self.shared.mode == Mode::Quiet {
            return;
        }
        self.with_state(|shared, state| {
            let trace = &mut state.trace;
            let now = Stamp::now();
            let change = match event {
                Event::Planned { digest, name, inputs } => {
                    let i = trace.vertex(&digest.to_string(), &name);
                    trace.vertices[i].inputs = inputs.iter().map(ToString::to_string).collect();
                    Change::Vertex(i)
                }
                Event::Started { digest, name } => {
                    let i = trace.vertex(&digest.to_string(), &name);
                    trace.start(i, now);
                    Change::Vertex(i)
                }
                Event::Cached { digest, name } => {
                    let i = trace.vertex(&digest.to_string(), &name);
                    trace.vertices[i].cached = true;
                    trace.complete(i, now);
                    Change::Vertex(i)
                }
                Event::Log { digest, stream, line } => {
                    let Some(i) = trace.index(&digest.to_string()) else { return };
                    trace.log(i, &line);
                    Change::Log { vertex: i, stream, line, at: now }
                }
                Event::Done { digest, .. } => {
                    let Some(i) = trace.index(&digest.to_string()) else { return };
                    trace.complete(i, now);
                    Change::Vertex(i)
                }
                Event::Failed { digest, error } => {
                    let i = trace.vertex(&digest.to_string(), "");
                    trace.vertices[i].error = Some(error);
                    trace.complete(i, now);
                    Change::Vertex(i)
                }
            };
            shared.emit(state, change);
        });
    }
}

#[cfg(test)]
mod tests;
