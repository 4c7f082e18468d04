//! `target` and `group` as bake resolves them: decoding evaluated attributes
//! into typed fields, merging (`inherits`, same-name blocks, several files),
//! `--set` overrides and normalisation. Field semantics follow buildx's
//! `bake.Target` (which fields merge, which replace).

use std::collections::BTreeMap;

use super::entries::{self, AttestEntry, CacheEntry, EntryError, Export, SecretEntry, SshEntry};
use super::eval::Loc;
use super::value::Value;

/// A group: a named list of targets and groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// The group's name.
    pub name: String,
    /// Description for `--list`.
    pub description: String,
    /// Member targets or groups.
    pub targets: Vec<String>,
    /// Where `targets` is written, for errors about its members.
    pub(crate) loc: Option<Loc>,
}

/// A string map whose values may be null (`args`, `labels`, `extra-hosts`):
/// a null value means "unset", so an inherited value shows through.
pub type NullableMap = BTreeMap<String, Option<String>>;

/// A target. `None` means "not set here" (Go's nil), which matters for merging.
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct Target {
    pub name: String,
    pub description: String,
    pub inherits: Vec<String>,
    pub annotations: Option<Vec<String>>,
    pub attest: Option<Vec<AttestEntry>>,
    pub context: Option<String>,
    pub contexts: Option<BTreeMap<String, String>>,
    pub dockerfile: Option<String>,
    pub dockerfile_inline: Option<String>,
    pub args: Option<NullableMap>,
    pub labels: Option<NullableMap>,
    pub tags: Option<Vec<String>>,
    pub cache_from: Option<Vec<CacheEntry>>,
    pub cache_to: Option<Vec<CacheEntry>>,
    pub target: Option<String>,
    pub secret: Option<Vec<SecretEntry>>,
    pub ssh: Option<Vec<SshEntry>>,
    pub platforms: Option<Vec<String>>,
    pub output: Option<Vec<Export>>,
    pub pull: Option<bool>,
    pub no_cache: Option<bool>,
    pub network: Option<String>,
    pub no_cache_filter: Option<Vec<String>>,
    pub shm_size: Option<String>,
    pub ulimits: Option<Vec<String>>,
    pub resources: Option<Resources>,
    pub call: Option<String>,
    pub entitlements: Option<Vec<String>>,
    pub extra_hosts: Option<NullableMap>,
    /// Directory of the file the target came from, for file-relative paths.
    pub(crate) context_base: Option<String>,
    /// Per named context, the directory its path is relative to.
    pub(crate) contexts_base: BTreeMap<String, String>,
    /// Directory of the defining file when `context` is not set.
    pub(crate) default_context_base: Option<String>,
    /// `context = target.X.context`: take X's base.
    pub(crate) context_base_ref: Option<String>,
    /// The default context is the file's directory (file-relative paths).
    pub(crate) rebased: bool,
    /// The target was pulled in only through a `target:` context.
    pub linked: bool,
    /// Where each attribute is written (the last block that set it).
    pub(crate) locs: BTreeMap<String, Loc>,
}

/// `resources` (cgroup limits).
#[derive(Debug, Clone, Default, PartialEq)]
#[allow(missing_docs)]
pub struct Resources {
    pub memory: Option<String>,
    pub memory_swap: Option<String>,
    pub cpu_shares: Option<i64>,
    pub cpu_period: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
}

