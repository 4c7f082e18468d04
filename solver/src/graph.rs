//! The build graph: a closed set of ops, each named by the SHA-256 of its
//! canonical encoding plus its inputs' digests (a Merkle DAG).
//!
//! This module is plain data: no I/O. The frontend produces a [`Definition`];
//! the solver runs it. Fields that must not change a vertex's identity
//! (descriptions, stage names, progress grouping) live in [`VertexMeta`],
//! outside the digest. The encoding is versioned (`rbuild.op.v0`): once
//! released it never changes, because every cache key stands on it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Version tag mixed into every op digest. Bump only with a migration plan:
/// changing it invalidates every cache entry ever written.
pub const OP_ENCODING_VERSION: &str = "rbuild.op.v0";

pub use rbuild_cache::oci::{Digest, Platform, PlatformError};

/// The closed set of graph operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Op {
    /// Brings content into the graph.
    Source(SourceOp),
    /// Runs a process over its root input.
    Exec(ExecOp),
    /// Copies, creates and removes files.
    File(FileOp),
    /// Stacks its inputs' layers in order (`COPY --link`).
    Merge(MergeOp),
}

impl Op {
    /// Short kind name as printed by `rbuild debug graph`.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Source(_) => "source",
            Op::Exec(_) => "exec",
            Op::File(_) => "file",
            Op::Merge(_) => "merge",
        }
    }
}

/// Where content comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "lowercase")]
pub enum SourceOp {
    /// A container image by reference, for one platform.
    Image {
        /// Normalised reference, e.g. `docker.io/library/busybox:latest`.
        reference: String,
        /// The platform to pick from an index.
        platform: Platform,
    },
    /// Files of a local build context.
    Context {
        /// `context` for the main context, or a `--build-context` name.
        name: String,
        /// Where the context comes from (the builder's name for its
        /// directory and ignore rules): two same-named contexts of different
        /// origins (two bake targets) are different vertices in a merged
        /// graph. Not part of the cache key — the content the ops read is.
        /// Empty when the lowering was given none; then it is not encoded,
        /// so such digests are those of earlier releases.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        origin: String,
        /// Patterns that select files (empty: everything).
        include: Vec<String>,
        /// `.dockerignore` patterns, moby semantics.
        exclude: Vec<String>,
    },
    /// A remote file fetched over HTTP(S).
    Http {
        /// The URL.
        url: String,
        /// Expected `sha256:...` digest (`ADD --checksum`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
        /// File name to store it under.
        filename: String,
    },
    /// A git repository checkout.
    Git {
        /// Remote URL.
        remote: String,
        /// Branch, tag or commit (`#ref`).
        #[serde(rename = "ref")]
        git_ref: String,
        /// Sub-directory (`#ref:subdir`).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        subdir: String,
        /// Keep `.git` (`ADD --keep-git-dir`).
        keep_git_dir: bool,
    },
}

/// Network mode of a RUN step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Rootless default: the host's network.
    #[default]
    Default,
    /// An empty network namespace.
    None,
    /// The host's network, explicitly.
    Host,
}

/// Security mode of a RUN step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// The default sandbox.
    #[default]
    Sandbox,
    /// All capabilities (`--security=insecure`).
    Insecure,
}

/// Sharing mode of a cache mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Concurrent writers share one directory.
    #[default]
    Shared,
    /// Each concurrent writer gets its own directory.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// What a mount of an exec op is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MountKind {
    /// A snapshot (or the context) bound in; `input` says which.
    Bind,
    /// A persistent cache directory in the store.
    Cache {
        /// Cache id (default: the target path).
        id: String,
        /// Concurrency behaviour.
        sharing: CacheSharing,
    },
    /// An empty tmpfs.
    Tmpfs {
        /// Size limit in bytes (0: kernel default).
        size: u64,
    },
    /// A secret file (or environment variable with `env`).
    Secret {
        /// Secret id given with `--secret id=...`.
        id: String,
        /// Fail when the secret was not provided.
        required: bool,
        /// Expose the secret as this environment variable instead of a file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
    },
    /// The SSH agent socket given with `--ssh`.
    Ssh {
        /// Agent id (default `default`).
        id: String,
        /// Fail when no agent was provided.
        required: bool,
    },
}

