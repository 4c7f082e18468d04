//! Progress output: `plain` (BuildKit's plain format, for CI), `tty` (a live
//! view with indicatif), `rawjson` (one JSON event per line, for tools) and
//! `quiet`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rbuild_solver::graph::Digest;
use rbuild_solver::solve::{Event, ProgressSink};

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

struct StepState {
    number: usize,
    name: String,
    started: Instant,
    bar: Option<indicatif::ProgressBar>,
}

/// A progress printer writing to stderr.
pub struct Printer {
    mode: Mode,
    start: Instant,
    steps: Mutex<HashMap<Digest, StepState>>,
    multi: Option<indicatif::MultiProgress>,
}

impl Printer {
    /// A printer for `mode`.
    pub fn new(mode: Mode) -> Self {
        let multi = (mode == Mode::Tty).then(indicatif::MultiProgress::new);
        Printer { mode, start: Instant::now(), steps: Mutex::new(HashMap::new()), multi }
    }

    /// Prints a top-level message (export steps and the like).
    pub fn message(&self, text: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::RawJson => {
                let line =
                    serde_json::json!({"type": "message", "text": text, "time": self.start.elapsed().as_secs_f64()});
                eprintln!("{line}");
            }
            Mode::Tty => {
                if let Some(m) = &self.multi {
                    let _ = m.println(text);
                }
            }
            Mode::Plain => eprintln!("{text}"),
        }
    }

    fn step<'a>(&self, steps: &'a mut HashMap<Digest, StepState>, digest: Digest, name: &str) -> &'a mut StepState {
        let n = steps.len() + 1;
        steps.entry(digest).or_insert_with(|| StepState {
            number: n,
            name: name.to_string(),
            started: Instant::now(),
            bar: None,
        })
    }

    fn tty_bar(&self, name: &str) -> Option<indicatif::ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.add(indicatif::ProgressBar::new_spinner());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        // One line per step: long commands are cut, as BuildKit's tty view does.
        let short: String = name.lines().next().unwrap_or("").chars().take(100).collect();
        bar.set_message(if short.len() < name.len() { format!("{short}…") } else { short });
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }
}

impl ProgressSink for Printer {
    fn event(&self, event: Event) {
        if self.mode == Mode::Quiet {
            return;
        }
        if self.mode == Mode::RawJson {
            let value = match &event {
                Event::Started { digest, name } => {
                    serde_json::json!({"type": "started", "vertex": digest.to_string(), "name": name})
                }
                Event::Cached { digest, name } => {
                    serde_json::json!({"type": "cached", "vertex": digest.to_string(), "name": name})
                }
                Event::Log { digest, stream, line } => {
                    serde_json::json!({"type": "log", "vertex": digest.to_string(), "stream": stream, "data": line})
                }
                Event::Done { digest, elapsed } => {
                    serde_json::json!({"type": "done", "vertex": digest.to_string(), "duration": elapsed.as_secs_f64()})
                }
                Event::Failed { digest, error } => {
                    serde_json::json!({"type": "error", "vertex": digest.to_string(), "error": error})
                }
            };
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{value}");
            return;
        }
        let mut steps = self.steps.lock().expect("progress lock");
        match event {
            Event::Started { digest, name } => {
                let bar = self.tty_bar(&name);
                let s = self.step(&mut steps, digest, &name);
                s.started = Instant::now();
                s.bar = bar;
                if self.mode == Mode::Plain {
                    eprintln!("#{} {}", s.number, s.name);
                }
            }
            Event::Cached { digest, name } => {
                let s = self.step(&mut steps, digest, &name);
                match (&self.multi, self.mode) {
                    (Some(m), Mode::Tty) => {
                        let _ = m.println(format!("=> CACHED {}", s.name));
                    }
                    _ => eprintln!("#{} {}\n#{} CACHED", s.number, s.name, s.number),
                }
            }
            Event::Log { digest, line, .. } => {
                if let Some(s) = steps.get(&digest) {
                    match &s.bar {
                        Some(bar) => {
                            bar.println(format!("#{} {:.3} {}", s.number, s.started.elapsed().as_secs_f64(), line))
                        }
                        None => eprintln!("#{} {:.3} {}", s.number, s.started.elapsed().as_secs_f64(), line),
                    }
                }
            }
            Event::Done { digest, elapsed } => {
                if let Some(s) = steps.get_mut(&digest) {
                    match s.bar.take() {
                        Some(bar) => {
                            bar.finish_and_clear();
                            if let Some(m) = &self.multi {
                                let _ = m.println(format!("=> {} {:.1}s", s.name, elapsed.as_secs_f64()));
                            }
                        }
                        None => eprintln!("#{} DONE {:.1}s", s.number, elapsed.as_secs_f64()),
                    }
                }
            }
            Event::Failed { digest, error } => {
                let number = steps.get(&digest).map(|s| s.number).unwrap_or(0);
                if let Some(bar) = steps.get_mut(&digest).and_then(|s| s.bar.take()) {
                    bar.abandon();
                }
                eprintln!("#{number} ERROR: {}", error.lines().next().unwrap_or(""));
            }
        }
    }
}
