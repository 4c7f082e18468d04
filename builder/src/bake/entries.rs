//! The structured list entries of a target: `output`, `cache-from`/`cache-to`,
//! `secret`, `ssh` and `attest`. Each is written in a bake file either as a
//! CSV string (`type=registry,ref=user/app:cache`) or as an object, and
//! prints as a flat JSON object, as buildx's `util/buildflags` does.

use std::collections::BTreeMap;

use super::functions::csv_fields;
use super::value::Value;

/// A malformed entry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryError {
    /// The CSV could not be split.
    #[error("invalid CSV {0:?}")]
    Csv(String),
    /// A `key=value` field without `=`.
    #[error("invalid value {0}")]
    Field(String),
    /// An output without `type=`.
    #[error("type is required for output")]
    OutputType,
    /// A cache entry without `type=`.
    #[error("type required for {0:?}")]
    CacheType(String),
    /// An attestation without `type=`.
    #[error("attestation type not specified")]
    AttestType,
    /// A secret with an unknown key or type.
    #[error("{0}")]
    Secret(String),
    /// An object entry with a non-string attribute.
    #[error("entry attribute `{0}` must be a string")]
    NotString(String),
    /// An entry that is neither a string nor an object.
    #[error("an entry must be a string or an object, not {0}")]
    Kind(&'static str),
}

fn fields(s: &str) -> Result<Vec<String>, EntryError> {
    csv_fields(s).map_err(|_| EntryError::Csv(s.to_string()))
}

/// Writes `key=value` pairs the way buildx's csvBuilder does: comma
/// separated, a pair with `,` or `"` CSV-quoted.
fn csv_join(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let p = format!("{k}={v}");
            if p.contains(',') || p.contains('"') || p.contains('\n') {
                format!("\"{}\"", p.replace('"', "\"\""))
            } else {
                p
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn object_attrs(v: &Value) -> Result<BTreeMap<String, String>, EntryError> {
    let Value::Map(m) = v else { return Err(EntryError::Kind(v.kind())) };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        if v.is_null() {
            continue;
        }
        out.insert(k.clone(), v.as_string().ok_or_else(|| EntryError::NotString(k.clone()))?);
    }
    Ok(out)
}

/// An `output` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Export {
    /// `type=`.
    pub kind: String,
    /// Other attributes.
    pub attrs: BTreeMap<String, String>,
    /// `dest=`.
    pub dest: String,
}

impl Export {
    /// Parses `type=...,dest=...` (a bare path means `type=local,dest=PATH`,
    /// `-` means `type=tar,dest=-`).
    pub fn parse(s: &str) -> Result<Export, EntryError> {
        let f = fields(s)?;
        if f.len() == 1 && f[0] == s && !s.starts_with("type=") {
            let kind = if s == "-" { "tar" } else { "local" };
            return Ok(Export { kind: kind.into(), attrs: BTreeMap::new(), dest: s.into() });
        }
        let mut e = Export::default();
        for field in f {
            let (k, v) = field.split_once('=').ok_or_else(|| EntryError::Field(field.clone()))?;
            match k.trim().to_lowercase().as_str() {
                "type" => e.kind = v.into(),
                "dest" => e.dest = v.into(),
                other => {
                    e.attrs.insert(other.into(), v.into());
                }
            }
        }
        if e.kind.is_empty() {
            return Err(EntryError::OutputType);
        }
        Ok(e)
    }

    /// From an object `{type = "...", dest = "..."}`.
    pub fn from_object(v: &Value) -> Result<Export, EntryError> {
        let mut attrs = object_attrs(v)?;
        let kind = attrs.remove("type").unwrap_or_default();
        let dest = attrs.remove("dest").unwrap_or_default();
        if kind.is_empty() {
            return Err(EntryError::OutputType);
        }
        Ok(Export { kind, attrs, dest })
    }

    /// buildx's canonical string.
    pub fn canonical(&self) -> String {
        let mut p = Vec::new();
        if !self.kind.is_empty() {
            p.push(("type".to_string(), self.kind.clone()));
        }
        if !self.dest.is_empty() {
            p.push(("dest".to_string(), self.dest.clone()));
        }
        p.extend(self.attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        csv_join(&p)
    }

    /// The flat JSON object `--print` shows.
    pub fn flat(&self) -> BTreeMap<String, String> {
        let mut m = self.attrs.clone();
        m.insert("type".into(), self.kind.clone());
        if !self.dest.is_empty() {
            m.insert("dest".into(), self.dest.clone());
        }
        m
    }
}

/// A `cache-from`/`cache-to` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheEntry {
    /// `type=`.
    pub kind: String,
    /// Other attributes.
    pub attrs: BTreeMap<String, String>,
}

impl CacheEntry {
    /// Parses one value; a value without `=` is a comma-separated list of
    /// registry refs.
    pub fn parse_list(s: &str) -> Result<Vec<CacheEntry>, EntryError> {
        if s.is_empty() {
            return Ok(Vec::new());
        }
        if !s.contains('=') {
            return fields(s)?.into_iter().map(|f| CacheEntry::parse(&f)).collect();
        }
        Ok(vec![CacheEntry::parse(s)?])
    }

