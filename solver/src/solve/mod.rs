//! Parallel scheduling, cache keys and result reuse.
//!
//! [`solve`] walks a [`Definition`] with a bounded pool of worker threads:
//! a vertex becomes ready when all its inputs are done, so independent
//! stages run at once. Each vertex gets a cache key (its op without input
//! digests, its inputs' cache keys, and content checksums of the context
//! files it reads); a key found in the store's index is reused without
//! running anything. The first failure cancels the rest and kills their
//! processes.

mod bind;
mod cachekey;
mod emulation;
mod error;
mod exec;
mod file;
mod network;
mod scratch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rbuild_cache::oci::LayerDescriptor;
use rbuild_cache::remote::{ImportedCache, RemoteError, import::ImportedRecord};
use rbuild_cache::store::{CacheRecord, SnapshotId, Store, StoreError};

use crate::graph::{Definition, Digest, Op, Platform, SourceOp, Vertex};

pub use bind::BindError;
pub use cachekey::CACHE_KEY_VERSION;
pub use error::{SourceError, StepError, error_chain};
pub use exec::cache_mount_key;
pub use scratch::{ChainView, ScratchDir};

/// A base image made available as snapshots.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// Unpacked layer snapshots, base first.
    pub chain: Vec<SnapshotId>,
    /// The registry's layer blobs, same order.
    pub layers: Vec<LayerDescriptor>,
}

/// Where the solver gets content that lives outside the store. `builder`
/// implements it with the registry client (all network I/O stays there).
pub trait SourceProvider: Send + Sync {
    /// Makes `reference` (pinned by digest) available as snapshots.
    fn pull_image(&self, reference: &str, platform: &Platform) -> Result<PulledImage, SourceError>;
    /// Downloads `url` into `dest_dir/filename`, verifying `checksum`
    /// (`sha256:...`) when given.
    fn fetch_http(
        &self,
        url: &str,
        checksum: Option<&str>,
        dest_dir: &std::path::Path,
        filename: &str,
    ) -> Result<(), SourceError>;
    /// Checks out `remote` at `git_ref` into `dest_dir`.
    fn fetch_git(
        &self,
        remote: &str,
        git_ref: &str,
        keep_git_dir: bool,
        dest_dir: &std::path::Path,
    ) -> Result<(), SourceError>;
}

/// `.dockerignore` as a predicate: is this relative slash path excluded?
pub type IgnoreFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Names a local context in [`SolveOptions::contexts`]: the `name` and
/// `origin` of its [`SourceOp::Context`] vertices.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContextKey {
    /// `context` or a `--build-context` name.
    pub name: String,
    /// Where it comes from (empty: the lowering was given no origin).
    pub origin: String,
}

/// A local context directory and its ignore rules.
#[derive(Clone)]
pub struct ContextDir {
    /// The directory.
    pub root: PathBuf,
    /// `.dockerignore` of this context.
    pub ignore: IgnoreFn,
}

/// A secret's value. Never printed: `Debug` shows `<redacted>`.
#[derive(Clone)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Options of one solve.
#[derive(Clone)]
pub struct SolveOptions {
    /// Worker threads (`--jobs`).
    pub jobs: usize,
    /// Local contexts by name and origin (`context` is the main one's name).
    pub contexts: BTreeMap<ContextKey, ContextDir>,
    /// `--secret` values by id.
    pub secrets: BTreeMap<String, Secret>,
    /// `--ssh` agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Whether an owner can be represented in this user namespace.
    pub can_chown: Arc<dyn Fn(u32, u32) -> bool + Send + Sync>,
    /// Privileges `RUN` steps may ask for (`--allow`).
    pub entitlements: Entitlements,
    /// Resource limits of every `RUN`.
    pub limits: RunLimits,
    /// Records of `--cache-from`: a key the store misses but these hold is
    /// a hit whose blobs are fetched only when its files are needed.
    pub imported: Option<Arc<ImportedCache>>,
    /// Called with the vertex and its new snapshot each time an exec or
    /// file vertex commits one (the builder starts writing layer blobs in
    /// the background from here, while later steps run).
    pub on_commit: Option<CommitHook>,
}

