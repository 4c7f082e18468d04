//! `--progress rawjson`: one BuildKit `client.SolveStatus` per line, as
//! `docker buildx build --progress rawjson` prints it. Field names, casing
//! and omitempty behaviour follow BuildKit's `client/graph.go`: a vertex is
//! sent whole each time it changes, times are RFC 3339 with nanoseconds and
//! log data is base64 (Go's encoding of `[]byte`).

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::model::{Change, Trace};

#[derive(Serialize, Default)]
struct SolveStatus<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vertexes: Vec<Vertex<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<VertexStatus<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logs: Vec<VertexLog<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<VertexWarning>,
}

#[derive(Serialize)]
struct Vertex<'a> {
    digest: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    inputs: &'a [String],
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cached: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    error: &'a str,
}

#[derive(Serialize)]
struct VertexStatus<'a> {
    id: &'a str,
    vertex: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "is_zero")]
    total: u64,
    current: u64,
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<String>,
}

#[derive(Serialize)]
struct VertexLog<'a> {
    vertex: &'a str,
    stream: u8,
    data: String,
    timestamp: String,
}

#[derive(Serialize)]
struct VertexWarning {
    /// BuildKit's level for a build warning (lint rules use 1 too).
    level: u8,
    short: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Go's `time.RFC3339Nano` form.
fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The JSON line for `change`.
pub fn line(trace: &Trace, change: &Change) -> String {
    let mut status = SolveStatus::default();
    match change {
        Change::Vertex(i) => {
            let v = &trace.vertices[*i];
            status.vertexes.push(Vertex {
                digest: &v.digest,
                inputs: &v.inputs,
                name: &v.name,
                started: v.started.map(|s| time(s.wall)),
                completed: v.completed.map(|s| time(s.wall)),
                cached: v.cached,
                error: v.error.as_deref().unwrap_or(""),
            });
        }
        Change::Log { vertex, stream, line, at } => {
            let mut data = line.clone().into_bytes();
            data.push(b'\n');
            status.logs.push(VertexLog {
                vertex: &trace.vertices[*vertex].digest,
                stream: *stream,
                data: b64(&data),
                timestamp: time(at.wall),
            });
        }
        Change::Status { vertex, status: s } => {
            let v = &trace.vertices[*vertex];
            let s = &v.statuses[*s];
            status.statuses.push(VertexStatus {
                id: &s.id,
                vertex: &v.digest,
                name: "",
                total: s.total,
                current: s.current,
                timestamp: time(s.updated.wall),
                started: Some(time(s.started.wall)),
                completed: s.completed.map(|c| time(c.wall)),
            });
        }
        Change::Warning(text) => status.warnings.push(VertexWarning { level: 1, short: b64(text.as_bytes()) }),
    }
    // Plain data structures of strings and numbers cannot fail to encode.
    serde_json::to_string(&status).unwrap_or_default()
}