/// One mount of an exec op. The root mount (`/`) is always first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Index into the vertex's inputs, for `Bind` (and the root) mounts and
    /// caches seeded `from` a stage. `None` means an empty directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<usize>,
    /// Path inside the input that is mounted.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    /// Mount point inside the container.
    pub target: String,
    /// Read-only mount.
    pub readonly: bool,
    /// Mount kind.
    #[serde(flatten)]
    pub kind: MountKind,
    /// File mode for secret/ssh/cache mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Owner uid for secret/ssh/cache mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid for secret/ssh/cache mounts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// Runs a process. Its output is the root mount's resulting snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    /// argv.
    pub args: Vec<String>,
    /// Environment, `KEY=value`, in order.
    pub env: Vec<String>,
    /// Working directory (absolute).
    pub cwd: String,
    /// `user[:group]` as written in USER (resolved in the rootfs at run time).
    pub user: String,
    /// Network mode.
    pub network: NetworkMode,
    /// Security mode.
    pub security: SecurityMode,
    /// Mounts; `mounts[0]` is the root (`/`).
    pub mounts: Vec<Mount>,
    /// rlimits (`--ulimit`). Part of the op, as in BuildKit's `Meta.ulimit`;
    /// omitted when empty, so ops without any keep their digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<crate::sandbox::Rlimit>,
    /// `/dev/shm` size in bytes (`--shm-size`, BuildKit's `Meta.shmSize`);
    /// 0 is Docker's 64 MiB and is omitted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shm_size: u64,
    /// Extra `/etc/hosts` entries (`--add-host`, bake `extra-hosts`),
    /// BuildKit's `Meta.extraHosts`; omitted when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<HostEntry>,
    /// The platform of the stage the command runs in, to check before it
    /// starts that this host can execute its binaries. Not part of the
    /// op's digest: what runs is fixed by the inputs, and a RUN on the
    /// same inputs for two target platforms stays one vertex.
    #[serde(skip)]
    pub platform: Option<Platform>,
}

/// One `/etc/hosts` line a `RUN` gets besides localhost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// The name.
    pub host: String,
    /// Its address.
    pub ip: std::net::IpAddr,
}

/// Why an `--add-host` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostEntryError {
    /// Not `HOST=IP` / `HOST:IP`, or an empty side.
    #[error("invalid host `{0}`: expected HOST=IP or HOST:IP")]
    Syntax(String),
    /// The address is not an IP address.
    #[error("invalid host `{0}`: `{1}` is not an IP address")]
    NotAnIp(String, String),
    /// A name that would break the hosts file (whitespace, `#`, control
    /// characters) or that no resolver accepts.
    #[error("invalid host `{0}`: the name may hold letters, digits, `.`, `-` and `_` only")]
    BadName(String),
    /// Docker's `host-gateway`: the private RUN network reaches no host
    /// address by design.
    #[error(
        "`{0}`: `host-gateway` is not supported: RUN's private network cannot reach the host; give an IP address (and `--network=host` to reach the host's own)"
    )]
    HostGateway(String),
}

impl HostEntry {
    /// Parses buildx's `HOST=IP` or `HOST:IP` (`=` first, so IPv6 works),
    /// where IP may be a comma-separated list (one entry each) and an
    /// address in `[...]` is unwrapped (buildx `toBuildkitExtraHosts`).
    pub fn parse_all(spec: &str) -> Result<Vec<Self>, HostEntryError> {
        let (host, ips) = spec
            .split_once('=')
            .or_else(|| spec.split_once(':'))
            .filter(|(h, i)| !h.is_empty() && !i.is_empty())
            .ok_or_else(|| HostEntryError::Syntax(spec.to_string()))?;
        if ips == "host-gateway" {
            return Err(HostEntryError::HostGateway(spec.to_string()));
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
            return Err(HostEntryError::BadName(spec.to_string()));
        }
        ips.split(',')
            .map(|ip| {
                let bare = ip.strip_prefix('[').and_then(|i| i.strip_suffix(']')).unwrap_or(ip);
                let ip = bare.parse().map_err(|_| HostEntryError::NotAnIp(spec.to_string(), ip.to_string()))?;
                Ok(HostEntry { host: host.to_string(), ip })
            })
            .collect()
    }