/// See [`SolveOptions::on_commit`].
pub type CommitHook = Arc<dyn Fn(&Digest, &SnapshotId) + Send + Sync>;

/// Privileges a build may grant (`--allow`, BuildKit's entitlements). A
/// graph asking for one that is not granted is refused before anything runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// `network.host`: `RUN --network=host`.
    pub network_host: bool,
    /// `security.insecure`: `RUN --security=insecure`.
    pub security_insecure: bool,
}

impl Entitlements {
    /// The entitlement `exec` needs and this set lacks, by BuildKit's name.
    pub fn missing_for(&self, exec: &crate::graph::ExecOp) -> Option<&'static str> {
        use crate::graph::{NetworkMode, SecurityMode};
        if exec.network == NetworkMode::Host && !self.network_host {
            return Some("network.host");
        }
        if exec.security == SecurityMode::Insecure && !self.security_insecure {
            return Some("security.insecure");
        }
        None
    }
}

/// Host-side limits of every `RUN` of a solve (those that are part of a
/// step's identity, `--ulimit` and `--shm-size`, live in its exec op).
#[derive(Clone, Debug, Default)]
pub struct RunLimits {
    /// Where each `RUN` gets its own cgroup (`None`: no usable cgroup v2).
    pub cgroups: Option<Arc<crate::sandbox::CgroupRoot>>,
}

/// Progress of a build, for the UI.
#[derive(Clone, Debug)]
pub enum Event {
    /// A vertex the solve will report on, sent for every such vertex before
    /// anything runs (BuildKit's initial `vertexes`), so a progress view
    /// knows the total. Build contexts and merges are bookkeeping that never
    /// start, so they are not announced.
    Planned {
        /// Vertex.
        digest: Digest,
        /// Its description.
        name: String,
        /// The announced vertices it reads, in input order.
        inputs: Vec<Digest>,
    },
    /// A vertex started executing.
    Started {
        /// Vertex.
        digest: Digest,
        /// Its description.
        name: String,
    },
    /// A vertex was satisfied from the cache.
    Cached {
        /// Vertex.
        digest: Digest,
        /// Its description.
        name: String,
    },
    /// A line of output of a running step.
    Log {
        /// Vertex.
        digest: Digest,
        /// 1 stdout, 2 stderr.
        stream: u8,
        /// The line (without newline).
        line: String,
    },
    /// A vertex finished.
    Done {
        /// Vertex.
        digest: Digest,
        /// Wall-clock time.
        elapsed: Duration,
    },
    /// A vertex failed.
    Failed {
        /// Vertex.
        digest: Digest,
        /// Error text.
        error: String,
    },
}

/// Receives progress events (from several threads).
pub trait ProgressSink: Send + Sync {
    /// One event.
    fn event(&self, event: Event);
}

/// Failures of a solve.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    /// A step failed.
    #[error("{name}")]
    Step {
        /// Vertex description.
        name: String,
        /// What went wrong.
        #[source]
        source: StepError,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The graph refers to a vertex it does not contain.
    #[error("invalid graph: vertex {0} has an unknown input")]
    InvalidGraph(Digest),
    /// An imported cache hit could not be turned into snapshots.
    #[error("{name}: importing from the remote cache")]
    RemoteCache {
        /// Vertex description.
        name: String,
        /// What went wrong.
        #[source]
        source: RemoteError,
    },
    /// A step needs an entitlement the build did not grant.
    #[error(
        "{name}: needs the `{entitlement}` entitlement, which this build does not grant; pass `--allow {entitlement}` to allow it"
    )]
    Entitlement {
        /// Vertex description.
        name: String,
        /// BuildKit's name of the entitlement.
        entitlement: &'static str,
    },
}

