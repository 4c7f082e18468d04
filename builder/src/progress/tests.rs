//! The plain and rawjson renderings of a scripted build.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rbuild_solver::graph::Digest;

use super::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn digest(n: u8) -> Digest {
    Digest([n; 32])
}

/// A two-step build whose second step logs, then an export phase.
fn script(mode: Mode) -> String {
    let out = Capture::default();
    let p = Printer::with_output(mode, Box::new(out.clone()));
    p.event(Event::Planned { digest: digest(1), name: "[1/2] FROM docker.io/library/busybox".into(), inputs: vec![] });
    p.event(Event::Planned { digest: digest(2), name: "[2/2] RUN echo hi".into(), inputs: vec![digest(1)] });
    p.event(Event::Cached { digest: digest(1), name: "[1/2] FROM docker.io/library/busybox".into() });
    p.event(Event::Started { digest: digest(2), name: "[2/2] RUN echo hi".into() });
    p.event(Event::Log { digest: digest(2), stream: 1, line: "hi \x1b[31mred".into() });
    p.event(Event::Done { digest: digest(2), elapsed: Duration::from_millis(5) });
    let phase = p.phase("exporting to image");
    p.message("exporting layers");
    let task = p.task("pushing sha256:abc");
    task.set(1_500_000, 3_000_000);
    task.set(3_000_000, 3_000_000);
    task.done();
    p.message("naming to docker.io/library/app:1");
    phase.done();
    p.warn("build arg `X` was not consumed by any ARG");
    p.summary(&["docker.io/library/app:1".to_string()], "sha256:feed");
    p.finish();
    drop(p);
    let bytes = out.0.lock().unwrap().clone();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn plain_is_buildkits_format() {
    let text = script(Mode::Plain);
    let lines: Vec<&str> = text.lines().collect();
    let expected_start = ["#1 [1/2] FROM docker.io/library/busybox", "#1 CACHED", "", "#2 [2/2] RUN echo hi"];
    assert_eq!(&lines[..4], &expected_start, "{text}");
    // Log time since the step started, three decimals; escapes removed.
    let log = lines[4];
    assert!(log.starts_with("#2 0.0") && log.ends_with(" hi red") && log.len() == "#2 0.000 hi red".len(), "{log:?}");
    assert!(lines[5].starts_with("#2 DONE ") && lines[5].ends_with('s'), "{text}");
    assert_eq!(lines[6], "");
    assert_eq!(lines[7], "#3 exporting to image");
    assert_eq!(lines[8], "#3 exporting layers done");
    assert_eq!(lines[9], "#3 pushing sha256:abc", "{text}");
    assert_eq!(lines[10], "#3 pushing sha256:abc 1.50MB / 3.00MB");
    assert_eq!(lines[11], "#3 pushing sha256:abc 3.00MB / 3.00MB");
    assert_eq!(lines[12], "#3 pushing sha256:abc 3.00MB / 3.00MB done");
    assert_eq!(lines[13], "#3 naming to docker.io/library/app:1 done");
    assert!(lines[14].starts_with("#3 DONE "), "{text}");
    assert_eq!(&lines[15..18], ["", " 1 warning found:", " - build arg `X` was not consumed by any ARG"]);
    let summary = lines[18];
    assert!(
        summary.starts_with("built docker.io/library/app:1 sha256:feed in ") && summary.ends_with('s'),
        "{summary}"
    );
    assert_eq!(lines.len(), 19, "{text}");
}

#[test]
fn rawjson_lines_are_solve_statuses_with_buildkits_field_names() {
    let text = script(Mode::RawJson);
    let values: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let allowed_top = ["vertexes", "statuses", "logs", "warnings"];
    for v in &values {
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 1, "{v}");
        assert!(obj.keys().all(|k| allowed_top.contains(&k.as_str())), "{v}");
    }
    let vertexes: Vec<&serde_json::Value> =
        values.iter().filter_map(|v| v.get("vertexes")).flat_map(|a| a.as_array().unwrap()).collect();
    // Announced without times, BuildKit's first message.
    assert_eq!(vertexes[0]["name"], "[1/2] FROM docker.io/library/busybox");
    assert_eq!(vertexes[0]["digest"], format!("sha256:{}", "01".repeat(32)));
    assert!(vertexes[0].get("started").is_none() && vertexes[0].get("inputs").is_none());
    assert_eq!(vertexes[1]["inputs"], serde_json::json!([format!("sha256:{}", "01".repeat(32))]));
    let cached = vertexes.iter().find(|v| v["cached"] == true).unwrap();
    assert!(cached["started"].is_string() && cached["completed"].is_string());
    chrono::DateTime::parse_from_rfc3339(cached["started"].as_str().unwrap()).unwrap();
    // `cached: false` and empty errors are omitted, as Go's omitempty does.
    assert!(vertexes.iter().all(|v| v.get("cached") != Some(&serde_json::json!(false)) && v.get("error").is_none()));
    let log = values.iter().find_map(|v| v.get("logs")).unwrap()[0].clone();
    assert_eq!(log["vertex"], format!("sha256:{}", "02".repeat(32)));
    assert_eq!(log["stream"], 1);
    let data = base64::engine::general_purpose::STANDARD.decode(log["data"].as_str().unwrap()).unwrap();
    assert_eq!(data, b"hi \x1b[31mred\n", "rawjson carries the bytes as they were");
    chrono::DateTime::parse_from_rfc3339(log["timestamp"].as_str().unwrap()).unwrap();
    let statuses: Vec<&serde_json::Value> =
        values.iter().filter_map(|v| v.get("statuses")).flat_map(|a| a.as_array().unwrap()).collect();
    let push = statuses.iter().rfind(|s| s["id"] == "pushing sha256:abc").unwrap();
    assert_eq!((push["current"].as_u64(), push["total"].as_u64()), (Some(3_000_000), Some(3_000_000)));
    assert!(push["completed"].is_string() && push["started"].is_string() && push["timestamp"].is_string());
    let export = vertexes.iter().find(|v| v["name"] == "exporting to image").unwrap();
    assert_eq!(push["vertex"], export["digest"]);
    let warning = values.iter().find_map(|v| v.get("warnings")).unwrap()[0].clone();
    let short = base64::engine::general_purpose::STANDARD.decode(warning["short"].as_str().unwrap()).unwrap();
    assert_eq!(short, b"build arg `X` was not consumed by any ARG");
    // No summary or other text: every line is one SolveStatus.
    assert!(!text.contains("built "));
}

