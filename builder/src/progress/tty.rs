//! The live terminal view, drawn with plain ANSI sequences in buildx's
//! shape:
//!
//! ```text
//! [+] Building 12.3s (9/12)
//!  => [build 2/4] RUN make                                          3.2s
//!  => => # cc -c main.c
//!  => CACHED [stage-1 2/3] COPY app.txt /                           0.0s
//!  => exporting to image                                            0.1s
//!  => => writing image sha256:...                                   0.0s
//! ```
//!
//! Each frame is redrawn in place (cursor up over the previous frame) at
//! most ten times a second from a thread of its own, so a chatty step cannot
//! flood the terminal. Lines are cut to the width (queried at every frame,
//! so a resize takes effect at the next one) and never wrap. A running
//! step shows its latest [`WINDOW`] log lines; they go when it completes.
//! When the frame would be taller than the terminal, completed steps at the
//! top are dropped first, so the view never scrolls.

use std::io::Write;
use std::time::Instant;

use super::model::{Trace, VertexRec, terminal_safe};
use super::plain::bytes;

/// Log lines shown under a running step (buildx shows 6).
pub const WINDOW: usize = 6;

const BLUE: &str = "\x1b[34m";
const RED: &str = "\x1b[31m";
const FAINT: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// One line of a frame: its text and how to colour it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub text: String,
    color: Option<&'static str>,
}