/// The result of a vertex.
#[derive(Clone, Debug)]
pub enum VertexResult {
    /// A filesystem: a chain of snapshots, base first.
    Snapshots {
        /// Snapshot ids, base first.
        chain: Vec<SnapshotId>,
        /// Known layer blobs for the chain entries.
        layers: Vec<Option<LayerDescriptor>>,
    },
    /// A local directory used in place (build contexts).
    Directory(ContextDir),
}

impl std::fmt::Debug for ContextDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ContextDir({})", self.root.display())
    }
}

/// A finished vertex: its result and cache key.
#[derive(Clone, Debug)]
pub(crate) struct Finished {
    pub result: VertexResult,
    pub key: Digest,
    /// Set for a hit in the imported records whose snapshots do not exist
    /// yet (`result` is then an empty chain): see [`materialize`].
    pub lazy: Option<ImportedRecord>,
}

/// What one output of the definition produced.
#[derive(Clone, Debug)]
pub struct Solved {
    /// The result of the output vertex (`None` for an empty graph output).
    pub result: Option<VertexResult>,
    /// Cache keys of every vertex this output depends on, for remote-cache
    /// export (`mode=max`).
    pub keys: HashMap<Digest, Digest>,
    /// Cache keys of the vertices whose snapshot chain is a prefix of the
    /// output's (the output's own included): the base image and the steps
    /// whose layers make up the result, which `mode=min` exports.
    pub image_keys: Vec<Digest>,
    /// The output vertex's cache key.
    pub key: Option<Digest>,
    /// Set when the output was resolved from imported records and nothing
    /// needed its files: `result` then has the layers but no snapshots. The
    /// caller fetches the blobs (an image export) or materializes the
    /// snapshots (a filesystem export) with [`ImportedCache`].
    pub imported: Option<ImportedRecord>,
}

/// What a solve produced: one [`Solved`] per output of the definition.
#[derive(Clone, Debug, Default)]
pub struct Solution {
    /// Results by output name.
    pub outputs: BTreeMap<String, Solved>,
}

impl Solution {
    /// The result of the output `name`.
    pub fn output(&self, name: &str) -> Option<&Solved> {
        self.outputs.get(name)
    }
}

/// Shared state of one solve.
pub(crate) struct Shared<'a> {
    pub def: &'a Definition,
    pub store: &'a Store,
    pub source: &'a dyn SourceProvider,
    pub opts: &'a SolveOptions,
    pub progress: &'a dyn ProgressSink,
    pub cancelled: AtomicBool,
    /// Running sandboxes, killed on cancellation.
    pub running: Mutex<HashMap<Digest, crate::sandbox::Killer>>,
    pub lease: rbuild_cache::store::Lease,
    /// The private network of default-network `RUN`s, started on first use.
    pub network: network::BuildNetwork,
}

impl Shared<'_> {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        for sandbox in self.running.lock().expect("running map").values() {
            sandbox.kill();
        }
    }
}

struct Schedule {
    done: HashMap<Digest, Finished>,
    waiting: HashMap<Digest, usize>,
    ready: Vec<usize>,
    running: usize,
    error: Option<SolveError>,
}