#[test]
fn a_phase_left_by_an_error_is_marked_failed() {
    let out = Capture::default();
    let p = Printer::with_output(Mode::Plain, Box::new(out.clone()));
    {
        let _phase = p.phase("exporting to image");
    }
    p.finish();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text, "#1 exporting to image\n#1 ERROR: failed\n");
}

#[test]
fn tty_final_frame_lists_steps_then_the_failed_steps_logs() {
    let out = Capture::default();
    let p = Printer::with_output(Mode::Tty, Box::new(out.clone()));
    p.event(Event::Planned { digest: digest(1), name: "[1/1] RUN make".into(), inputs: vec![] });
    p.event(Event::Started { digest: digest(1), name: "[1/1] RUN make".into() });
    for i in 0..12 {
        p.event(Event::Log { digest: digest(1), stream: 2, line: format!("cc error {i}") });
    }
    p.event(Event::Failed { digest: digest(1), error: "exit code: 2".into() });
    p.finish();
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    // The last frame, after the last cursor-up.
    let last = text.rsplit("\x1b[?25l").next().unwrap();
    assert!(last.contains("[+] Building ") && last.contains("(1/1) FINISHED"), "{last:?}");
    assert!(last.contains(" => ERROR [1/1] RUN make"), "{last:?}");
    assert!(!last.contains(" => => # "), "{last:?}");
    // Then the step's last 10 lines, as buildx prints them.
    let tail = last.split("------\n").nth(1).unwrap();
    let expected: String =
        std::iter::once(" > [1/1] RUN make:\n".to_string()).chain((2..12).map(|i| format!("cc error {i}\n"))).collect();
    assert_eq!(tail, expected);
}
