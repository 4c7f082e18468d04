//! Compose files as bake reads them: each service with a `build:` section is
//! a target (its name with `.` replaced by `_`), all of them in the
//! `default` group. `${VAR}`, `${VAR:-default}` and `$VAR` are interpolated
//! from the environment, as compose does.

use std::collections::BTreeMap;

use serde_yaml::Value as Y;

use super::entries::{CacheEntry, EntryError, Export, SecretEntry, SshEntry, dedup, dedup_by_key, go_remove_dupes};
use super::error::{BakeError, SourceText};
use super::parse::{Config, ParseOptions, local_file_dir};
use super::target::{Group, Target};

/// Whether `text` is YAML with a `services` mapping.
pub fn looks_like_compose(text: &str) -> bool {
    matches!(serde_yaml::from_str::<Y>(text), Ok(Y::Mapping(m)) if m.contains_key("services"))
}

/// One `${...}`: `NAME`, `NAME:-default`/`NAME-default` (unset or empty /
/// unset), `NAME:+alt`/`NAME+alt` (set and non-empty / set); `NAME:?msg` and
/// `NAME?msg` are checked up front by [`check_required`].
fn expand(inner: &str, env: &BTreeMap<String, String>) -> String {
    let op_at = inner.find([':', '-', '+', '?']).unwrap_or(inner.len());
    let (name, rest) = inner.split_at(op_at);
    let value = env.get(name);
    let set_nonempty = value.is_some_and(|v| !v.is_empty());
    match rest {
        "" => value.cloned().unwrap_or_default(),
        r if r.starts_with(":-") => {
            if set_nonempty {
                value.cloned().unwrap_or_default()
            } else {
                r[2..].to_string()
            }
        }
        r if r.starts_with('-') => value.cloned().unwrap_or_else(|| r[1..].to_string()),
        r if r.starts_with(":+") => {
            if set_nonempty {
                r[2..].to_string()
            } else {
                String::new()
            }
        }
        r if r.starts_with('+') => {
            if value.is_some() {
                r[1..].to_string()
            } else {
                String::new()
            }
        }
        _ => value.cloned().unwrap_or_default(),
    }
}

/// A `${NAME:?message}` whose variable is not set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("required variable {name} is missing a value: {message}")]
pub struct RequiredVariable {
    /// The variable.
    pub name: String,
    /// The file's message.
    pub message: String,
}

/// `${NAME:?message}` / `${NAME?message}` with NAME unset (or empty, for
/// `:?`) is an error, as in compose.
fn check_required(text: &str, env: &BTreeMap<String, String>) -> Result<(), RequiredVariable> {
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let escaped = i > 0 && rest[..i].ends_with('$');
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else { break };
        let inner = &after[..end];
        rest = &after[end..];
        if escaped {
            continue;
        }
        let op_at = inner.find([':', '-', '+', '?']).unwrap_or(inner.len());
        let (name, op) = inner.split_at(op_at);
        let value = env.get(name);
        let missing = match op {
            o if o.starts_with(":?") => value.is_none_or(|v| v.is_empty()),
            o if o.starts_with('?') => value.is_none(),
            _ => false,
        };
        if missing {
            let msg = op.trim_start_matches(':').trim_start_matches('?');
            return Err(RequiredVariable { name: name.to_string(), message: msg.to_string() });
        }
    }
    Ok(())
}

fn interpolate(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        if chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if chars.get(i + 1) == Some(&'{') {
            let Some(end) = chars[i..].iter().position(|c| *c == '}') else {
                out.push('$');
                i += 1;
                continue;
            };
            let inner: String = chars[i + 2..i + end].iter().collect();
            let v = expand(&inner, env);
            out.push_str(&v);
            i += end + 1;
            continue;
        }
        let name: String = chars[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
        } else {
            out.push_str(env.get(&name).map(String::as_str).unwrap_or(""));
            i += 1 + name.chars().count();
        }
    }
    out
}