/// Runs every output of `def` in one pass and returns each output's result.
/// A vertex several outputs share runs once; independent vertices run
/// concurrently, at most `opts.jobs` at a time.
pub fn solve(
    def: &Definition,
    store: &Store,
    source: &dyn SourceProvider,
    opts: &SolveOptions,
    progress: &dyn ProgressSink,
) -> Result<Solution, SolveError> {
    // Entitlements are checked for the whole graph before anything runs.
    for v in &def.vertices {
        if let Op::Exec(exec) = &v.op
            && let Some(entitlement) = opts.entitlements.missing_for(exec)
        {
            return Err(SolveError::Entitlement { name: v.meta.description.clone(), entitlement });
        }
    }
    let index: HashMap<Digest, usize> = def.vertices.iter().enumerate().map(|(i, v)| (v.digest, i)).collect();
    let mut dependents: HashMap<Digest, Vec<usize>> = HashMap::new();
    let mut schedule =
        Schedule { done: HashMap::new(), waiting: HashMap::new(), ready: Vec::new(), running: 0, error: None };
    for (i, v) in def.vertices.iter().enumerate() {
        let mut unique = v.inputs.clone();
        unique.sort();
        unique.dedup();
        for input in &unique {
            if !index.contains_key(input) {
                return Err(SolveError::InvalidGraph(v.digest));
            }
            dependents.entry(*input).or_default().push(i);
        }
        if unique.is_empty() {
            schedule.ready.push(i);
        } else {
            schedule.waiting.insert(v.digest, unique.len());
        }
    }
    // Run in graph order: earlier stages first when there is a choice.
    schedule.ready.reverse();
    announce(def, progress);

    let shared = Shared {
        def,
        store,
        source,
        opts,
        progress,
        cancelled: AtomicBool::new(false),
        running: Mutex::new(HashMap::new()),
        lease: store.lease()?,
        network: network::BuildNetwork::default(),
    };
    let state = Mutex::new(schedule);
    let wake = Condvar::new();
    let jobs = opts.jobs.max(1).min(def.vertices.len().max(1));

    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| worker(&shared, &state, &wake, &dependents));
        }
    });

    // Checksums learnt by this build are persisted once, failed or not.
    let saved = store.checksum_cache().save();
    let mut schedule = state.into_inner().expect("schedule lock");
    if let Some(e) = schedule.error.take() {
        return Err(e);
    }
    saved?;
    let mut solution = Solution::default();
    for (name, output) in &def.outputs {
        let solved = match output {
            Some(out) => {
                let finished = schedule.done.get(out).ok_or(SolveError::InvalidGraph(*out))?;
                let reachable = def.reachable_from(*out);
                let keys = reachable.iter().filter_map(|d| schedule.done.get(d).map(|f| (*d, f.key))).collect();
                let image_keys = reachable
                    .iter()
                    .filter_map(|d| schedule.done.get(d))
                    .filter(|f| is_prefix_of(f, &finished.result))
                    .map(|f| f.key)
                    .collect();
                Solved {
                    result: Some(finished.result.clone()),
                    keys,
                    image_keys,
                    key: Some(finished.key),
                    imported: finished.lazy.clone(),
                }
            }
            None => Solved { result: None, keys: HashMap::new(), image_keys: Vec::new(), key: None, imported: None },
        };
        solution.outputs.insert(name.clone(), solved);
    }
    Ok(solution)
}

/// Sends `Event::Planned` for each vertex that will report progress.
fn announce(def: &Definition, progress: &dyn ProgressSink) {
    let silent = |v: &Vertex| matches!(v.op, Op::Source(SourceOp::Context { .. }) | Op::Merge(_));
    let reported: HashSet<Digest> = def.vertices.iter().filter(|v| !silent(v)).map(|v| v.digest).collect();
    for v in def.vertices.iter().filter(|v| !silent(v)) {
        let mut inputs: Vec<Digest> = Vec::new();
        for input in v.inputs.iter().filter(|d| reported.contains(d)) {
            if !inputs.contains(input) {
                inputs.push(*input);
            }
        }
        progress.event(Event::Planned { digest: v.digest, name: v.meta.description.clone(), inputs });
    }
}

