//! Reading `--progress rawjson` (BuildKit `SolveStatus` lines) in tests: one
//! place that knows the format, so every test asks the same questions.
//!
//! Each line is a JSON object with any of `vertexes`, `statuses`, `logs` and
//! `warnings`; a vertex is re-sent whole whenever it changes: announced
//! (no times), started (`started`), then completed (`completed`, and
//! `cached` or `error`).

use base64::Engine as _;
use serde_json::Value;

/// What one vertex did over the build.
#[derive(Debug, Clone, Default)]
pub struct Vertex {
    pub digest: String,
    pub name: String,
    pub inputs: Vec<String>,
    /// How many times it was sent as started and not yet completed: one per
    /// execution.
    pub starts: usize,
    pub cached: bool,
    pub completed: bool,
    pub error: Option<String>,
}

/// Every `SolveStatus` on `stderr` (other lines are skipped: a failing
/// build prints its error as text after the JSON).
pub fn solve_statuses(stderr: &str) -> Vec<Value> {
    stderr.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(Value::is_object).collect()
}

fn array<'a>(status: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    status.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// The vertices on `stderr`, in the order they were first sent.
pub fn vertices(stderr: &str) -> Vec<Vertex> {
    let mut out: Vec<Vertex> = Vec::new();
    for status in solve_statuses(stderr) {
        for v in array(&status, "vertexes") {
            let digest = v["digest"].as_str().unwrap_or_default().to_string();
            let i = match out.iter().position(|x| x.digest == digest) {
                Some(i) => i,
                None => {
                    out.push(Vertex { digest, ..Vertex::default() });
                    out.len() - 1
                }
            };
            let rec = &mut out[i];
            if let Some(name) = v["name"].as_str() {
                rec.name = name.to_string();
            }
            if let Some(inputs) = v["inputs"].as_array() {
                rec.inputs = inputs.iter().filter_map(Value::as_str).map(str::to_string).collect();
            }
            let (started, completed) = (v.get("started").is_some(), v.get("completed").is_some());
            if started && !completed {
                rec.starts += 1;
            }
            rec.completed |= completed;
            rec.cached |= v["cached"] == true;
            if let Some(e) = v["error"].as_str() {
                rec.error = Some(e.to_string());
            }
        }
    }
    out
}

/// Names of the solve's steps that executed (not cached), once per
/// execution, in the order they started. Solve steps are the vertices first
/// sent announced (without times); the builder's export phases first appear
/// started and are not counted.
pub fn ran(stderr: &str) -> Vec<String> {
    let mut announced: Vec<String> = Vec::new();
    let mut names = Vec::new();
    for status in solve_statuses(stderr) {
        for v in array(&status, "vertexes") {
            let digest = v["digest"].as_str().unwrap_or_default().to_string();
            let (started, completed) = (v.get("started").is_some(), v.get("completed").is_some());
            if !started && !completed {
                announced.push(digest);
            } else if started && !completed && announced.contains(&digest) {
                names.push(v["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    names
}

/// The ids of every status (export sub-steps such as `naming to ...`),
/// once each, in order.
pub fn statuses(stderr: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for status in solve_statuses(stderr) {
        for s in array(&status, "statuses") {
            let id = s["id"].as_str().unwrap_or_default().to_string();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}

/// Everything the steps printed, decoded, in order.
pub fn logs(stderr: &str) -> String {
    let mut text = Vec::new();
    for status in solve_statuses(stderr) {
        for l in array(&status, "logs") {
            let data = l["data"].as_str().unwrap_or_default();
            text.extend(base64::engine::general_purpose::STANDARD.decode(data).expect("log data is base64"));
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The warnings, decoded.
pub fn warnings(stderr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for status in solve_statuses(stderr) {
        for w in array(&status, "warnings") {
            let short = w["short"].as_str().unwrap_or_default();
            let bytes = base64::engine::general_purpose::STANDARD.decode(short).expect("warning text is base64");
            out.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    out
}
