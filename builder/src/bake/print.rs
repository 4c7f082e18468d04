//! `rbuild bake --print`: the resolved definition as JSON in buildx's shape
//! and key order (struct field order for targets, sorted map keys, two-space
//! indentation, HTML characters escaped as Go's encoder does, `${` escaped
//! as `$${` in values bake would interpolate again).

use std::fmt::Write as _;

use super::resolve::{Resolved, build_context_path};
use super::target::{NullableMap, Target};

/// An ordered JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number, already formatted.
    Num(String),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in the order given.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Converts from serde_json (object keys sorted).
    pub fn from_serde(v: &serde_json::Value) -> Json {
        match v {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(*b),
            serde_json::Value::Number(n) => Json::Num(n.to_string()),
            serde_json::Value::String(s) => Json::Str(s.clone()),
            serde_json::Value::Array(a) => Json::Arr(a.iter().map(Json::from_serde).collect()),
            serde_json::Value::Object(o) => {
                Json::Obj(o.iter().map(|(k, v)| (k.clone(), Json::from_serde(v))).collect())
            }
        }
    }

    /// Converts to serde_json (loses key order).
    pub fn to_serde(&self) -> serde_json::Value {
        match self {
            Json::Null => serde_json::Value::Null,
            Json::Bool(b) => serde_json::Value::Bool(*b),
            Json::Num(n) => serde_json::from_str(n).unwrap_or(serde_json::Value::Null),
            Json::Str(s) => serde_json::Value::String(s.clone()),
            Json::Arr(a) => serde_json::Value::Array(a.iter().map(Json::to_serde).collect()),
            Json::Obj(o) => serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_serde())).collect()),
        }
    }

    /// Pretty-prints as Go's `json.MarshalIndent(v, "", "  ")`.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = |d: usize| "  ".repeat(d);
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Num(n) => out.push_str(n),
            Json::Str(s) => write_str(out, s),
            Json::Arr(a) if a.is_empty() => out.push_str("[]"),
            Json::Arr(a) => {
                out.push_str("[\n");
                for (i, v) in a.iter().enumerate() {
                    out.push_str(&pad(depth + 1));
                    v.write(out, depth + 1);
                    out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(depth));
                out.push(']');
            }
            Json::Obj(o) if o.is_empty() => out.push_str("{}"),
            Json::Obj(o) => {
                out.push_str("{\n");
                for (i, (k, v)) in o.iter().enumerate() {
                    out.push_str(&pad(depth + 1));
                    write_str(out, k);
                    out.push_str(": ");
                    v.write(out, depth + 1);
                    out.push_str(if i + 1 < o.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(depth));
                out.push('}');
            }
        }
    }
}

fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Bake would interpolate a printed value again: escape it.
fn esc(s: &str) -> String {
    s.replace("${", "$${").replace("%{", "%%{")
}

fn strs(v: &[String]) -> Json {
    Json::Arr(v.iter().map(|s| Json::Str(s.clone())).collect())
}

fn nullable_map(m: &NullableMap, escape: bool) -> Json {
    Json::Obj(
        m.iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_ref().map(|s| Json::Str(if escape { esc(s) } else { s.clone() })).unwrap_or(Json::Null),
                )
            })
            .collect(),
    )
}

fn flat(m: impl IntoIterator<Item = (String, String)>) -> Json {
    let mut v: Vec<(String, String)> = m.into_iter().collect();
    v.sort();
    Json::Obj(v.into_iter().map(|(k, v)| (k, Json::Str(v))).collect())
}