fn worker(shared: &Shared<'_>, state: &Mutex<Schedule>, wake: &Condvar, dependents: &HashMap<Digest, Vec<usize>>) {
    loop {
        let (i, inputs) = {
            let mut s = state.lock().expect("schedule lock");
            loop {
                if s.error.is_some() || (s.ready.is_empty() && s.running == 0) {
                    wake.notify_all();
                    return;
                }
                if let Some(i) = s.ready.pop() {
                    s.running += 1;
                    let v = &shared.def.vertices[i];
                    let inputs: Vec<Finished> = v.inputs.iter().map(|d| s.done[d].clone()).collect();
                    break (i, inputs);
                }
                s = wake.wait(s).expect("schedule lock");
            }
        };
        let vertex = &shared.def.vertices[i];
        let outcome = run_vertex(shared, vertex, &inputs);
        let mut s = state.lock().expect("schedule lock");
        s.running -= 1;
        match outcome {
            Ok(finished) => {
                s.done.insert(vertex.digest, finished);
                for &j in dependents.get(&vertex.digest).map(Vec::as_slice).unwrap_or(&[]) {
                    let d = shared.def.vertices[j].digest;
                    let n = s.waiting.get_mut(&d).expect("dependent is waiting");
                    *n -= 1;
                    if *n == 0 {
                        s.waiting.remove(&d);
                        s.ready.push(j);
                    }
                }
            }
            Err(e) => {
                if s.error.is_none() {
                    shared.progress.event(Event::Failed { digest: vertex.digest, error: error_chain(&e) });
                    s.error = Some(e);
                    shared.cancel();
                }
            }
        }
        wake.notify_all();
    }
}

fn step_error(vertex: &Vertex, source: impl Into<StepError>) -> SolveError {
    SolveError::Step { name: vertex.meta.description.clone(), source: source.into() }
}

fn run_vertex(shared: &Shared<'_>, vertex: &Vertex, inputs: &[Finished]) -> Result<Finished, SolveError> {
    if shared.is_cancelled() {
        return Err(step_error(vertex, StepError::Cancelled));
    }
    let name = vertex.meta.description.clone();
    // Build contexts are used in place; they are not snapshots.
    if let Op::Source(SourceOp::Context { name: ctx, origin, exclude, .. }) = &vertex.op {
        let wanted = ContextKey { name: ctx.clone(), origin: origin.clone() };
        let dir = shared.opts.contexts.get(&wanted).cloned().ok_or_else(|| {
            step_error(vertex, StepError::MissingContext { name: ctx.clone(), origin: origin.clone() })
        })?;
        let key = cachekey::context_key(ctx, exclude);
        return Ok(Finished { result: VertexResult::Directory(dir), key, lazy: None });
    }
    // Merges are pure bookkeeping: no snapshot of their own.
    if let Op::Merge(_) = &vertex.op {
        let inputs = materialize_all(shared, vertex, inputs)?;
        let mut chain = Vec::new();
        let mut layers = Vec::new();
        for input in &inputs {
            if let VertexResult::Snapshots { chain: c, layers: l } = &input.result {
                chain.extend(c.iter().cloned());
                layers.extend(l.iter().cloned());
            }
        }
        let key = cachekey::key(vertex, &inputs, &[]);
        return Ok(Finished { result: VertexResult::Snapshots { chain, layers }, key, lazy: None });
    }

    let (content, selections) =
        cachekey::content_checksums(shared, vertex, inputs).map_err(|e| step_error(vertex, e))?;
    let key = cachekey::key(vertex, inputs, &content);
    let key_text = key.to_string();
    if !vertex.meta.ignore_cache
        && let Some(record) = shared.store.lookup(&key_text)?
        && record.chain.iter().all(|id| shared.store.has_snapshot(id))
    {
        for id in &record.chain {
            shared.lease.add_snapshot(id)?;
        }
        shared.progress.event(Event::Cached { digest: vertex.digest, name });
        return Ok(Finished {
            result: VertexResult::Snapshots { chain: record.chain, layers: record.layers },
            key,
            lazy: None,
        });
    }
    if !vertex.meta.ignore_cache
        && let Some(imported) = &shared.opts.imported
        && let Some(record) = imported.lookup(&key_text)
    {
        shared.progress.event(Event::Cached { digest: vertex.digest, name });
        let result = VertexResult::Snapshots { chain: Vec::new(), layers: record.layers.clone() };
        return Ok(Finished { result, key, lazy: Some(record.clone()) });
    }
    // This step runs: its inputs' files must exist.
    let inputs = &materialize_all(shared, vertex, inputs)?[..];

    shared.progress.event(Event::Started { digest: vertex.digest, name });
    let started = Instant::now();
    let result = match &vertex.op {
        Op::Source(SourceOp::Image { reference, platform }) => {
            let pulled =
                shared.source.pull_image(reference, platform).map_err(|e| step_error(vertex, StepError::Source(e)))?;
            VertexResult::Snapshots { chain: pulled.chain, layers: pulled.layers.into_iter().map(Some).collect() }
        }
        Op::Source(SourceOp::Http { .. } | SourceOp::Git { .. }) => file::run_remote_source(shared, vertex)?,
        Op::Exec(exec) => exec::run(shared, vertex, exec, inputs)?,
        Op::File(op) => file::run(shared, vertex, op, inputs, selections)?,
        Op::Source(SourceOp::Context { .. }) | Op::Merge(_) => unreachable!("handled above"),
    };
    if let VertexResult::Snapshots { chain, layers } = &result {
        for id in chain {
            shared.lease.add_snapshot(id)?;
        }
        let created =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        shared.store.record(
            &key_text,
            &CacheRecord { chain: chain.clone(), layers: layers.clone(), created, extra: BTreeMap::new() },
        )?;
        if let (Some(hook), Op::Exec(_) | Op::File(_), Some(top)) = (&shared.opts.on_commit, &vertex.op, chain.last()) {
            hook(&vertex.digest, top);
        }
    }
    shared.progress.event(Event::Done { digest: vertex.digest, elapsed: started.elapsed() });
    Ok(Finished { result, key, lazy: None })
}