impl Resources {
    fn merge(&mut self, o: &Resources) {
        macro_rules! m {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f.clone(); } )* };
        }
        m!(memory, memory_swap, cpu_shares, cpu_period, cpu_quota, cpuset_cpus, cpuset_mems);
    }

    /// Sets one field from `--set T.resources.KEY=VALUE` or an attribute.
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), DecodeError> {
        let int = |v: &str| {
            v.parse::<i64>().map_err(|_| {
                DecodeError::Invalid(format!("invalid value {v:?} for resources.{key}: a whole number is required"))
            })
        };
        match key {
            "memory" => self.memory = Some(v.into()),
            "memory-swap" => self.memory_swap = Some(v.into()),
            "cpu-shares" => self.cpu_shares = Some(int(v)?),
            "cpu-period" => self.cpu_period = Some(int(v)?),
            "cpu-quota" => self.cpu_quota = Some(int(v)?),
            "cpuset-cpus" => self.cpuset_cpus = Some(v.into()),
            "cpuset-mems" => self.cpuset_mems = Some(v.into()),
            other => return Err(DecodeError::Invalid(format!("unknown resources field {other:?}"))),
        }
        Ok(())
    }

    /// Fields in buildx's JSON key order.
    pub fn json(&self) -> Vec<(&'static str, serde_json::Value)> {
        let mut out = Vec::new();
        let s = |x: &Option<String>| x.clone().map(serde_json::Value::String);
        let i = |x: &Option<i64>| x.map(serde_json::Value::from);
        for (k, v) in [
            ("memory", s(&self.memory)),
            ("memory-swap", s(&self.memory_swap)),
            ("cpu-shares", i(&self.cpu_shares)),
            ("cpu-period", i(&self.cpu_period)),
            ("cpu-quota", i(&self.cpu_quota)),
            ("cpuset-cpus", s(&self.cpuset_cpus)),
            ("cpuset-mems", s(&self.cpuset_mems)),
        ] {
            if let Some(v) = v {
                out.push((k, v));
            }
        }
        out
    }
}

/// Why an attribute value cannot be a target field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not a target attribute.
    #[error("unsupported argument; an argument named `{0}` is not expected here")]
    Unknown(String),
    /// Wrong type.
    #[error("Unsuitable value type for `{attr}`: {message}")]
    Type {
        /// The attribute.
        attr: String,
        /// What was wrong.
        message: String,
    },
    /// A malformed entry.
    #[error("invalid entry in `{attr}`: {source}")]
    Entry {
        /// The attribute.
        attr: String,
        /// What was wrong.
        #[source]
        source: EntryError,
    },
    /// A bad override or resource value.
    #[error("{0}")]
    Invalid(String),
}

/// The attributes a `target` block may have (besides `matrix` and `name`).
pub const TARGET_ATTRS: &[&str] = &[
    "description",
    "inherits",
    "annotations",
    "attest",
    "context",
    "contexts",
    "dockerfile",
    "dockerfile-inline",
    "args",
    "labels",
    "tags",
    "cache-from",
    "cache-to",
    "target",
    "secret",
    "ssh",
    "platforms",
    "output",
    "pull",
    "no-cache",
    "network",
    "no-cache-filter",
    "shm-size",
    "ulimits",
    "resources",
    "call",
    "entitlements",
    "extra-hosts",
];

fn type_err(attr: &str, message: impl Into<String>) -> DecodeError {
    DecodeError::Type { attr: attr.into(), message: message.into() }
}

fn to_str(attr: &str, v: &Value) -> Result<Option<String>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        other => {
            other.as_string().map(Some).ok_or_else(|| type_err(attr, format!("string required, not {}", other.kind())))
        }
    }
}

fn to_bool(attr: &str, v: &Value) -> Result<Option<bool>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s) if s == "true" => Ok(Some(true)),
        Value::String(s) if s == "false" => Ok(Some(false)),
        other => Err(type_err(attr, format!("bool required, not {}", other.kind()))),
    }
}

fn to_list(attr: &str, v: &Value) -> Result<Option<Vec<String>>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::List(items) => items
            .iter()
            .map(|i| match i {
                Value::Null => Err(type_err(attr, "list elements must not be null")),
                other => other
                    .as_string()
                    .ok_or_else(|| type_err(attr, format!("list of string required, found {}", other.kind()))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(type_err(attr, format!("list of string required, not {}", other.kind()))),
    }
}

fn to_map(attr: &str, v: &Value) -> Result<Option<NullableMap>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Map(m) => {
            m.iter()
                .map(|(k, v)| match v {
                    Value::Null => Ok((k.clone(), None)),
                    other => other.as_string().map(|s| (k.clone(), Some(s))).ok_or_else(|| {
                        type_err(attr, format!("map of string required, found {} for `{k}`", other.kind()))
                    }),
                })
                .collect::<Result<BTreeMap<_, _>, _>>()
                .map(Some)
        }
        other => Err(type_err(attr, format!("map of string required, not {}", other.kind()))),
    }
}