/// One target as buildx's `Target` marshals it.
pub fn target_json(t: &Target, print_level: bool) -> Json {
    let mut o: Vec<(String, Json)> = Vec::new();
    let mut put = |k: &str, v: Json| o.push((k.to_string(), v));
    if !t.description.is_empty() {
        put("description", Json::Str(t.description.clone()));
    }
    if !t.inherits.is_empty() {
        put("inherits", strs(&t.inherits));
    }
    if let Some(a) = t.annotations.as_ref().filter(|a| !a.is_empty()) {
        put("annotations", Json::Arr(a.iter().map(|s| Json::Str(esc(s))).collect()));
    }
    if let Some(a) = t.attest.as_ref().filter(|a| !a.is_empty()) {
        put(
            "attest",
            Json::Arr(
                a.iter()
                    .map(|e| {
                        let mut kv: Vec<(String, Json)> =
                            e.attrs.iter().map(|(k, v)| (k.clone(), Json::Str(v.clone()))).collect();
                        kv.push(("type".into(), Json::Str(e.kind.clone())));
                        if e.disabled {
                            kv.push(("disabled".into(), Json::Bool(true)));
                        }
                        kv.sort_by(|a, b| a.0.cmp(&b.0));
                        Json::Obj(kv)
                    })
                    .collect(),
            ),
        );
    }
    if let Some(c) = &t.context {
        put("context", Json::Str(if print_level { build_context_path(c) } else { c.clone() }));
    }
    if let Some(c) = t.contexts.as_ref().filter(|c| !c.is_empty()) {
        put("contexts", Json::Obj(c.iter().map(|(k, v)| (k.clone(), Json::Str(v.clone()))).collect()));
    }
    if let Some(d) = &t.dockerfile {
        put("dockerfile", Json::Str(d.clone()));
    }
    if let Some(d) = &t.dockerfile_inline {
        put("dockerfile-inline", Json::Str(esc(d)));
    }
    if let Some(a) = t.args.as_ref().filter(|a| !a.is_empty()) {
        put("args", nullable_map(a, true));
    }
    if let Some(a) = t.labels.as_ref().filter(|a| !a.is_empty()) {
        put("labels", nullable_map(a, true));
    }
    if let Some(a) = t.tags.as_ref().filter(|a| !a.is_empty()) {
        put("tags", strs(a));
    }
    if let Some(a) = t.cache_from.as_ref().filter(|a| !a.is_empty()) {
        put("cache-from", Json::Arr(a.iter().map(|e| flat(e.flat())).collect()));
    }
    if let Some(a) = t.cache_to.as_ref().filter(|a| !a.is_empty()) {
        put("cache-to", Json::Arr(a.iter().map(|e| flat(e.flat())).collect()));
    }
    if let Some(x) = &t.target {
        put("target", Json::Str(x.clone()));
    }
    if let Some(a) = t.secret.as_ref().filter(|a| !a.is_empty()) {
        put(
            "secret",
            Json::Arr(
                a.iter().map(|e| Json::Obj(e.flat().into_iter().map(|(k, v)| (k, Json::Str(v))).collect())).collect(),
            ),
        );
    }
    if let Some(a) = t.ssh.as_ref().filter(|a| !a.is_empty()) {
        put(
            "ssh",
            Json::Arr(
                a.iter()
                    .map(|e| {
                        let mut kv = Vec::new();
                        if !e.id.is_empty() {
                            kv.push(("id".to_string(), Json::Str(e.id.clone())));
                        }
                        if !e.paths.is_empty() {
                            kv.push(("paths".to_string(), strs(&e.paths)));
                        }
                        Json::Obj(kv)
                    })
                    .collect(),
            ),
        );
    }
    if let Some(a) = t.platforms.as_ref().filter(|a| !a.is_empty()) {
        put("platforms", strs(a));
    }
    if let Some(a) = t.output.as_ref().filter(|a| !a.is_empty()) {
        put("output", Json::Arr(a.iter().map(|e| flat(e.flat())).collect()));
    }
    if let Some(b) = t.pull {
        put("pull", Json::Bool(b));
    }
    if let Some(b) = t.no_cache {
        put("no-cache", Json::Bool(b));
    }
    if let Some(n) = &t.network {
        put("network", Json::Str(n.clone()));
    }
    if let Some(a) = t.no_cache_filter.as_ref().filter(|a| !a.is_empty()) {
        put("no-cache-filter", strs(a));
    }
    if let Some(s) = &t.shm_size {
        put("shm-size", Json::Str(s.clone()));
    }
    if let Some(a) = t.ulimits.as_ref().filter(|a| !a.is_empty()) {
        put("ulimits", strs(a));
    }
    if let Some(r) = &t.resources {
        put("resources", Json::Obj(r.json().into_iter().map(|(k, v)| (k.to_string(), Json::from_serde(&v))).collect()));
    }
    if let Some(c) = &t.call {
        put("call", Json::Str(c.clone()));
    }
    if let Some(a) = t.entitlements.as_ref().filter(|a| !a.is_empty()) {
        put("entitlements", strs(a));
    }
    if let Some(a) = t.extra_hosts.as_ref().filter(|a| !a.is_empty()) {
        put("extra-hosts", nullable_map(a, true));
    }
    Json::Obj(o)
}

/// The whole `--print` document.
pub fn print_json(r: &Resolved) -> Json {
    let groups = Json::Obj(
        r.groups
            .iter()
            .map(|(name, g)| {
                let mut o = Vec::new();
                if !g.description.is_empty() {
                    o.push(("description".to_string(), Json::Str(g.description.clone())));
                }
                o.push(("targets".to_string(), strs(&g.targets)));
                (name.clone(), Json::Obj(o))
            })
            .collect(),
    );
    let targets = Json::Obj(r.targets.iter().map(|(n, t)| (n.clone(), target_json(t, true))).collect());
    Json::Obj(vec![("group".into(), groups), ("target".into(), targets)])
}