/// Whether `part`'s filesystem is a prefix of `whole`'s chain: the same
/// snapshots, or for a hit not yet materialized, the same layer blobs.
fn is_prefix_of(part: &Finished, whole: &VertexResult) -> bool {
    let VertexResult::Snapshots { chain, layers } = whole else { return false };
    match (&part.lazy, &part.result) {
        (Some(record), _) => !record.layers.is_empty() && layers.starts_with(&record.layers),
        // A lazy whole has no snapshots to compare: its layers tell.
        (None, VertexResult::Snapshots { layers: l, .. }) if chain.is_empty() => {
            !l.is_empty() && l.iter().all(Option::is_some) && layers.starts_with(l)
        }
        (None, VertexResult::Snapshots { chain: c, .. }) => !c.is_empty() && chain.starts_with(c),
        (None, VertexResult::Directory(_)) => false,
    }
}

/// Turns an imported hit into snapshots (downloading and unpacking what the
/// store lacks); anything else is returned as it is.
fn materialize(shared: &Shared<'_>, vertex: &Vertex, finished: &Finished) -> Result<Finished, SolveError> {
    let Some(record) = &finished.lazy else { return Ok(finished.clone()) };
    let imported = shared.opts.imported.as_ref().expect("a lazy hit comes from imported records");
    let (chain, layers) = imported
        .materialize(shared.store, &finished.key.to_string(), record)
        .map_err(|source| SolveError::RemoteCache { name: vertex.meta.description.clone(), source })?;
    for id in &chain {
        shared.lease.add_snapshot(id)?;
    }
    Ok(Finished { result: VertexResult::Snapshots { chain, layers }, key: finished.key, lazy: None })
}

/// The inputs of `vertex` with every imported hit materialized (errors are
/// named after the step that needed the files).
fn materialize_all(shared: &Shared<'_>, vertex: &Vertex, inputs: &[Finished]) -> Result<Vec<Finished>, SolveError> {
    inputs.iter().map(|f| materialize(shared, vertex, f)).collect()
}