/// Decodes a list of entries written as strings or objects; empty strings
/// and nulls are skipped, as buildx does.
fn to_entries<T>(
    attr: &str,
    v: &Value,
    parse: impl Fn(&str) -> Result<Vec<T>, EntryError>,
    object: impl Fn(&Value) -> Result<T, EntryError>,
) -> Result<Option<Vec<T>>, DecodeError> {
    let items = match v {
        Value::Null => return Ok(None),
        Value::List(items) => items,
        other => return Err(type_err(attr, format!("list required, not {}", other.kind()))),
    };
    let mut out = Vec::new();
    for i in items {
        let r = match i {
            Value::Null => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::Map(_) => object(i).map(|x| vec![x]),
            other => match other.as_string() {
                Some(s) => parse(&s),
                None => Err(EntryError::Kind(other.kind())),
            },
        };
        out.extend(r.map_err(|source| DecodeError::Entry { attr: attr.into(), source })?);
    }
    Ok(Some(out))
}

impl Target {
    /// Sets attribute `attr` from an evaluated value.
    pub fn set_attr(&mut self, attr: &str, v: &Value) -> Result<(), DecodeError> {
        match attr {
            "description" => self.description = to_str(attr, v)?.unwrap_or_default(),
            "inherits" => self.inherits = to_list(attr, v)?.unwrap_or_default(),
            "annotations" => self.annotations = to_list(attr, v)?,
            "attest" => {
                self.attest = to_entries(attr, v, |s| AttestEntry::parse(s).map(|x| vec![x]), AttestEntry::from_object)?
            }
            "context" => self.context = to_str(attr, v)?,
            "contexts" => {
                self.contexts =
                    to_map(attr, v)?.map(|m| m.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
            }
            "dockerfile" => self.dockerfile = to_str(attr, v)?,
            "dockerfile-inline" => self.dockerfile_inline = to_str(attr, v)?,
            "args" => self.args = to_map(attr, v)?,
            "labels" => self.labels = to_map(attr, v)?,
            "tags" => self.tags = to_list(attr, v)?,
            "cache-from" => self.cache_from = to_entries(attr, v, CacheEntry::parse_list, CacheEntry::from_object)?,
            "cache-to" => self.cache_to = to_entries(attr, v, CacheEntry::parse_list, CacheEntry::from_object)?,
            "target" => self.target = to_str(attr, v)?,
            "secret" => {
                self.secret = to_entries(attr, v, |s| SecretEntry::parse(s).map(|x| vec![x]), SecretEntry::from_object)?
            }
            "ssh" => self.ssh = to_entries(attr, v, |s| Ok(vec![SshEntry::parse(s)]), SshEntry::from_object)?,
            "platforms" => self.platforms = to_list(attr, v)?,
            "output" => self.output = to_entries(attr, v, |s| Export::parse(s).map(|x| vec![x]), Export::from_object)?,
            "pull" => self.pull = to_bool(attr, v)?,
            "no-cache" => self.no_cache = to_bool(attr, v)?,
            "network" => self.network = to_str(attr, v)?,
            "no-cache-filter" => self.no_cache_filter = to_list(attr, v)?,
            "shm-size" => self.shm_size = to_str(attr, v)?,
            "ulimits" => self.ulimits = to_list(attr, v)?,
            "resources" => {
                self.resources = match v {
                    Value::Null => None,
                    Value::Map(m) => {
                        let mut r = Resources::default();
                        for (k, x) in m {
                            if let Some(s) = to_str(attr, x)? {
                                r.set(k, &s)?;
                            }
                        }
                        Some(r)
                    }
                    other => return Err(type_err(attr, format!("object required, not {}", other.kind()))),
                }
            }
            "call" => self.call = to_str(attr, v)?,
            "entitlements" => self.entitlements = to_list(attr, v)?,
            "extra-hosts" => self.extra_hosts = to_map(attr, v)?,
            other => return Err(DecodeError::Unknown(other.into())),
        }
        Ok(())
    }

    /// The value `target.NAME.ATTR` yields in an expression, from a decoded
    /// attribute (buildx re-encodes the Go field).
    pub fn attr_value(&self, attr: &str) -> Value {
        let s = |x: &Option<String>| x.clone().map(Value::String).unwrap_or(Value::Null);
        let l = |x: &Option<Vec<String>>| {
            x.clone().map(|v| Value::List(v.into_iter().map(Value::String).collect())).unwrap_or(Value::Null)
        };
        let m = |x: &Option<NullableMap>| {
            x.clone()
                .map(|v| {
                    Value::Map(v.into_iter().map(|(k, v)| (k, v.map(Value::String).unwrap_or(Value::Null))).collect())
                })
                .unwrap_or(Value::Null)
        };
        let flat =
            |v: BTreeMap<String, String>| Value::Map(v.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
        let b = |x: Option<bool>| x.map(Value::Bool).unwrap_or(Value::Null);
        match attr {
            "name" => Value::String(self.name.clone()),
            "description" => Value::String(self.description.clone()),
            "inherits" => Value::List(self.inherits.iter().cloned().map(Value::String).collect()),
            "annotations" => l(&self.annotations),
            "context" => s(&self.context),
            "contexts" => self
                .contexts
                .clone()
                .map(|c| Value::Map(c.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
                .unwrap_or(Value::Null),
            "dockerfile" => s(&self.dockerfile),
            "dockerfile-inline" => s(&self.dockerfile_inline),
            "args" => m(&self.args),
            "labels" => m(&self.labels),
            "extra-hosts" => m(&self.extra_hosts),
            "tags" => l(&self.tags),
            "target" => s(&self.target),
            "platforms" => l(&self.platforms),
            "network" => s(&self.network),
            "no-cache-filter" => l(&self.no_cache_filter),
            "shm-size" => s(&self.shm_size),
            "ulimits" => l(&self.ulimits),
            "call" => s(&self.call),
            "entitlements" => l(&self.entitlements),
            "pull" => b(self.pull),
            "no-cache" => b(self.no_cache),
            "cache-from" => self
                .cache_from
                .as_ref()
                .map(|v| Value::List(v.iter().map(|e| flat(e.flat())).collect()))
                .unwrap_or(Value::Null),
            "cache-to" => self
                .cache_to
                .as_ref()
                .map(|v| Value::List(v.iter().map(|e| flat(e.flat())).collect()))
                .unwrap_or(Value::Null),
            "output" => self
                .output
                .as_ref()
                .map(|v| Value::List(v.iter().map(|e| flat(e.flat())).collect()))
                .unwrap_or(Value::Null),
            "secret" => self
                .secret
                .as_ref()
                .map(|v| Value::List(v.iter().map(|e| flat(e.flat().into_iter().collect())).collect()))
                .unwrap_or(Value::Null),
            "ssh" => self
                .ssh
                .as_ref()
                .map(|v| {
                    Value::List(
                        v.iter()
                            .map(|e| {
                                Value::Map(BTreeMap::from([
                                    ("id".to_string(), Value::String(e.id.clone())),
                                    (
                                        "paths".to_string(),
                                        Value::List(e.paths.iter().cloned().map(Value::String).collect()),
                                    ),
                                ]))
                            })
                            .collect(),
                    )
                })
                .unwrap_or(Value::Null),
            "attest" => self
                .attest
                .as_ref()
                .map(|v| {
                    Value::List(
                        v.iter()
                            .map(|e| {
                                let mut m: BTreeMap<String, Value> =
                                    e.attrs.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                                m.insert("type".into(), Value::String(e.kind.clone()));
                                if e.disabled {
                                    m.insert("disabled".into(), Value::String("true".into()));
                                }
                                Value::Map(m)
                            })
                            .collect(),
                    )
                })
                .unwrap_or(Value::Null),
            "resources" => self
                .resources
                .as_ref()
                .map(|r| Value::Map(r.json().into_iter().map(|(k, v)| (k.to_string(), Value::from_json(&v))).collect()))
                .unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// Merges `o` over `self` (buildx `Target.Merge`): scalars and some lists
    /// replace, maps and the other lists accumulate.
    pub fn merge(&mut self, o: &Target) {
        if o.default_context_base.is_some() {
            self.default_context_base = o.default_context_base.clone();
            self.rebased = o.rebased;
        }
        if o.context.is_some() {
            self.context = o.context.clone();
            self.context_base = o.context_base.clone();
            self.context_base_ref = o.context_base_ref.clone();
        }
        macro_rules! replace {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f.clone(); } )* };
        }
        replace!(
            dockerfile,
            dockerfile_inline,
            tags,
            target,
            call,
            platforms,
            cache_to,
            output,
            pull,
            no_cache,
            network,
            shm_size
        );
        fn merge_map(a: &mut Option<NullableMap>, b: &Option<NullableMap>) {
            if let Some(b) = b {
                for (k, v) in b {
                    if v.is_some() {
                        a.get_or_insert_with(BTreeMap::new).insert(k.clone(), v.clone());
                    }
                }
            }
        }
        merge_map(&mut self.args, &o.args);
        merge_map(&mut self.labels, &o.labels);
        merge_map(&mut self.extra_hosts, &o.extra_hosts);
        if let Some(c) = &o.contexts {
            for (k, v) in c {
                self.contexts.get_or_insert_with(BTreeMap::new).insert(k.clone(), v.clone());
                match o.contexts_base.get(k) {
                    Some(b) => self.contexts_base.insert(k.clone(), b.clone()),
                    None => self.contexts_base.remove(k),
                };
            }
        }
        fn append<T: Clone>(a: &mut Option<Vec<T>>, b: &Option<Vec<T>>) {
            if let Some(b) = b {
                a.get_or_insert_with(Vec::new).extend(b.iter().cloned());
            }
        }
        append(&mut self.annotations, &o.annotations);
        append(&mut self.no_cache_filter, &o.no_cache_filter);
        append(&mut self.ulimits, &o.ulimits);
        append(&mut self.entitlements, &o.entitlements);
        if let Some(b) = &o.attest {
            let mut v = self.attest.take().unwrap_or_default();
            v.extend(b.iter().cloned());
            self.attest = Some(entries::dedup_by_key(v, |a| a.kind.clone()));
        }
        if let Some(b) = &o.secret {
            let mut v = self.secret.take().unwrap_or_default();
            v.extend(b.iter().cloned());
            self.secret = Some(entries::dedup_by_key(v, |a| a.id.clone()));
        }
        if let Some(b) = &o.ssh {
            let mut v = self.ssh.take().unwrap_or_default();
            v.extend(b.iter().cloned());
            self.ssh = Some(entries::dedup_by_key(v, |a| a.id.clone()));
        }
        if let Some(b) = &o.cache_from {
            let mut v = self.cache_from.take().unwrap_or_default();
            v.extend(b.iter().cloned());
            self.cache_from = Some(entries::go_remove_dupes(v));
        }
        if let Some(r) = &o.resources {
            self.resources.get_or_insert_with(Resources::default).merge(r);
        }
        if !o.description.is_empty() {
            self.description = o.description.clone();
        }
        self.inherits.extend(o.inherits.iter().cloned());
        self.locs.extend(o.locs.iter().map(|(k, v)| (k.clone(), *v)));
    }

    /// Removes duplicates and empty values, adds `network.host` for
    /// `network = "host"` (buildx `normalize`).
    pub fn normalize(&mut self) {
        fn strs(v: &mut Option<Vec<String>>) {
            if let Some(x) = v.take() {
                let x: Vec<String> = entries::dedup(x.into_iter().filter(|s| !s.is_empty()).collect());
                *v = if x.is_empty() { None } else { Some(x) };
            }
        }
        fn list<T: Clone>(v: &mut Option<Vec<T>>, f: impl Fn(Vec<T>) -> Vec<T>) {
            if let Some(x) = v.take() {
                let x = f(x);
                *v = if x.is_empty() { None } else { Some(x) };
            }
        }
        strs(&mut self.annotations);
        strs(&mut self.tags);
        strs(&mut self.platforms);
        strs(&mut self.no_cache_filter);
        strs(&mut self.ulimits);
        list(&mut self.attest, |x| entries::dedup_by_key(x, |a| a.kind.clone()));
        list(&mut self.secret, |x| entries::dedup_by_key(x, |a| a.id.clone()));
        list(&mut self.ssh, |x| entries::dedup_by_key(x, |a| a.id.clone()));
        list(&mut self.cache_from, entries::go_remove_dupes);
        list(&mut self.cache_to, entries::go_remove_dupes);
        list(&mut self.output, entries::go_remove_dupes);
        if self.network.as_deref() == Some("host") {
            self.entitlements.get_or_insert_with(Vec::new).push("network.host".into());
        }
        strs(&mut self.entitlements);
        if let Some(c) = &mut self.contexts {
            c.retain(|_, v| !v.is_empty());
            if c.is_empty() {
                self.contexts = None;
            }
        }
    }
}

/// One `--set` override for one target key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Override {
    /// The value (scalar keys).
    pub value: String,
    /// The collected values (list keys).
    pub values: Vec<String>,
    /// `+=` on the last occurrence.
    pub append: bool,
}

/// List keys whose `--set` values collect.
pub const LIST_OVERRIDE_KEYS: &[&str] = &[
    "output",
    "cache-to",
    "cache-from",
    "tags",
    "platform",
    "secrets",
    "ssh",
    "attest",
    "entitlements",
    "network",
    "annotations",
    "policy",
];

fn parse_all<T>(vals: &[String], f: impl Fn(&str) -> Result<Vec<T>, EntryError>) -> Result<Vec<T>, DecodeError> {
    let mut out = Vec::new();
    for v in vals.iter().filter(|v| !v.is_empty()) {
        out.extend(f(v).map_err(|e| DecodeError::Invalid(e.to_string()))?);
    }
    Ok(out)
}

fn go_bool(key: &str, v: &str) -> Result<bool, DecodeError> {
    entries::parse_go_bool(v).ok_or_else(|| DecodeError::Invalid(format!("invalid value {v} for boolean key {key}")))
}

impl Target {
    /// Applies the `--set` overrides for this target (buildx `AddOverrides`),
    /// in key order. Returns file paths the overrides read (entitlements).
    pub fn add_overrides(
        &mut self,
        overrides: &BTreeMap<String, Override>,
        fs_read: &mut Vec<String>,
    ) -> Result<(), DecodeError> {
        let mut secret_overrides: Vec<(String, String)> = Vec::new();
        let mut secret_ids: Vec<String> = Vec::new();
        for (key, o) in overrides {
            let (k0, k1) = match key.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (key.as_str(), None),
            };
            let value = o.value.clone();
            let need = |what: &str| {
                k1.map(str::to_string).ok_or_else(|| {
                    DecodeError::Invalid(format!("invalid format for {k0}, expecting {k0}.<{what}>=<value>"))
                })
            };
            match k0 {
                "context" => self.context = Some(value),
                "dockerfile" => self.dockerfile = Some(value),
                "args" => {
                    let k = need("name")?;
                    self.args.get_or_insert_with(BTreeMap::new).insert(k, Some(value));
                }
                "contexts" => {
                    let k = need("name")?;
                    self.contexts.get_or_insert_with(BTreeMap::new).insert(k, value);
                }
                "labels" => {
                    let k = need("name")?;
                    self.labels.get_or_insert_with(BTreeMap::new).insert(k, Some(value));
                }
                "extra-hosts" => {
                    let k = need("hostname")?;
                    self.extra_hosts.get_or_insert_with(BTreeMap::new).insert(k, Some(value));
                }
                "tags" => apply_list(&mut self.tags, o.values.clone(), o.append),
                "platform" => apply_list(&mut self.platforms, o.values.clone(), o.append),
                "no-cache-filter" => apply_list(&mut self.no_cache_filter, o.values.clone(), o.append),
                "ulimits" => apply_list(&mut self.ulimits, o.values.clone(), o.append),
                "cache-from" => {
                    let v = parse_all(&o.values, CacheEntry::parse_list)?;
                    merge_entries(&mut self.cache_from, v, o.append, entries::go_remove_dupes);
                    for c in self.cache_from.iter().flatten() {
                        if c.kind == "local"
                            && let Some(src) = c.attrs.get("src")
                        {
                            fs_read.push(src.clone());
                        }
                    }
                }
                "cache-to" => {
                    let v = parse_all(&o.values, CacheEntry::parse_list)?;
                    merge_entries(&mut self.cache_to, v, o.append, entries::go_remove_dupes);
                }
                "target" => self.target = Some(value),
                "call" => self.call = Some(value),
                "secret" => secret_overrides.push((need("id")?, value)),
                "secrets" => {
                    let v = parse_all(&o.values, |s| SecretEntry::parse(s).map(|x| vec![x]))?;
                    secret_ids.extend(v.iter().map(|s| s.id.clone()));
                    merge_entries(&mut self.secret, v, o.append, |x| entries::dedup_by_key(x, |s| s.id.clone()));
                }
                "ssh" => {
                    let v = parse_all(&o.values, |s| Ok(vec![SshEntry::parse(s)]))?;
                    merge_entries(&mut self.ssh, v, o.append, |x| entries::dedup_by_key(x, |s| s.id.clone()));
                    for s in self.ssh.iter().flatten() {
                        fs_read.extend(s.paths.iter().cloned());
                    }
                }
                "output" => {
                    let v = parse_all(&o.values, |s| Export::parse(s).map(|x| vec![x]))?;
                    merge_entries(&mut self.output, v, o.append, entries::go_remove_dupes);
                }
                "entitlements" => self.entitlements.get_or_insert_with(Vec::new).extend(o.values.iter().cloned()),
                "annotations" => self.annotations.get_or_insert_with(Vec::new).extend(o.values.iter().cloned()),
                "attest" => {
                    let v = parse_all(&o.values, |s| AttestEntry::parse(s).map(|x| vec![x]))?;
                    let mut all = self.attest.take().unwrap_or_default();
                    all.extend(v);
                    self.attest = Some(entries::dedup_by_key(all, |a| a.kind.clone()));
                }
                "no-cache" => self.no_cache = Some(go_bool("no-cache", &value)?),
                "pull" => self.pull = Some(go_bool("pull", &value)?),
                "shm-size" => self.shm_size = Some(value),
                "resources" => {
                    let k = need("name")?;
                    self.resources.get_or_insert_with(Resources::default).set(&k, &value)?;
                }
                "network" => {
                    let v = o.values.last().cloned().unwrap_or(value);
                    self.network = Some(v);
                }
                "push" => {
                    let push = go_bool("push", &value)?;
                    self.output = Some(set_push(self.output.take().unwrap_or_default(), push));
                }
                "load" => {
                    let load = go_bool("load", &value)?;
                    self.output = Some(set_load(self.output.take().unwrap_or_default(), load));
                }
                other => return Err(DecodeError::Invalid(format!("unknown key: {other}"))),
            }
        }
        for (id, value) in secret_overrides {
            let next = SecretEntry::parse(&value).map_err(|e| DecodeError::Invalid(e.to_string()))?;
            let Some(s) = self.secret.iter_mut().flatten().find(|s| s.id == id) else {
                return Err(DecodeError::Invalid(format!(
                    "secret {id:?} must be declared before it can be overridden"
                )));
            };
            if !next.id.is_empty() && next.id != id {
                return Err(DecodeError::Invalid(format!(
                    "secret override id {:?} does not match declared secret {id:?}",
                    next.id
                )));
            }
            s.env = next.env;
            s.src = next.src;
            secret_ids.push(id);
        }
        for s in self.secret.iter().flatten() {
            if secret_ids.contains(&s.id) && !s.src.is_empty() {
                fs_read.push(s.src.clone());
            }
        }
        Ok(())
    }
}

fn apply_list(field: &mut Option<Vec<String>>, values: Vec<String>, append: bool) {
    if append {
        field.get_or_insert_with(Vec::new).extend(values);
    } else {
        *field = Some(values);
    }
}

/// `+=` appends and normalises the way that entry kind merges in buildx;
/// `=` replaces.
fn merge_entries<T>(field: &mut Option<Vec<T>>, values: Vec<T>, append: bool, normalize: impl Fn(Vec<T>) -> Vec<T>) {
    if append {
        let mut all = field.take().unwrap_or_default();
        all.extend(values);
        *field = Some(normalize(all));
    } else {
        *field = Some(values);
    }
}

/// `--set T.push=BOOL` (buildx `setPushOverride`).
fn set_push(mut outputs: Vec<Export>, push: bool) -> Vec<Export> {
    if !push {
        entries::go_swap_remove(&mut outputs, |o| o.kind != "registry");
        for o in &mut outputs {
            if o.kind == "image" {
                o.attrs.insert("push".into(), "false".into());
            }
        }
        return outputs;
    }
    let mut add = true;
    for o in &mut outputs {
        if o.kind != "docker" {
            add = false;
        }
        if o.kind == "image" {
            o.attrs.insert("push".into(), "true".into());
        }
    }
    if add {
        outputs.push(Export {
            kind: "image".into(),
            attrs: BTreeMap::from([("push".into(), "true".into())]),
            dest: String::new(),
        });
    }
    outputs
}

/// `--set T.load=BOOL` (buildx `setLoadOverride`).
fn set_load(mut outputs: Vec<Export>, load: bool) -> Vec<Export> {
    if !load {
        return outputs;
    }
    for o in &outputs {
        match o.kind.as_str() {
            "docker" if o.dest.is_empty() => return outputs,
            "docker" | "image" | "registry" | "oci" => {}
            _ => return outputs,
        }
    }
    outputs.push(Export { kind: "docker".into(), attrs: BTreeMap::new(), dest: String::new() });
    outputs
}