    /// [`HostEntry::parse_all`] for a value naming one address.
    pub fn parse(spec: &str) -> Result<Self, HostEntryError> {
        let mut all = Self::parse_all(spec)?;
        match all.len() {
            1 => Ok(all.remove(0)),
            _ => Err(HostEntryError::Syntax(spec.to_string())),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Owner of created files (`--chown`), unresolved: names are looked up in the
/// destination's `/etc/passwd` and `/etc/group` at run time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chown {
    /// User name or numeric id.
    pub user: String,
    /// Group name or numeric id; `None` means the user's primary group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// One action of a file op. Actions run in order over input 0 (or an empty
/// directory when the op has no base input, as for `COPY --link`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum FileAction {
    /// Copy paths from an input into the destination.
    Copy {
        /// Index into the vertex's inputs the sources come from.
        input: usize,
        /// Source paths or wildcard patterns, relative to the input root.
        src: Vec<String>,
        /// Destination path (absolute; trailing `/` means a directory).
        dest: String,
        /// Owner of created files.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<Chown>,
        /// Mode of created files, octal (`755`) or symbolic (`u+x`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chmod: Option<String>,
        /// Sources may contain wildcards.
        allow_wildcard: bool,
        /// A wildcard matching nothing is not an error.
        allow_empty_wildcard: bool,
        /// Unpack local archives (ADD).
        unpack_archive: bool,
        /// Keep the sources' parent directories (`--parents`).
        parents: bool,
        /// Patterns excluded from the copy (`--exclude`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
    },
    /// Create a directory.
    Mkdir {
        /// Absolute path.
        path: String,
        /// Mode bits.
        mode: u32,
        /// Create missing parents.
        make_parents: bool,
        /// Owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<Chown>,
    },
    /// Create a file with fixed content (heredocs).
    Mkfile {
        /// Absolute path.
        path: String,
        /// Mode bits.
        mode: u32,
        /// Content.
        data: String,
        /// Owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<Chown>,
    },
    /// Remove a path.
    Rm {
        /// Absolute path (may be a wildcard).
        path: String,
        /// A missing path is not an error.
        allow_not_found: bool,
    },
}

/// Copies, creates and removes files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    /// `Some(i)`: actions apply on top of input `i`; `None`: on an empty tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<usize>,
    /// Actions, in order.
    pub actions: Vec<FileAction>,
}

/// Stacks the layers of its inputs in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeOp {}

/// Data about a vertex that does not change its identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexMeta {
    /// Human-readable step name, e.g. `[build 2/4] RUN make`.
    pub description: String,
    /// Stage the vertex belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Do not reuse a cached result (`--no-cache`, `--no-cache-filter`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_cache: bool,
    /// Environment entries that are secret (never logged or cached).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
}

/// A node of the graph.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    /// Digest of `op` and `inputs` (see [`vertex_digest`]).
    pub digest: Digest,
    /// The operation.
    pub op: Op,
    /// Digests of the input vertices, in the order the op refers to them.
    pub inputs: Vec<Digest>,
    /// Identity-neutral metadata.
    pub meta: VertexMeta,
}

/// The canonical bytes of a vertex: versioned, compact JSON of the op and
/// input digests. Struct fields serialise in declaration order and every map
/// is a `BTreeMap`, so equal values give equal bytes.
pub fn canonical_encoding(op: &Op, inputs: &[Digest]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Encoded<'a> {
        v: &'static str,
        op: &'a Op,
        inputs: &'a [Digest],
    }
    serde_json::to_vec(&Encoded { v: OP_ENCODING_VERSION, op, inputs }).expect("graph ops always serialise")
}

/// The digest naming a vertex: SHA-256 of [`canonical_encoding`], hashed
/// as it is serialised (no intermediate buffer).
pub fn vertex_digest(op: &Op, inputs: &[Digest]) -> Digest {
    vertex_digest_and_size(op, inputs).0
}

/// [`vertex_digest`] and the length of the [`canonical_encoding`] it hashed.
fn vertex_digest_and_size(op: &Op, inputs: &[Digest]) -> (Digest, u64) {
    #[derive(Serialize)]
    struct Encoded<'a> {
        v: &'static str,
        op: &'a Op,
        inputs: &'a [Digest],
    }
    struct HashWriter(Sha256, u64);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            self.1 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Sha256::new(), 0);
    serde_json::to_writer(&mut w, &Encoded { v: OP_ENCODING_VERSION, op, inputs }).expect("graph ops always serialise");
    (Digest(w.0.finalize().into()), w.1)
}