/// The snapshot chain of an input, or an error for directories where a
/// filesystem is required.
pub(crate) fn chain_of(result: &VertexResult) -> Vec<SnapshotId> {
    match result {
        VertexResult::Snapshots { chain, .. } => chain.clone(),
        VertexResult::Directory(_) => Vec::new(),
    }
}

/// Final snapshot chain with layers for a solved result.
pub fn result_chain(result: &VertexResult) -> (Vec<SnapshotId>, Vec<Option<LayerDescriptor>>) {
    match result {
        VertexResult::Snapshots { chain, layers } => (chain.clone(), layers.clone()),
        VertexResult::Directory(_) => (Vec::new(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{ExecOp, Mount, MountKind, NetworkMode, SecurityMode};

    struct NoSources;

    impl SourceProvider for NoSources {
        fn pull_image(&self, reference: &str, _: &Platform) -> Result<PulledImage, SourceError> {
            panic!("nothing may run, yet `{reference}` was pulled")
        }
        fn fetch_http(&self, url: &str, _: Option<&str>, _: &std::path::Path, _: &str) -> Result<(), SourceError> {
            panic!("nothing may run, yet `{url}` was fetched")
        }
        fn fetch_git(&self, remote: &str, _: &str, _: bool, _: &std::path::Path) -> Result<(), SourceError> {
            panic!("nothing may run, yet `{remote}` was cloned")
        }
    }

    struct Silent;

    impl ProgressSink for Silent {
        fn event(&self, event: Event) {
            panic!("nothing may run, yet there was progress: {event:?}")
        }
    }

    fn exec(network: NetworkMode, security: SecurityMode) -> ExecOp {
        ExecOp {
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network,
            security,
            mounts: vec![Mount {
                input: Some(0),
                selector: String::new(),
                target: "/".into(),
                readonly: false,
                kind: MountKind::Bind,
                mode: None,
                uid: None,
                gid: None,
            }],
            ulimits: vec![],
            shm_size: 0,
            extra_hosts: Vec::new(),
            platform: None,
        }
    }

    #[test]
    fn entitlements_are_checked_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for (network, security, needed) in [
            (NetworkMode::Host, SecurityMode::Sandbox, "network.host"),
            (NetworkMode::Default, SecurityMode::Insecure, "security.insecure"),
        ] {
            let mut def = Definition::default();
            let base = def.add(
                Op::Source(SourceOp::Image { reference: "busybox".into(), platform: Platform::host() }),
                vec![],
                Default::default(),
            );
            let meta = crate::graph::VertexMeta { description: "[2/2] RUN privileged".into(), ..Default::default() };
            let out = def.add(Op::Exec(exec(network, security)), vec![base], meta);
            def.set_output(crate::graph::MAIN_OUTPUT, Some(out));
            let opts = SolveOptions {
                jobs: 1,
                contexts: BTreeMap::new(),
                secrets: BTreeMap::new(),
                ssh: BTreeMap::new(),
                can_chown: Arc::new(|_, _| true),
                entitlements: Entitlements::default(),
                limits: RunLimits::default(),
                imported: None,
                on_commit: None,
            };
            match solve(&def, &store, &NoSources, &opts, &Silent) {
                Err(e @ SolveError::Entitlement { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.starts_with("[2/2] RUN privileged: "), "{msg}");
                    assert!(msg.contains(&format!("--allow {needed}")), "{msg}");
                }
                other => panic!("{other:?}"),
            }
        }
        let granted = Entitlements { network_host: true, security_insecure: true };
        assert_eq!(granted.missing_for(&exec(NetworkMode::Host, SecurityMode::Insecure)), None);
        assert_eq!(Entitlements::default().missing_for(&exec(NetworkMode::None, SecurityMode::Sandbox)), None);
    }
}
