//! Parallel scheduling, cache keys and result reuse.
//!
//! [`solve`] walks a [`Definition`] with a bounded pool of worker threads:
//! a vertex becomes ready when all its inputs are done, so independent
//! stages run at once. Each vertex gets a cache key (its op without input
//! digests, its inputs' cache keys, and content checksums of the context
//! files it reads); a key found in the store's index is reused without
//! running anything. The first failure cancels the rest and kills their
//! processes.

mod cachekey;
mod exec;
mod file;
mod scratch;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rbuild_cache::store::{CacheRecord, LayerDescriptor, SnapshotId, Store, StoreError};

use crate::graph::{Definition, Digest, Op, Platform, SourceOp, Vertex};

pub use cachekey::{CACHE_KEY_VERSION, ChecksumError};
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
    fn pull_image(&self, reference: &str, platform: &Platform) -> Result<PulledImage, String>;
    /// Downloads `url` into `dest_dir/filename`, verifying `checksum`
    /// (`sha256:...`) when given.
    fn fetch_http(
        &self,
        url: &str,
        checksum: Option<&str>,
        dest_dir: &std::path::Path,
        filename: &str,
    ) -> Result<(), String>;
    /// Checks out `remote` at `git_ref` into `dest_dir`.
    fn fetch_git(
        &self,
        remote: &str,
        git_ref: &str,
        keep_git_dir: bool,
        dest_dir: &std::path::Path,
    ) -> Result<(), String>;
}

/// `.dockerignore` as a predicate: is this relative slash path excluded?
pub type IgnoreFn = Arc<dyn Fn(&str) -> bool + Send + Sync>;

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
    /// Local contexts by name (`context` is the main one).
    pub contexts: BTreeMap<String, ContextDir>,
    /// `--secret` values by id.
    pub secrets: BTreeMap<String, Secret>,
    /// `--ssh` agent sockets by id.
    pub ssh: BTreeMap<String, PathBuf>,
    /// Whether an owner can be represented in this user namespace.
    pub can_chown: Arc<dyn Fn(u32, u32) -> bool + Send + Sync>,
}

/// Progress of a build, for the UI.
#[derive(Clone, Debug)]
pub enum Event {
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
    #[error("{name}: {message}")]
    Step {
        /// Vertex description.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A file action (COPY/ADD/WORKDIR...) failed; the cause chain is kept.
    #[error("{name}")]
    File {
        /// Vertex description.
        name: String,
        /// What went wrong.
        #[source]
        source: crate::fileop::FileOpError,
    },
    /// Preparing a step's file systems (views, overlays, scratch dirs)
    /// failed; the cause chain is kept.
    #[error("{name}: {what}")]
    Setup {
        /// Vertex description.
        name: String,
        /// The step that failed.
        what: &'static str,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The content checksum of an op's context files failed.
    #[error("{name}: computing the cache key")]
    Checksum {
        /// Vertex description.
        name: String,
        /// What went wrong.
        #[source]
        source: cachekey::ChecksumError,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The graph refers to a vertex it does not contain.
    #[error("invalid graph: vertex {0} has an unknown input")]
    InvalidGraph(Digest),
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
}

/// What the output vertex produced.
#[derive(Clone, Debug)]
pub struct Solved {
    /// The result of the output vertex (`None` for an empty graph output).
    pub result: Option<VertexResult>,
    /// Cache keys of every vertex, for remote-cache export.
    pub keys: HashMap<Digest, Digest>,
}

/// Shared state of one solve.
pub(crate) struct Shared<'a> {
    pub def: &'a Definition,
    pub store: &'a Store,
    pub source: &'a dyn SourceProvider,
    pub opts: &'a SolveOptions,
    pub progress: &'a dyn ProgressSink,
    pub cancelled: AtomicBool,
    /// Pids of running sandboxes, killed on cancellation.
    pub running: Mutex<HashMap<Digest, i32>>,
    pub lease: rbuild_cache::store::Lease,
}

impl Shared<'_> {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        for pid in self.running.lock().expect("running map").values() {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
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

/// Runs `def` and returns the output vertex's result.
pub fn solve(
    def: &Definition,
    store: &Store,
    source: &dyn SourceProvider,
    opts: &SolveOptions,
    progress: &dyn ProgressSink,
) -> Result<Solved, SolveError> {
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

    let shared = Shared {
        def,
        store,
        source,
        opts,
        progress,
        cancelled: AtomicBool::new(false),
        running: Mutex::new(HashMap::new()),
        lease: store.lease()?,
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
    let keys = schedule.done.iter().map(|(d, f)| (*d, f.key)).collect();
    let result = match def.output {
        Some(out) => Some(schedule.done.remove(&out).ok_or(SolveError::InvalidGraph(out))?.result),
        None => None,
    };
    Ok(Solved { result, keys })
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

/// `error: cause: cause...`, as `anyhow`'s `{:#}` prints it: progress
/// shows the whole chain, not only the outermost message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

fn step_error(vertex: &Vertex, message: impl Into<String>) -> SolveError {
    SolveError::Step { name: vertex.meta.description.clone(), message: message.into() }
}

fn run_vertex(shared: &Shared<'_>, vertex: &Vertex, inputs: &[Finished]) -> Result<Finished, SolveError> {
    if shared.is_cancelled() {
        return Err(step_error(vertex, "cancelled"));
    }
    let name = vertex.meta.description.clone();
    // Build contexts are used in place; they are not snapshots.
    if let Op::Source(SourceOp::Context { name: ctx, exclude, .. }) = &vertex.op {
        let dir = shared
            .opts
            .contexts
            .get(ctx)
            .cloned()
            .ok_or_else(|| step_error(vertex, format!("build context `{ctx}` was not provided")))?;
        let key = cachekey::context_key(ctx, exclude);
        return Ok(Finished { result: VertexResult::Directory(dir), key });
    }
    // Merges are pure bookkeeping: no snapshot of their own.
    if let Op::Merge(_) = &vertex.op {
        let mut chain = Vec::new();
        let mut layers = Vec::new();
        for input in inputs {
            if let VertexResult::Snapshots { chain: c, layers: l } = &input.result {
                chain.extend(c.iter().cloned());
                layers.extend(l.iter().cloned());
            }
        }
        let key = cachekey::key(vertex, inputs, &[]);
        return Ok(Finished { result: VertexResult::Snapshots { chain, layers }, key });
    }

    let content = cachekey::content_checksums(shared, vertex, inputs)
        .map_err(|source| SolveError::Checksum { name: vertex.meta.description.clone(), source })?;
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
        return Ok(Finished { result: VertexResult::Snapshots { chain: record.chain, layers: record.layers }, key });
    }

    shared.progress.event(Event::Started { digest: vertex.digest, name });
    let started = Instant::now();
    let result = match &vertex.op {
        Op::Source(SourceOp::Image { reference, platform }) => {
            let pulled = shared.source.pull_image(reference, platform).map_err(|e| step_error(vertex, e))?;
            VertexResult::Snapshots { chain: pulled.chain, layers: pulled.layers.into_iter().map(Some).collect() }
        }
        Op::Source(SourceOp::Http { .. } | SourceOp::Git { .. }) => file::run_remote_source(shared, vertex)?,
        Op::Exec(exec) => exec::run(shared, vertex, exec, inputs)?,
        Op::File(op) => file::run(shared, vertex, op, inputs)?,
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
    }
    shared.progress.event(Event::Done { digest: vertex.digest, elapsed: started.elapsed() });
    Ok(Finished { result, key })
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