/// The name a lowering gives its one result in [`Definition::outputs`].
pub const MAIN_OUTPUT: &str = "main";

/// A build graph: vertices in topological order (inputs before users), and
/// the named results the build asks for (one per target x platform when
/// several lowerings are merged into one graph; a `None` result is `FROM
/// scratch` with no steps, an empty filesystem).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Definition {
    /// Vertices, inputs first; each digest appears once.
    pub vertices: Vec<Vertex>,
    /// Result vertices by output name.
    pub outputs: BTreeMap<String, Option<Digest>>,
    /// Digest -> position in `vertices`, maintained by [`Definition::add`]
    /// (lowering a 5,000-instruction file was quadratic without it).
    /// Lookups verify the slot and fall back to a scan, so a definition
    /// whose `vertices` were edited directly stays correct.
    #[serde(skip)]
    index: HashMap<Digest, usize>,
    /// Total canonical-encoding bytes of the vertices [`Definition::add`]
    /// added: what the graph costs in memory, for the frontend's bound.
    #[serde(skip)]
    encoded_bytes: u64,
}

/// Merging a definition under an output name that is already taken.
#[derive(Debug, thiserror::Error)]
#[error("the build graph already has an output named `{0}`")]
pub struct DuplicateOutput(pub String);

impl PartialEq for Definition {
    fn eq(&self, other: &Self) -> bool {
        self.vertices == other.vertices && self.outputs == other.outputs
    }
}

impl Eq for Definition {}

impl Definition {
    /// Adds a vertex (deduplicated by digest) and returns its digest.
    pub fn add(&mut self, op: Op, inputs: Vec<Digest>, meta: VertexMeta) -> Digest {
        let (digest, size) = vertex_digest_and_size(&op, &inputs);
        if self.get(&digest).is_none() {
            debug_assert!(inputs.iter().all(|i| self.get(i).is_some()), "inputs must be added first");
            self.encoded_bytes += size;
            self.index.insert(digest, self.vertices.len());
            self.vertices.push(Vertex { digest, op, inputs, meta });
        }
        digest
    }

    /// Canonical-encoding bytes of the vertices added with
    /// [`Definition::add`] (not counting duplicates).
    pub fn encoded_bytes(&self) -> u64 {
        self.encoded_bytes
    }

    /// Looks a vertex up by digest.
    pub fn get(&self, digest: &Digest) -> Option<&Vertex> {
        if let Some(v) = self.index.get(digest).and_then(|&i| self.vertices.get(i)).filter(|v| &v.digest == digest) {
            return Some(v);
        }
        // A miss is final when the index covers every vertex; otherwise
        // `vertices` was edited (or deserialised) behind the index's back.
        if self.index.len() == self.vertices.len() {
            return None;
        }
        self.vertices.iter().find(|v| &v.digest == digest)
    }

    /// The result of a single lowering ([`MAIN_OUTPUT`]).
    pub fn output(&self) -> Option<Digest> {
        self.outputs.get(MAIN_OUTPUT).copied().flatten()
    }

    /// Sets the result named `name`.
    pub fn set_output(&mut self, name: &str, result: Option<Digest>) {
        self.outputs.insert(name.to_string(), result);
    }

    /// Adds the vertices of `other` and its [`MAIN_OUTPUT`] as the output
    /// `name`. Vertices are named by content, so a vertex both graphs hold
    /// (a shared base stage, a `FROM --platform=$BUILDPLATFORM` stage of two
    /// target platforms) is kept once and runs once; it ignores the cache if
    /// either side asked it to.
    pub fn merge_as(&mut self, name: &str, other: &Definition) -> Result<(), DuplicateOutput> {
        if self.outputs.contains_key(name) {
            return Err(DuplicateOutput(name.to_string()));
        }
        let result = self.absorb(other);
        self.outputs.insert(name.to_string(), result);
        Ok(())
    }