    fn parse(s: &str) -> Result<CacheEntry, EntryError> {
        let f = fields(s)?;
        if f.len() == 1 && !f[0].contains('=') {
            return Ok(CacheEntry { kind: "registry".into(), attrs: BTreeMap::from([("ref".into(), f[0].clone())]) });
        }
        let mut e = CacheEntry::default();
        for field in f {
            let (k, v) = field.split_once('=').ok_or_else(|| EntryError::Field(field.clone()))?;
            match k.to_lowercase().as_str() {
                "type" => e.kind = v.into(),
                other => {
                    e.attrs.insert(other.into(), v.into());
                }
            }
        }
        if e.kind.is_empty() {
            return Err(EntryError::CacheType(s.into()));
        }
        Ok(e)
    }

    /// From an object.
    pub fn from_object(v: &Value) -> Result<CacheEntry, EntryError> {
        let mut attrs = object_attrs(v)?;
        let kind = attrs.remove("type").unwrap_or_default();
        if kind.is_empty() {
            return Err(EntryError::CacheType(serde_json::to_string(&v.to_json()).unwrap_or_default()));
        }
        Ok(CacheEntry { kind, attrs })
    }

    /// buildx's canonical string (a registry entry with only `ref` is the ref).
    pub fn canonical(&self) -> String {
        if self.kind == "registry"
            && self.attrs.len() == 1
            && let Some(r) = self.attrs.get("ref")
        {
            return r.clone();
        }
        let mut p = vec![("type".to_string(), self.kind.clone())];
        p.extend(self.attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        csv_join(&p)
    }

    /// The flat JSON object `--print` shows.
    pub fn flat(&self) -> BTreeMap<String, String> {
        let mut m = self.attrs.clone();
        m.insert("type".into(), self.kind.clone());
        m
    }
}

/// A `secret` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretEntry {
    /// `id=`.
    pub id: String,
    /// `src=` (a file).
    pub src: String,
    /// `env=`.
    pub env: String,
}

impl SecretEntry {
    /// Parses `id=ID,src=PATH` / `id=ID,env=VAR` / `type=env,...`.
    pub fn parse(s: &str) -> Result<SecretEntry, EntryError> {
        let mut e = SecretEntry::default();
        let mut kind = String::new();
        for field in fields(s)? {
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| EntryError::Secret(format!("invalid field '{field}' must be a key=value pair")))?;
            match k.to_lowercase().as_str() {
                "type" => {
                    if v != "file" && v != "env" {
                        return Err(EntryError::Secret(format!("unsupported secret type {v:?}")));
                    }
                    kind = v.into();
                }
                "id" => e.id = v.into(),
                "source" | "src" => e.src = v.into(),
                "env" => e.env = v.into(),
                other => return Err(EntryError::Secret(format!("unexpected key '{other}' in '{field}'"))),
            }
        }
        if kind == "env" && e.env.is_empty() {
            e.env = std::mem::take(&mut e.src);
        }
        Ok(e)
    }

    /// From an object.
    pub fn from_object(v: &Value) -> Result<SecretEntry, EntryError> {
        let a = object_attrs(v)?;
        Ok(SecretEntry {
            id: a.get("id").cloned().unwrap_or_default(),
            src: a.get("src").or_else(|| a.get("source")).cloned().unwrap_or_default(),
            env: a.get("env").cloned().unwrap_or_default(),
        })
    }

    /// buildx's canonical string.
    pub fn canonical(&self) -> String {
        let mut p = Vec::new();
        for (k, v) in [("id", &self.id), ("src", &self.src), ("env", &self.env)] {
            if !v.is_empty() {
                p.push((k.to_string(), v.clone()));
            }
        }
        csv_join(&p)
    }

    /// The JSON object `--print` shows.
    pub fn flat(&self) -> Vec<(String, String)> {
        [("id", &self.id), ("src", &self.src), ("env", &self.env)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }
}

/// An `ssh` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SshEntry {
    /// The id (`default`).
    pub id: String,
    /// Sockets or keys.
    pub paths: Vec<String>,
}

impl SshEntry {
    /// Parses `ID[=PATH,PATH...]`.
    pub fn parse(s: &str) -> SshEntry {
        match s.split_once('=') {
            Some((id, p)) => SshEntry { id: id.into(), paths: p.split(',').map(str::to_string).collect() },
            None => SshEntry { id: s.into(), paths: Vec::new() },
        }
    }

    /// From an object `{id = "...", paths = [...]}`.
    pub fn from_object(v: &Value) -> Result<SshEntry, EntryError> {
        let Value::Map(m) = v else { return Err(EntryError::Kind(v.kind())) };
        let id = m.get("id").and_then(Value::as_string).unwrap_or_default();
        let paths = match m.get("paths") {
            Some(Value::List(l)) => l.iter().filter_map(Value::as_string).collect(),
            _ => Vec::new(),
        };
        Ok(SshEntry { id, paths })
    }