/// `s` cut to `width` characters.
fn cut(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

/// `left` and `right` on one line of exactly `width` characters, `left`
/// cut to make room.
fn align(left: &str, right: &str, width: usize) -> String {
    let room = width.saturating_sub(right.chars().count() + 1);
    let left = cut(left, room);
    let pad = room - left.chars().count();
    format!("{left}{} {right}", " ".repeat(pad))
}

struct Block {
    lines: Vec<Line>,
    /// Log window lines (the last ones of `lines`), dropped first.
    window: usize,
    done: bool,
}

fn timer(seconds: f64) -> String {
    // BuildKit rounds sub-50ms steps to 0.0s.
    let seconds = if seconds < 0.05 { 0.0 } else { seconds };
    format!("{seconds:.1}s")
}

fn block(v: &VertexRec, now: Instant, width: usize, last: bool) -> Block {
    // Lines end one column short of the edge: writing the last column
    // makes some terminals wrap.
    let w = width.saturating_sub(1);
    let mut name = terminal_safe(&v.name.replace('\n', " ")).replace('\t', " ");
    if v.cached {
        name = format!("CACHED {name}");
    }
    if v.error.is_some() {
        name = format!("ERROR {name}");
    }
    let color = if v.error.is_some() {
        Some(RED)
    } else if v.completed.is_some() {
        Some(BLUE)
    } else {
        None
    };
    let mut lines = vec![Line { text: align(&format!(" => {name}"), &timer(v.elapsed(now)), w), color }];
    for s in &v.statuses {
        let mut text = format!(" => => {}", terminal_safe(&s.id).replace('\t', " "));
        if s.total != 0 {
            text = format!("{text} {} / {}", bytes(s.current), bytes(s.total));
        } else if s.current != 0 {
            text = format!("{text} {}", bytes(s.current));
        }
        let end = s.completed.map(|c| c.mono).unwrap_or(now);
        let secs = end.saturating_duration_since(s.started.mono).as_secs_f64();
        let color = s.completed.map(|_| BLUE);
        lines.push(Line { text: align(&text, &timer(secs), w), color });
    }
    let mut window = 0;
    // The last frame has no windows: steps still running then were cut
    // short by another's failure.
    if v.is_running() && !last {
        let skip = v.tail.len().saturating_sub(WINDOW);
        for l in v.tail.iter().skip(skip) {
            lines.push(Line { text: cut(&format!(" => => # {l}"), w), color: Some(FAINT) });
            window += 1;
        }
    }
    Block { lines, window, done: v.completed.is_some() }
}

/// The frame for `trace`: the header and one block per started step, fitted
/// into `height` rows unless `all` (the final frame, printed in full).
pub fn frame(trace: &Trace, start: Instant, now: Instant, width: usize, height: usize, all: bool) -> Vec<Line> {
    let width = width.max(20);
    let (done, total) = trace.counts();
    let finished = all && total > 0 && done == total;
    let header = format!(
        "[+] Building {:.1}s ({done}/{total}){}",
        now.duration_since(start).as_secs_f64(),
        if finished { " FINISHED" } else { "" }
    );
    let mut blocks: Vec<Block> =
        trace.started_order.iter().map(|&i| block(&trace.vertices[i], now, width, all)).collect();
    if !all {
        // The header and the line the cursor rests on take two rows.
        let budget = height.saturating_sub(2).max(1);
        let rows = |b: &[Block]| b.iter().map(|b| b.lines.len()).sum::<usize>();
        // Completed steps scroll off the top first, oldest first ...
        while rows(&blocks) > budget {
            match blocks.iter().position(|b| b.done) {
                Some(i) => {
                    blocks.remove(i);
                }
                None => break,
            }
        }
        // ... then the log windows shrink, the largest first ...
        while rows(&blocks) > budget {
            let Some(b) = blocks.iter_mut().filter(|b| b.window > 0).max_by_key(|b| b.window) else { break };
            b.lines.pop();
            b.window -= 1;
        }
        // ... and what still does not fit shows its latest steps.
        let mut flat: Vec<Line> = blocks.into_iter().flat_map(|b| b.lines).collect();
        if flat.len() > budget {
            flat.drain(..flat.len() - budget);
        }
        let mut lines = vec![Line { text: cut(&header, width - 1), color: None }];
        lines.extend(flat);
        return lines;
    }
    let mut lines = vec![Line { text: cut(&header, width - 1), color: None }];
    lines.extend(blocks.into_iter().flat_map(|b| b.lines));
    lines
}

/// Draws frames over each other on a terminal.
#[derive(Default)]
pub struct Screen {
    /// Lengths of the lines of the frame on screen, to know how many rows it
    /// takes at the current width.
    previous: Vec<usize>,
}

impl Screen {
    /// The terminal's size, or 80x24 when it cannot be told.
    pub fn size() -> (usize, usize) {
        match console::Term::stderr().size_checked() {
            Some((rows, cols)) if rows > 0 && cols > 0 => (cols as usize, rows as usize),
            _ => (80, 24),
        }
    }

    /// Replaces the frame on screen with `lines`.
    pub fn draw(&mut self, out: &mut dyn Write, lines: &[Line], width: usize) {
        let mut buf = String::from("\x1b[?25l");
        // A narrower terminal may have wrapped the previous frame's lines.
        let rows: usize = self.previous.iter().map(|&n| n.max(1).div_ceil(width.max(1))).sum();
        if rows > 0 {
            buf.push_str(&format!("\x1b[{rows}F"));
        }
        for l in lines {
            let text = cut(&l.text, width.saturating_sub(1));
            match l.color {
                Some(c) => buf.push_str(&format!("{c}{text}{RESET}\x1b[K\n")),
                None => buf.push_str(&format!("{text}\x1b[K\n")),
            }
        }
        buf.push_str("\x1b[J\x1b[?25h");
        self.previous = lines.iter().map(|l| l.text.chars().count().min(width.saturating_sub(1))).collect();
        // Progress is best effort: a closed stderr must not fail the build.
        let _ = out.write_all(buf.as_bytes());
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Stamp;
    use super::*;

    fn trace_with(n_done: usize, logs: usize) -> (Trace, Instant) {
        let mut t = Trace::default();
        let start = Stamp::now();
        for i in 0..n_done {
            let v = t.vertex(&format!("d{i}"), &format!("[stage-0 {}/9] RUN step {i} {}", i + 1, "x".repeat(120)));
            t.start(v, start);
            t.complete(v, start);
        }
        let r = t.vertex("run", "[stage-0 9/9] RUN long");
        t.start(r, start);
        for i in 0..logs {
            t.log(r, &format!("line {i}\x1b[2J"));
        }
        (t, start.mono)
    }

    #[test]
    fn lines_fit_the_width_and_the_window_shows_the_last_six() {
        let (t, start) = trace_with(2, 20);
        let lines = frame(&t, start, start, 80, 24, false);
        assert!(lines.iter().all(|l| l.text.chars().count() <= 79), "{lines:#?}");
        assert!(lines[0].text.starts_with("[+] Building 0.0s (2/3)"), "{}", lines[0].text);
        let window: Vec<&str> =
            lines.iter().filter(|l| l.text.starts_with(" => => # ")).map(|l| l.text.as_str()).collect();
        assert_eq!(window, (14..20).map(|i| format!(" => => # line {i}")).collect::<Vec<_>>());
        assert!(lines[1].text.ends_with(" 0.0s"), "{}", lines[1].text);
    }

    #[test]
    fn a_tall_frame_drops_completed_steps_and_keeps_the_running_one() {
        let (t, start) = trace_with(30, 20);
        let lines = frame(&t, start, start, 80, 10, false);
        assert!(lines.len() <= 9, "{lines:#?}");
        assert!(lines.iter().any(|l| l.text.contains("RUN long")), "{lines:#?}");
        // The final frame lists every step and no log window.
        let mut t = t;
        let r = t.index("run").unwrap();
        t.complete(r, Stamp::now());
        let last = frame(&t, start, Instant::now(), 80, 10, true);
        assert_eq!(last.len(), 32);
        assert!(last[0].text.contains("(31/31) FINISHED"), "{}", last[0].text);
        assert!(!last.iter().any(|l| l.text.contains(" # ")), "{last:#?}");
    }

    #[test]
    fn redraw_moves_up_over_the_rows_the_last_frame_took() {
        let mut s = Screen::default();
        let mut out = Vec::new();
        let line = |t: &str| Line { text: t.to_string(), color: None };
        s.draw(&mut out, &[line("a"), line(&"b".repeat(70))], 80);
        out.clear();
        // Narrowed to 40 columns: the 70-column line now takes two rows.
        s.draw(&mut out, &[line("c")], 40);
        assert!(String::from_utf8_lossy(&out).contains("\x1b[3F"), "{:?}", String::from_utf8_lossy(&out));
    }
}