    /// Adds the vertices of `other` (each once, as [`Definition::merge_as`])
    /// without naming an output; returns `other`'s [`MAIN_OUTPUT`], now a
    /// vertex of `self`. A lowering uses it to build on another build's
    /// result (a bake `target:` context) inside its own graph.
    pub fn absorb(&mut self, other: &Definition) -> Option<Digest> {
        if self.index.len() != self.vertices.len() {
            self.reindex();
        }
        for v in &other.vertices {
            match self.index.get(&v.digest) {
                Some(&i) => self.vertices[i].meta.ignore_cache |= v.meta.ignore_cache,
                None => {
                    debug_assert!(v.inputs.iter().all(|i| self.index.contains_key(i)), "inputs come first");
                    self.index.insert(v.digest, self.vertices.len());
                    self.vertices.push(v.clone());
                }
            }
        }
        other.output()
    }

    /// The digests `digest` depends on, itself included.
    pub fn reachable_from(&self, digest: Digest) -> std::collections::HashSet<Digest> {
        let mut keep = std::collections::HashSet::new();
        let mut stack = vec![digest];
        while let Some(d) = stack.pop() {
            if keep.insert(d)
                && let Some(v) = self.get(&d)
            {
                stack.extend(v.inputs.iter().copied());
            }
        }
        keep
    }

    fn reindex(&mut self) {
        self.index = self.vertices.iter().enumerate().map(|(i, v)| (v.digest, i)).collect();
    }

