//! End-to-end progress output: the TTY view driven in a real terminal
//! (a detached 80x24 tmux pane, read back with `tmux capture-pane`), the
//! plain format and the rawjson `SolveStatus` lines of real builds.

mod util;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use util::progress::{logs, ran, solve_statuses, statuses, vertices};
use util::{TestRegistry, ok, rbuild};

fn build(store: &Path, ctx: &Path, extra: &[&str]) -> Output {
    rbuild().arg("--root").arg(store).arg("build").args(extra).arg(ctx).output().expect("run rbuild")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(ctx.path().join("app.txt"), "app\n").unwrap();
    ctx
}

/// Two stages; the second copies from the first and logs.
fn two_stage(reg: &TestRegistry) -> String {
    format!(
        "FROM {0}/busybox:latest AS build\nRUN echo building > /out.txt\n\
         FROM {0}/busybox:latest\nCOPY --from=build /out.txt /\nCOPY app.txt /\nRUN echo line-one && echo line-two >&2\n",
        reg.addr
    )
}

#[test]
fn plain_output_is_buildkits_format_with_a_summary() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let ctx = context(&two_stage(&reg));
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(store.path(), ctx.path(), &["--progress", "plain", "-t", "plain:1"]));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let number_of = |needle: &str| -> String {
        let line = lines
            .iter()
            .find(|l| l.starts_with('#') && l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}:\n{err}"));
        line.split(' ').next().unwrap().to_string()
    };
    // `#N [stage i/n] instruction`, BuildKit's step names.
    let run = number_of("] RUN /bin/sh -c echo line-one");
    assert!(err.contains(&format!("{run} [stage-1 4/4] RUN /bin/sh -c echo line-one && echo line-two >&2\n")), "{err}");
    // `#N 0.123 output`: seconds since the step started, three decimals.
    let log = lines.iter().find(|l| l.starts_with(&format!("{run} ")) && l.ends_with(" line-one")).unwrap();
    let secs = log.split(' ').nth(1).unwrap();
    assert!(secs.len() == 5 && secs.parse::<f64>().is_ok(), "{log}");
    assert!(lines.iter().any(|l| l.starts_with(&format!("{run} ")) && l.ends_with(" line-two")), "{err}");
    let done = lines.iter().find(|l| l.starts_with(&format!("{run} DONE "))).unwrap();
    assert!(done.ends_with('s') && done[run.len() + 6..done.len() - 1].parse::<f64>().is_ok(), "{done}");
    // Blocks are separated by blank lines; numbering counts up from 1.
    let dockerfile_len = std::fs::read(ctx.path().join("Dockerfile")).unwrap().len();
    let first = format!(
        "#1 [internal] load build definition from Dockerfile\n#1 transferring dockerfile: {dockerfile_len}B done\n#1 DONE "
    );
    assert!(err.starts_with(&first), "{err}");
    assert!(err.contains(&format!("\n\n{run} [stage-1 4/4]")), "{err}");
    // The export is a step of its own with BuildKit's sub-step lines.
    let export = number_of(" exporting to image");
    assert!(err.contains(&format!("{export} naming to docker.io/library/plain:1 done\n")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with(&format!("{export} writing image sha256:"))), "{err}");
    let summary = lines.last().unwrap();
    assert!(summary.starts_with("built docker.io/library/plain:1 sha256:") && summary.ends_with('s'), "{summary}");

    // Rebuilt: every step is `#N CACHED`, and nothing runs.
    let out = ok(build(store.path(), ctx.path(), &["--progress", "plain", "-t", "plain:1"]));
    let err = stderr(&out);
    assert!(err.contains(" RUN /bin/sh -c echo line-one && echo line-two >&2\n#"), "{err}");
    let run_block = err.split("\n\n").find(|b| b.contains("RUN /bin/sh -c echo line-one")).unwrap();
    assert!(run_block.ends_with(" CACHED"), "{run_block:?}");
    assert!(!err.lines().any(|l| l.ends_with(" line-two")), "a cached step printed output:\n{err}");

    // A failing step ends its block with `#N ERROR: ...`.
    let bad = context(&format!("FROM {}/busybox:latest\nRUN echo about-to-fail && exit 3\n", reg.addr));
    let out = build(store.path(), bad.path(), &["--progress", "plain"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let n = err
        .lines()
        .find(|l| l.ends_with("RUN /bin/sh -c echo about-to-fail && exit 3"))
        .unwrap_or_else(|| panic!("{err}"));
    let n = n.split(' ').next().unwrap();
    assert!(err.contains(&format!("{n} ERROR: ")), "{err}");
    assert!(err.contains(" about-to-fail\n"), "{err}");
}

#[test]
fn rawjson_is_buildkits_solve_status() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let ctx = context(&two_stage(&reg));
    let store = tempfile::tempdir().unwrap();
    let out = ok(build(store.path(), ctx.path(), &["--progress", "rawjson", "-t", "raw:1"]));
    let err = stderr(&out);
    let statuses_json = solve_statuses(&err);
    assert_eq!(statuses_json.len(), err.lines().count(), "every line is one SolveStatus:\n{err}");
    // BuildKit's client.SolveStatus field names, exactly (Go's JSON tags).
    let fields = |key: &str, allowed: &[&str], required: &[&str]| {
        for s in &statuses_json {
            for item in s.get(key).and_then(|v| v.as_array()).into_iter().flatten() {
                let obj = item.as_object().unwrap();
                for k in obj.keys() {
                    assert!(allowed.contains(&k.as_str()), "`{key}` has `{k}`: {item}");
                }
                for k in required {
                    assert!(obj.contains_key(*k), "`{key}` lacks `{k}`: {item}");
                }
            }
        }
    };
    for s in &statuses_json {
        for k in s.as_object().unwrap().keys() {
            assert!(["vertexes", "statuses", "logs", "warnings"].contains(&k.as_str()), "{s}");
        }
    }
    fields(
        "vertexes",
        &["digest", "inputs", "name", "started", "completed", "cached", "error", "progressGroup"],
        &["digest", "name"],
    );
    fields(
        "statuses",
        &["id", "vertex", "name", "total", "current", "timestamp", "started", "completed"],
        &["id", "vertex", "current", "timestamp"],
    );
    fields("logs", &["vertex", "stream", "data", "timestamp"], &["vertex", "stream", "data", "timestamp"]);
    fields("warnings", &["vertex", "level", "short", "detail", "url", "sourceInfo", "range"], &["short"]);
    // Times are RFC 3339.
    for s in &statuses_json {
        for v in s.get("vertexes").and_then(|v| v.as_array()).into_iter().flatten() {
            for t in ["started", "completed"] {
                if let Some(t) = v.get(t) {
                    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
                }
            }
        }
    }
    let vs = vertices(&err);
    let digests: Vec<&str> = vs.iter().map(|v| v.digest.as_str()).collect();
    assert!(vs.iter().all(|v| v.digest.starts_with("sha256:") && v.digest.len() == 71), "{vs:#?}");
    // Every vertex completes; inputs name vertices that were sent.
    assert!(vs.iter().all(|v| v.completed && v.error.is_none()), "{vs:#?}");
    assert!(vs.iter().flat_map(|v| &v.inputs).all(|i| digests.contains(&i.as_str())), "{vs:#?}");
    let run = vs.iter().find(|v| v.name.contains("RUN /bin/sh -c echo line-one")).unwrap();
    assert_eq!(run.starts, 1);
    assert!(!run.inputs.is_empty(), "the RUN reads the COPY before it: {run:?}");
    // Log data is base64 of the bytes, attributed to the RUN's vertex.
    assert!(logs(&err).contains("line-one\n") && logs(&err).contains("line-two\n"), "{err}");
    let streams: Vec<u64> = statuses_json
        .iter()
        .flat_map(|s| s.get("logs").and_then(|v| v.as_array()).cloned().unwrap_or_default())
        .filter(|l| l["vertex"] == run.digest.as_str())
        .map(|l| l["stream"].as_u64().unwrap())
        .collect();
    assert!(streams.contains(&1) && streams.contains(&2), "stdout is 1, stderr 2: {streams:?}");
    // The export's sub-steps are statuses of the `exporting to image` vertex.
    let export = vs.iter().find(|v| v.name == "exporting to image").unwrap();
    assert!(statuses(&err).contains(&"naming to docker.io/library/raw:1".to_string()), "{err}");
    let status_vertex = |id: &str| {
        statuses_json
            .iter()
            .flat_map(|s| s.get("statuses").and_then(|v| v.as_array()).cloned().unwrap_or_default())
            .find(|s| s["id"].as_str().unwrap_or("").starts_with(id))
            .map(|s| s["vertex"].as_str().unwrap().to_string())
    };
    assert_eq!(status_vertex("naming to ").as_deref(), Some(export.digest.as_str()), "{err}");
    assert_eq!(status_vertex("writing image ").as_deref(), Some(export.digest.as_str()), "{err}");
    // BuildKit's first step, with its `transferring dockerfile` status.
    let load = vs.iter().find(|v| v.name == "[internal] load build definition from Dockerfile").unwrap();
    assert_eq!(status_vertex("transferring dockerfile: ").as_deref(), Some(load.digest.as_str()), "{err}");
    assert!(ran(&err).iter().any(|n| n.contains("RUN /bin/sh -c echo building")), "{err}");

    // Rebuilt: the steps come back `cached` and nothing starts.
    let out = ok(build(store.path(), ctx.path(), &["--progress", "rawjson", "-t", "raw:1"]));
    let err = stderr(&out);
    assert!(ran(&err).iter().all(|n| !n.contains("RUN")), "{:?}", ran(&err));
    assert!(vertices(&err).iter().filter(|v| v.name.contains("RUN")).all(|v| v.cached), "{err}");

    // A failing step carries `error`.
    let bad = context(&format!("FROM {}/busybox:latest\nRUN exit 7\n", reg.addr));
    let out = build(store.path(), bad.path(), &["--progress", "rawjson"]);
    assert!(!out.status.success());
    let failed = vertices(&stderr(&out)).into_iter().find(|v| v.name.contains("RUN /bin/sh -c exit 7")).unwrap();
    assert!(failed.error.as_deref().unwrap_or("").contains("exit code: 7"), "{failed:?}");
}

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn start(script: &Path) -> Tmux {
        let t = Tmux { socket: format!("rbuild-progress-{}", std::process::id()) };
        let status = t
            .cmd()
            .args(["new-session", "-d", "-s", "t", "-x", "80", "-y", "24"])
            .arg(format!("sh {}", script.display()))
            .status()
            .expect("tmux is installed (scripts/setup.sh)");
        assert!(status.success());
        t
    }

    fn capture(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p", "-t", "t"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_for(&self, what: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let screen = self.capture();
            if what(&screen) {
                return Some(screen);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

/// The TTY view in a real 80x24 terminal: the header with time and counts,
/// one line per step, a six-line window of the running step's latest output
/// that goes when it ends, lines cut to the width (also after a resize), and
/// no output of the Dockerfile reaching the terminal as control sequences.
/// A marker printed above the view must stay on screen throughout: the view
/// never scrolls, however much a step prints, and a step's attempt to clear
/// the screen or retitle the window is defused.
#[test]
fn tty_view_in_a_terminal() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let long = "x".repeat(100);
    let dockerfile = format!(
        "FROM {0}/busybox:latest AS base\nRUN echo base-step\n\
         FROM base\nCOPY app.txt /\n\
         RUN seq 1 500 | sed 's/^/burst line /'; printf '\\033[2J\\033[H\\033]2;pwned\\007'; \
         i=0; while [ $i -lt 60 ]; do i=$((i+1)); echo \"slow line $i\"; sleep 0.2; done # {long}\n\
         RUN echo after-the-slow-step\n",
        reg.addr
    );
    let ctx = context(&dockerfile);
    let store = tempfile::tempdir().unwrap();
    let script = ctx.path().join("run.sh");
    std::fs::write(
        &script,
        format!(
            "echo MARKER-TOP\n'{}' --root '{}' build --progress tty -t tty:1 '{}'\necho EXIT=$?\nsleep 600\n",
            rbuild().get_program().to_string_lossy(),
            store.path().display(),
            ctx.path().display()
        ),
    )
    .unwrap();
    let tmux = Tmux::start(&script);

    // While the slow step runs: its window shows its latest lines.
    let running = tmux
        .wait_for(|s| s.contains(" => => # slow line "), Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the slow step's log window never showed:\n{}", tmux.capture()));
    let lines: Vec<&str> = running.lines().collect();
    assert_eq!(lines[0], "MARKER-TOP", "the view scrolled or the screen was cleared:\n{running}");
    let header = lines[1];
    assert!(header.starts_with("[+] Building "), "{running}");
    let counts = header.split('(').nth(1).unwrap().trim_end_matches(')');
    let (done, total) = counts.split_once('/').unwrap();
    let (done, total): (usize, usize) = (done.parse().unwrap(), total.trim_end_matches(')').parse().unwrap());
    assert!(done < total && total >= 5, "{header}");
    let window: Vec<&str> = lines.iter().copied().filter(|l| l.starts_with(" => => # ")).collect();
    assert!(!window.is_empty() && window.len() <= 6, "{running}");
    assert!(!running.contains("burst line 1\n"), "old output stayed in the window:\n{running}");
    let run_line =
        lines.iter().find(|l| l.contains("] RUN /bin/sh -c seq 1 500")).unwrap_or_else(|| panic!("{running}"));
    assert!(run_line.starts_with(" => [stage-1 3/4] RUN /bin/sh -c seq 1 500"), "{run_line}");
    // Cut to the width, ending in the step's time.
    assert!(run_line.chars().count() <= 80 && run_line.trim_end().ends_with('s'), "{run_line:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(" => [base 2/2] RUN /bin/sh -c echo base-step") && l.trim_end().ends_with('s'))
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 80));
    let title = tmux.cmd().args(["display-message", "-p", "-t", "t", "#{pane_title}"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&title.stdout).contains("pwned"), "the build retitled the terminal");

    // Narrowed to 50 columns: the next frames fit the new width.
    let resized = tmux.cmd().args(["resize-window", "-t", "t", "-x", "50", "-y", "24"]).status().unwrap();
    assert!(resized.success());
    let narrow = tmux
        .wait_for(
            |s| {
                let l: Vec<&str> = s.lines().collect();
                l.iter().any(|l| l.starts_with(" => => # slow line"))
                    && l.iter().all(|l| l.trim_end().chars().count() < 50)
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("the view did not follow the resize:\n{}", tmux.capture()));
    // (The terminal itself re-wraps what was drawn at 80 columns, which can
    // push the marker into the history; the view is drawn once, not twice.)
    assert_eq!(narrow.lines().filter(|l| l.starts_with("[+] Building ")).count(), 1, "{narrow}");
    tmux.cmd().args(["resize-window", "-t", "t", "-x", "80", "-y", "24"]).status().unwrap();

    // Finished: the final frame lists every step, the windows are gone.
    let end = tmux
        .wait_for(|s| s.contains("EXIT="), Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the build did not end:\n{}", tmux.capture()));
    assert!(end.contains("EXIT=0"), "{end}");
    assert!(!end.contains(" => => # "), "a log window stayed after the build:\n{end}");
    let header = end.lines().find(|l| l.starts_with("[+] Building ")).unwrap();
    assert!(header.contains(" FINISHED"), "{header}");
    let counts = header.split('(').nth(1).unwrap().split(')').next().unwrap();
    let (done, total) = counts.split_once('/').unwrap();
    assert_eq!(done, total, "{header}");
    for step in [
        "] RUN /bin/sh -c echo base-step",
        "] COPY app.txt /",
        "] RUN /bin/sh -c seq 1 500",
        "] RUN /bin/sh -c echo after-the-slow-step",
    ] {
        assert!(end.lines().any(|l| l.contains(step) && l.starts_with(" => ")), "{step}:\n{end}");
    }
    assert!(end.contains(" => exporting to image"), "{end}");
    assert!(end.contains(" => => naming to docker.io/library/tty:1"), "{end}");
    assert!(end.lines().any(|l| l.starts_with(" => => writing image sha256:")), "{end}");
    assert!(end.lines().any(|l| l.starts_with("built docker.io/library/tty:1 sha256:")), "{end}");
    assert_eq!(end.lines().filter(|l| l.starts_with("[+] Building ")).count(), 1, "{end}");
}

/// A push is a step with byte counts: `pushing layers` counts up to the
/// image's size as blobs finish, each uploaded blob is a status, and the
/// last line gives the bytes sent and the rate.
#[test]
fn push_progress_counts_bytes() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let ctx = context(&format!("FROM {}/busybox:latest\nRUN head -c 300000 /dev/urandom > /blob\n", reg.addr));
    let store = tempfile::tempdir().unwrap();
    let name = format!("{}/pushed:1", reg.addr);
    let out = ok(build(store.path(), ctx.path(), &["--progress", "rawjson", "--push", "-t", &name]));
    let err = stderr(&out);
    let vs = vertices(&err);
    let push = vs.iter().find(|v| v.name == format!("pushing {name}")).unwrap_or_else(|| panic!("{err}"));
    assert!(push.completed && push.error.is_none(), "{push:?}");
    let layers: Vec<serde_json::Value> = solve_statuses(&err)
        .iter()
        .flat_map(|s| s.get("statuses").and_then(|v| v.as_array()).cloned().unwrap_or_default())
        .filter(|s| s["id"] == "pushing layers")
        .collect();
    let last = layers.last().unwrap_or_else(|| panic!("{err}"));
    assert_eq!(last["vertex"], push.digest.as_str());
    assert!(last["completed"].is_string(), "{last}");
    let total = last["total"].as_u64().unwrap();
    assert_eq!(last["current"].as_u64(), Some(total), "{last}");
    assert!(total > 300_000, "the image holds the 300 kB layer: {total}");
    // Counted up as blobs finished, never past the total.
    let currents: Vec<u64> = layers.iter().map(|s| s["current"].as_u64().unwrap()).collect();
    assert!(currents.windows(2).all(|w| w[0] <= w[1]) && currents.len() >= 3, "{currents:?}");
    let ids = statuses(&err);
    assert!(ids.iter().filter(|id| id.starts_with("pushing sha256:")).count() >= 2, "{ids:?}");
    let summary = ids.iter().find(|id| id.contains(" blob(s) uploaded (")).unwrap_or_else(|| panic!("{ids:?}"));
    assert!(summary.contains("/s), "), "{summary}");
}