fn scalar(v: &Y, env: &BTreeMap<String, String>) -> Option<String> {
    match v {
        Y::String(s) => Some(interpolate(s, env)),
        Y::Number(n) => Some(n.to_string()),
        Y::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn list(v: Option<&Y>, env: &BTreeMap<String, String>) -> Option<Vec<String>> {
    match v? {
        Y::Sequence(s) => Some(s.iter().filter_map(|x| scalar(x, env)).collect()),
        other => scalar(other, env).map(|s| vec![s]),
    }
}

/// A compose map or `KEY=VALUE` list.
fn map(v: Option<&Y>, env: &BTreeMap<String, String>) -> Option<BTreeMap<String, Option<String>>> {
    match v? {
        Y::Mapping(m) => Some(
            m.iter()
                .filter_map(|(k, v)| Some((scalar(k, env)?, if v.is_null() { None } else { scalar(v, env) })))
                .collect(),
        ),
        Y::Sequence(s) => Some(
            s.iter()
                .filter_map(|x| scalar(x, env))
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (kv.clone(), env.get(&kv).cloned()),
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The `x-bake` extension of a service's `build:` (buildx `composeExtTarget`):
/// lists append, `pull`/`no-cache` replace, `contexts` fill gaps.
fn x_bake(t: &mut Target, xb: &Y, env: &BTreeMap<String, String>) -> Result<(), EntryError> {
    fn add(field: &mut Option<Vec<String>>, more: Option<Vec<String>>) {
        if let Some(more) = more.filter(|m| !m.is_empty()) {
            let mut all = field.take().unwrap_or_default();
            all.extend(more);
            *field = Some(dedup(all));
        }
    }
    add(&mut t.tags, list(xb.get("tags"), env));
    add(&mut t.platforms, list(xb.get("platforms"), env));
    add(&mut t.no_cache_filter, list(xb.get("no-cache-filter"), env));
    for (key, field) in [("cache-from", &mut t.cache_from), ("cache-to", &mut t.cache_to)] {
        if let Some(items) = list(xb.get(key), env) {
            let mut all = field.take().unwrap_or_default();
            for i in items {
                all.extend(CacheEntry::parse_list(&i)?);
            }
            *field = Some(go_remove_dupes(all));
        }
    }
    if let Some(items) = list(xb.get("secret"), env) {
        let mut all = t.secret.take().unwrap_or_default();
        for i in items {
            all.push(SecretEntry::parse(&i)?);
        }
        t.secret = Some(dedup_by_key(all, |s| s.id.clone()));
    }
    if let Some(items) = list(xb.get("ssh"), env) {
        let mut all = t.ssh.take().unwrap_or_default();
        all.extend(items.iter().map(|s| SshEntry::parse(s)));
        let mut all = dedup_by_key(all, |s| s.id.clone());
        all.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| a.paths.cmp(&b.paths)));
        t.ssh = Some(all);
    }
    if let Some(items) = list(xb.get("output"), env) {
        let mut all = t.output.take().unwrap_or_default();
        for i in items {
            all.push(Export::parse(&i)?);
        }
        t.output = Some(go_remove_dupes(all));
    }
    if let Some(b) = xb.get("pull").and_then(Y::as_bool) {
        t.pull = Some(b);
    }
    if let Some(b) = xb.get("no-cache").and_then(Y::as_bool) {
        t.no_cache = Some(b);
    }
    if let Some(m) = map(xb.get("contexts"), env) {
        let c = t.contexts.get_or_insert_with(BTreeMap::new);
        for (k, v) in m {
            c.entry(k).or_insert_with(|| v.unwrap_or_default());
        }
    }
    Ok(())
}

/// Parses compose files into targets and a `default` group.
pub fn parse(files: &[&SourceText], opts: &ParseOptions) -> Result<Config, BakeError> {
    let mut c = Config::default();
    let env = &opts.env;
    let mut names = Vec::new();
    for f in files {
        check_required(&f.text, env)
            .map_err(|e| BakeError::Unlocated { file: f.name.clone(), message: e.to_string() })?;
        let doc: Y =
            serde_yaml::from_str(&f.text).map_err(|source| BakeError::Yaml { file: f.name.clone(), source })?;
        let Some(Y::Mapping(services)) = doc.get("services") else {
            return Err(BakeError::Unlocated {
                file: f.name.clone(),
                message: "compose file has no `services`".into(),
            });
        };
        for (name, svc) in services {
            let Some(name) = name.as_str() else { continue };
            let name = name.replace('.', "_");
            let Some(build) = svc.get("build") else { continue };
            let mut t = Target { name: name.clone(), ..Default::default() };
            match build {
                Y::String(ctx) => t.context = Some(interpolate(ctx, env)),
                Y::Mapping(_) => {
                    let get = |k: &str| build.get(k).and_then(|v| scalar(v, env));
                    t.context = get("context");
                    t.dockerfile = get("dockerfile");
                    t.dockerfile_inline = get("dockerfile_inline");
                    t.target = get("target");
                    t.network = get("network");
                    t.shm_size = get("shm_size");
                    t.args = map(build.get("args"), env)
                        .map(|m| m.into_iter().filter_map(|(k, v)| Some((k, Some(v?)))).collect());
                    t.labels = map(build.get("labels"), env);
                    t.contexts = map(build.get("additional_contexts"), env)
                        .map(|m| m.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect());
                    t.platforms = list(build.get("platforms"), env);
                    t.tags = list(build.get("tags"), env);
                    t.no_cache = build.get("no_cache").and_then(Y::as_bool);
                    t.pull = build.get("pull").and_then(Y::as_bool);
                    t.entitlements = list(build.get("entitlements"), env);
                    t.extra_hosts = map(build.get("extra_hosts"), env);
                    let parse_cache =
                        |k: &str| -> Result<Option<Vec<CacheEntry>>, BakeError> {
                            let Some(items) = list(build.get(k), env) else { return Ok(None) };
                            let mut out = Vec::new();
                            for i in items {
                                out.extend(CacheEntry::parse_list(&i).map_err(|e| BakeError::Unlocated {
                                    file: f.name.clone(),
                                    message: e.to_string(),
                                })?);
                            }
                            Ok(Some(out))
                        };
                    t.cache_from = parse_cache("cache_from")?;
                    t.cache_to = parse_cache("cache_to")?;
                    t.ssh = list(build.get("ssh"), env).map(|v| v.iter().map(|s| SshEntry::parse(s)).collect());
                    if let Some(secrets) = list(build.get("secrets"), env) {
                        let top = doc.get("secrets");
                        let mut out = Vec::new();
                        for id in secrets {
                            let def = top.and_then(|t| t.get(id.as_str()));
                            let src = def.and_then(|d| d.get("file")).and_then(|v| scalar(v, env)).unwrap_or_default();
                            let envv =
                                def.and_then(|d| d.get("environment")).and_then(|v| scalar(v, env)).unwrap_or_default();
                            out.push(SecretEntry { id, src, env: envv });
                        }
                        t.secret = Some(out);
                    }
                }
                _ => {}
            }
            if t.tags.as_ref().is_none_or(Vec::is_empty)
                && let Some(image) = svc.get("image").and_then(|v| scalar(v, env))
            {
                t.tags = Some(vec![image]);
            }
            if let Some(xb) = build.get("x-bake") {
                x_bake(&mut t, xb, env)
                    .map_err(|e| BakeError::Unlocated { file: f.name.clone(), message: format!("x-bake: {e}") })?;
            }
            if t.context.is_none() {
                t.context = Some(".".into());
            }
            // Paths are made relative to the file later, with the HCL ones
            // (buildx `setComposeContextBase`).
            if opts.file_relative_paths
                && let Some(base) = local_file_dir(&f.name)
            {
                t.default_context_base = Some(base.clone());
                t.context_base = Some(base.clone());
                t.contexts_base = t.contexts.iter().flatten().map(|(k, _)| (k.clone(), base.clone())).collect();
            }
            match c.targets.iter_mut().find(|x| x.name == t.name) {
                Some(existing) => existing.merge(&t),
                None => {
                    names.push(name.clone());
                    c.targets.push(t);
                }
            }
        }
    }
    if !names.is_empty() {
        c.groups.push(Group { name: "default".into(), targets: names, ..Default::default() });
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_interpolation() {
        let env = BTreeMap::from([("SET".to_string(), "v".to_string()), ("EMPTY".to_string(), String::new())]);
        assert_eq!(interpolate("a-${SET}-$SET-$${SET}", &env), "a-v-v-${SET}");
        assert_eq!(interpolate("${EMPTY:-d} ${EMPTY-d} ${NONE-d}", &env), "d  d");
        assert_eq!(interpolate("${SET:+alt} ${EMPTY:+alt} ${EMPTY+alt}", &env), "alt  alt");
        assert_eq!(check_required("x: ${NONE:?need it}", &env).unwrap_err().message, "need it");
        assert!(check_required("x: ${EMPTY:?need it}", &env).is_err());
        assert!(check_required("x: ${EMPTY?need it} $${NONE:?no}", &env).is_ok());
    }
}