    /// buildx's canonical string.
    pub fn canonical(&self) -> String {
        if self.paths.is_empty() {
            return self.id.clone();
        }
        csv_join(&[(self.id.clone(), self.paths.join(","))])
    }
}

/// An `attest` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttestEntry {
    /// `type=` (`sbom`, `provenance`).
    pub kind: String,
    /// `disabled=true`.
    pub disabled: bool,
    /// Other attributes.
    pub attrs: BTreeMap<String, String>,
}

impl AttestEntry {
    /// Parses `type=sbom,generator=...`.
    pub fn parse(s: &str) -> Result<AttestEntry, EntryError> {
        let mut e = AttestEntry::default();
        for field in fields(s)? {
            let (k, v) = field.split_once('=').ok_or_else(|| EntryError::Field(field.clone()))?;
            match k.trim().to_lowercase().as_str() {
                "type" => e.kind = v.into(),
                "disabled" => e.disabled = parse_go_bool(v).ok_or_else(|| EntryError::Field(field.clone()))?,
                _ => {
                    e.attrs.insert(k.into(), v.into());
                }
            }
        }
        if e.kind.is_empty() {
            return Err(EntryError::AttestType);
        }
        Ok(e)
    }

    /// From an object.
    pub fn from_object(v: &Value) -> Result<AttestEntry, EntryError> {
        let Value::Map(m) = v else { return Err(EntryError::Kind(v.kind())) };
        let mut e = AttestEntry::default();
        for (k, v) in m {
            match (k.as_str(), v) {
                ("type", v) => e.kind = v.as_string().unwrap_or_default(),
                ("disabled", Value::Bool(b)) => e.disabled = *b,
                ("disabled", Value::String(s)) => e.disabled = parse_go_bool(s).unwrap_or(false),
                (_, Value::Null) => {}
                (k, v) => {
                    e.attrs.insert(k.into(), v.as_string().ok_or_else(|| EntryError::NotString(k.into()))?);
                }
            }
        }
        if e.kind.is_empty() {
            return Err(EntryError::AttestType);
        }
        Ok(e)
    }

    /// buildx's canonical string.
    pub fn canonical(&self) -> String {
        let mut p = vec![("type".to_string(), self.kind.clone())];
        if self.disabled {
            p.push(("disabled".into(), "true".into()));
        }
        p.extend(self.attrs.iter().map(|(k, v)| (k.clone(), v.clone())));
        csv_join(&p)
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Removes duplicates, keeping the first occurrence in place.
pub fn dedup<T: PartialEq + Clone>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// buildx's `removeDupes` for outputs and cache entries, order included:
/// walking from the end, a later duplicate is swapped with the last element
/// and dropped, so the surviving order is not simply "first kept".
pub fn go_remove_dupes<T: PartialEq>(mut s: Vec<T>) -> Vec<T> {
    if s.len() < 2 {
        return s;
    }
    for i in (0..s.len() - 1).rev() {
        let mut j = i + 1;
        while j < s.len() {
            if s[i] == s[j] {
                let last = s.len() - 1;
                s.swap(j, last);
                s.pop();
                break;
            }
            j += 1;
        }
    }
    s
}

/// Go's in-place removal of element `i` by swapping the last one into it.
pub fn go_swap_remove<T>(s: &mut Vec<T>, keep: impl Fn(&T) -> bool) {
    let mut i = 0;
    while i < s.len() {
        if keep(&s[i]) {
            i += 1;
        } else {
            s.swap_remove(i);
        }
    }
}

/// Dedups by a key, a later entry replacing an earlier one in place
/// (secrets and ssh by id, attestations by type).
pub fn dedup_by_key<T, K: PartialEq>(v: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for x in v {
        match out.iter().position(|o| key(o) == key(&x)) {
            Some(i) => out[i] = x,
            None => out.push(x),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_dedup_order() {
        assert_eq!(go_remove_dupes(vec![1, 2, 1, 3]), vec![1, 2, 3]);
        assert_eq!(go_remove_dupes(vec![1, 1, 2, 3]), vec![1, 3, 2]);
        let mut v = vec![1, 2, 3, 4];
        go_swap_remove(&mut v, |x| *x != 2);
        assert_eq!(v, vec![1, 4, 3]);
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(CacheEntry::parse_list("user/app:cache").unwrap()[0].canonical(), "user/app:cache");
        assert_eq!(
            CacheEntry::parse_list("type=local,src=path/to/cache").unwrap()[0].canonical(),
            "type=local,src=path/to/cache"
        );
        assert_eq!(Export::parse("type=image,push=true").unwrap().canonical(), "type=image,push=true");
        assert_eq!(Export::parse("out").unwrap().canonical(), "type=local,dest=out");
        assert_eq!(SecretEntry::parse("id=x,env=Y").unwrap().canonical(), "id=x,env=Y");
        assert_eq!(SshEntry::parse("key=a,b").canonical(), "\"key=a,b\"");
        assert_eq!(AttestEntry::parse("type=sbom,disabled=true").unwrap().canonical(), "type=sbom,disabled=true");
    }
}