    /// Keeps only the vertices an output reaches, in their order.
    pub fn prune_unreachable(&mut self) {
        // A digest index makes the walk linear; `get` scans the list, which
        // made this quadratic on large graphs (5,000-instruction files).
        let by_digest: std::collections::HashMap<Digest, &Vertex> =
            self.vertices.iter().map(|v| (v.digest, v)).collect();
        let mut keep = std::collections::HashSet::new();
        let mut stack: Vec<Digest> = self.outputs.values().flatten().copied().collect();
        while let Some(d) = stack.pop() {
            if keep.insert(d)
                && let Some(v) = by_digest.get(&d)
            {
                stack.extend(v.inputs.iter().copied());
            }
        }
        self.vertices.retain(|v| keep.contains(&v.digest));
        self.reindex();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(reference: &str) -> Op {
        Op::Source(SourceOp::Image { reference: reference.into(), platform: Platform::parse("linux/amd64").unwrap() })
    }

    #[test]
    fn digest_is_pinned() {
        // Golden: a change here means every cache key changed.
        let d = vertex_digest(&image("docker.io/library/busybox:latest"), &[]);
        assert_eq!(
            String::from_utf8(canonical_encoding(&image("docker.io/library/busybox:latest"), &[])).unwrap(),
            r#"{"v":"rbuild.op.v0","op":{"type":"source","source":"image","reference":"docker.io/library/busybox:latest","platform":{"os":"linux","architecture":"amd64"}},"inputs":[]}"#
        );
        assert_eq!(d, Digest::of(&canonical_encoding(&image("docker.io/library/busybox:latest"), &[])));
    }

    #[test]
    fn meta_does_not_change_identity_and_inputs_do() {
        let mut def = Definition::default();
        let a = def.add(image("a"), vec![], VertexMeta { description: "one".into(), ..Default::default() });
        let a2 = def.add(image("a"), vec![], VertexMeta { description: "two".into(), ..Default::default() });
        assert_eq!(a, a2);
        assert_eq!(def.vertices.len(), 1);
        let b = def.add(image("b"), vec![], VertexMeta::default());
        let m1 = def.add(Op::Merge(MergeOp {}), vec![a, b], VertexMeta::default());
        let m2 = def.add(Op::Merge(MergeOp {}), vec![b, a], VertexMeta::default());
        assert_ne!(m1, m2);
    }

    fn context(origin: &str) -> Op {
        Op::Source(SourceOp::Context {
            name: "context".into(),
            origin: origin.into(),
            include: vec![],
            exclude: vec![],
        })
    }

    /// One lowering's graph: `image` plus a merge of it with `extra`.
    fn lowering(extra: Op, no_cache: bool) -> Definition {
        let mut def = Definition::default();
        let base = def.add(image("base"), vec![], VertexMeta::default());
        let x = def.add(extra, vec![], VertexMeta { ignore_cache: no_cache, ..Default::default() });
        let out = def.add(Op::Merge(MergeOp {}), vec![base, x], VertexMeta::default());
        def.set_output(MAIN_OUTPUT, Some(out));
        def
    }

    #[test]
    fn merged_definitions_share_vertices_by_digest_and_keep_every_output() {
        let amd = lowering(image("tool"), false);
        let arm = lowering(image("tool-arm"), true);
        let mut merged = Definition::default();
        merged.merge_as("app/linux/amd64", &amd).unwrap();
        merged.merge_as("app/linux/arm64", &arm).unwrap();
        // base is shared: 1 + 2 + 2 vertices, not 6.
        assert_eq!(merged.vertices.len(), 5);
        assert_eq!(merged.outputs["app/linux/amd64"], amd.output());
        assert_eq!(merged.outputs["app/linux/arm64"], arm.output());
        let err = merged.merge_as("app/linux/amd64", &amd).unwrap_err();
        assert_eq!(err.to_string(), "the build graph already has an output named `app/linux/amd64`");
        // The same vertex asked to ignore the cache by one side ignores it.
        let mut merged = Definition::default();
        merged.merge_as("a", &lowering(image("tool"), false)).unwrap();
        merged.merge_as("b", &lowering(image("tool"), true)).unwrap();
        assert_eq!(merged.vertices.len(), 3);
        assert!(merged.get(&vertex_digest(&image("tool"), &[])).unwrap().meta.ignore_cache);
        // Pruning keeps what any output reaches.
        merged.prune_unreachable();
        assert_eq!(merged.vertices.len(), 3);
        let reach = merged.reachable_from(merged.outputs["a"].unwrap());
        assert_eq!(reach.len(), 3);
    }

    #[test]
    fn a_context_origin_is_part_of_its_identity_and_an_empty_one_is_not_encoded() {
        assert_ne!(vertex_digest(&context("/a"), &[]), vertex_digest(&context("/b"), &[]));
        assert_eq!(
            String::from_utf8(canonical_encoding(&context(""), &[])).unwrap(),
            r#"{"v":"rbuild.op.v0","op":{"type":"source","source":"context","name":"context","include":[],"exclude":[]},"inputs":[]}"#
        );
        let mut merged = Definition::default();
        merged.merge_as("one", &lowering(context("/src/one"), false)).unwrap();
        merged.merge_as("two", &lowering(context("/src/two"), false)).unwrap();
        assert_eq!(merged.vertices.len(), 5, "same-named contexts of two directories stay apart");
    }

    #[test]
    fn platform_parsing_normalises() {
        assert_eq!(Platform::parse("linux/x86_64").unwrap().to_string(), "linux/amd64");
        assert_eq!(Platform::parse("linux/arm64/v8").unwrap().to_string(), "linux/arm64");
        assert_eq!(Platform::parse("linux/arm/v7").unwrap().to_string(), "linux/arm/v7");
        assert_eq!(Platform::parse("arm64").unwrap().to_string(), "linux/arm64");
        assert!(Platform::parse("linux//").is_none());
    }

    #[test]
    fn definition_counts_encoded_bytes_once_per_vertex() {
        let mut d = Definition::default();
        let op = || Op::Source(SourceOp::Image { reference: "busybox".into(), platform: Platform::host() });
        let a = d.add(op(), vec![], VertexMeta::default());
        let one = d.encoded_bytes();
        assert_eq!(one, canonical_encoding(&op(), &[]).len() as u64);
        assert_eq!(d.add(op(), vec![], VertexMeta::default()), a);
        assert_eq!(d.encoded_bytes(), one, "a duplicate adds nothing");
    }

    #[test]
    fn platform_components_are_validated() {
        for bad in [
            "../../etc",
            "linux/../amd64",
            "linux/amd64/v2/extra",
            "",
            "linux/amd 64",
            "linux/amd64/\0",
            "linux\\x/amd64",
        ] {
            assert!(Platform::try_parse(bad).is_err(), "{bad:?}");
        }
        let e = Platform::try_parse("../../etc").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid platform `../../etc`: the os `..` contains `.`: only letters, digits, `_` and `-` are allowed"
        );
        assert_eq!(Platform::try_parse("windows/amd64").unwrap().to_string(), "windows/amd64");
        assert_eq!(Platform::try_parse(" linux/arm_x/v-1 ").unwrap().to_string(), "linux/arm_x/v-1");
    }
}
