//! Incremental COPY through the solver: after random edits of the context,
//! a COPY rebuilt from its previous snapshot gives the same layer (digest
//! and diff id) as a fresh copy in an empty store, shares the unchanged
//! files' inodes with the previous snapshot, and nothing written later —
//! by the copy itself or by a later file op — changes a shared inode.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbuild_cache::layer::{Compression, LayerOptions, write_layer};
use rbuild_cache::store::{SnapshotId, Store};
use rbuild_solver::graph::{Definition, FileAction, FileOp, MAIN_OUTPUT, Op, SourceOp, VertexMeta};
use rbuild_solver::solve::{
    ContextDir, ContextKey, Entitlements, Event, ProgressSink, PulledImage, RunLimits, SolveOptions, SourceError,
    SourceProvider, result_chain, solve,
};

struct NoSources;

impl SourceProvider for NoSources {
    fn pull_image(&self, reference: &str, _: &rbuild_solver::graph::Platform) -> Result<PulledImage, SourceError> {
        panic!("no images here, yet `{reference}` was pulled")
    }
    fn fetch_http(&self, url: &str, _: Option<&str>, _: &Path, _: &str) -> Result<(), SourceError> {
        panic!("no downloads here, yet `{url}` was fetched")
    }
    fn fetch_git(&self, remote: &str, _: &str, _: bool, _: &Path) -> Result<(), SourceError> {
        panic!("no git here, yet `{remote}` was cloned")
    }
}

struct Quiet;

impl ProgressSink for Quiet {
    fn event(&self, _: Event) {}
}

/// A deterministic pseudo-random sequence (xorshift), so a failure can be
/// replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What the COPY looks like.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `COPY . /` onto scratch.
    Scratch,
    /// `COPY --chmod=640 src /app/src/` onto a base that has `/app`.
    OverBase,
}

fn copy_action(shape: Shape) -> FileAction {
    let (src, dest, chmod) = match shape {
        Shape::Scratch => (".", "/", None),
        Shape::OverBase => ("src", "/app/src/", Some("640".to_string())),
    };
    FileAction::Copy {
        input: match shape {
            Shape::Scratch => 0,
            Shape::OverBase => 1,
        },
        src: vec![src.into()],
        dest: dest.into(),
        chown: None,
        chmod,
        allow_wildcard: true,
        allow_empty_wildcard: false,
        unpack_archive: false,
        parents: false,
        exclude: vec![],
    }
}

/// The graph of one build: the COPY and, with `after`, a later file op on
/// top of it. Returns the definition and the COPY's vertex.
fn graph(shape: Shape, after: Option<FileAction>) -> Definition {
    let mut def = Definition::default();
    let ctx = def.add(
        Op::Source(SourceOp::Context {
            name: "context".into(),
            origin: String::new(),
            include: vec![],
            exclude: vec![],
        }),
        vec![],
        VertexMeta::default(),
    );
    let copy = match shape {
        Shape::Scratch => def.add(
            Op::File(FileOp { base: None, actions: vec![copy_action(shape)] }),
            vec![ctx],
            VertexMeta { description: "COPY".into(), ..Default::default() },
        ),
        Shape::OverBase => {
            let base = def.add(
                Op::File(FileOp {
                    base: None,
                    actions: vec![FileAction::Mkdir {
                        path: "/app".into(),
                        mode: 0o755,
                        make_parents: true,
                        chown: None,
                    }],
                }),
                vec![],
                VertexMeta::default(),
            );
            def.add(
                Op::File(FileOp { base: Some(0), actions: vec![copy_action(shape)] }),
                vec![base, ctx],
                VertexMeta { description: "COPY".into(), ..Default::default() },
            )
        }
    };
    let out = match after {
        Some(action) => {
            def.add(Op::File(FileOp { base: Some(0), actions: vec![action] }), vec![copy], Default::default())
        }
        None => copy,
    };
    def.set_output(MAIN_OUTPUT, Some(out));
    def
}

/// Solves `def` over the context `ctx` and returns the output's chain.
fn build(store: &Store, ctx: &Path, def: &Definition) -> Vec<SnapshotId> {
    let mut contexts = BTreeMap::new();
    // `.dockerignore`-style rule: `ignored*` never reaches the copy.
    let ignore: rbuild_solver::solve::IgnoreFn = Arc::new(|p: &str| p.starts_with("ignored") || p.contains("/ignored"));
    contexts.insert(
        ContextKey { name: "context".into(), origin: String::new() },
        ContextDir { root: ctx.to_path_buf(), ignore },
    );
    let opts = SolveOptions {
        jobs: 2,
        contexts,
        secrets: BTreeMap::new(),
        ssh: BTreeMap::new(),
        can_chown: Arc::new(|_, _| true),
        entitlements: Entitlements::default(),
        limits: RunLimits::default(),
        imported: None,
        on_commit: None,
    };
    let solution = solve(def, store, &NoSources, &opts, &Quiet).expect("solve");
    let result = solution.output(MAIN_OUTPUT).and_then(|o| o.result.clone()).expect("a result");
    result_chain(&result).0
}

/// (digest, diff id) of the gzip layer made from a snapshot.
fn layer(store: &Store, id: &SnapshotId) -> (String, String) {
    let opts = LayerOptions { compression: Compression::Gzip { level: 1 }, source_date_epoch: None, threads: 1 };
    let d = write_layer(&store.snapshot_diff(id), &opts, &mut std::io::sink()).expect("write layer");
    (d.digest, d.diff_id)
}

/// The layer of a COPY snapshot as a fresh copy in another store would
/// have it: over a base, the directories the build itself creates (`/app`
/// from the base step, `/app/src` made by the COPY) carry the time of the
/// build, so they are given a fixed mtime in a copy of the tree (`cp -a`
/// keeps hard-link groups and every other attribute) first.
fn comparable(shape: Shape, diff: &Path) -> (String, String) {
    let opts = LayerOptions { compression: Compression::Gzip { level: 1 }, source_date_epoch: None, threads: 1 };
    let tree = match shape {
        Shape::Scratch => diff.to_path_buf(),
        Shape::OverBase => {
            let t = tempfile::tempdir().unwrap().keep();
            let status = std::process::Command::new("cp").arg("-a").arg(diff).arg(t.join("d")).status().unwrap();
            assert!(status.success());
            for d in ["app/src", "app"] {
                fs::File::open(t.join("d").join(d)).unwrap().set_modified(std::time::UNIX_EPOCH).unwrap();
            }
            t.join("d")
        }
    };
    let d = write_layer(&tree, &opts, &mut std::io::sink()).expect("write layer");
    if let Shape::OverBase = shape {
        fs::remove_dir_all(tree.parent().unwrap()).unwrap();
    }
    (d.digest, d.diff_id)
}

/// (dev, ino) -> path of every regular file of a tree.
fn inodes(root: &Path) -> HashMap<(u64, u64), PathBuf> {
    let mut out = HashMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                out.insert((md.dev(), md.ino()), e.path());
            }
        }
    }
    out
}

/// The context's file tree below `base` as a list of candidate paths.
fn paths(base: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p).unwrap(),
        Ok(_) => fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

/// One random edit of the tree below `base`; returns what it did.
fn edit(rng: &mut Rng, base: &Path, round: usize) -> String {
    let all = paths(base);
    let files: Vec<&PathBuf> = all.iter().filter(|p| fs::symlink_metadata(p).unwrap().is_file()).collect();
    let dirs: Vec<PathBuf> = std::iter::once(base.to_path_buf())
        .chain(all.iter().filter(|p| fs::symlink_metadata(p).unwrap().is_dir()).cloned())
        .collect();
    let pick_file = |rng: &mut Rng| files.get(rng.below(files.len().max(1))).map(|p| p.to_path_buf());
    let new_name = |rng: &mut Rng| dirs[rng.below(dirs.len())].join(format!("n{round}_{:x}", rng.next()));
    match rng.below(11) {
        0 => {
            let p = new_name(rng);
            fs::write(&p, format!("new {round}\n")).unwrap();
            format!("add {}", p.display())
        }
        1 => match pick_file(rng) {
            Some(p) => {
                fs::remove_file(&p).unwrap();
                format!("remove {}", p.display())
            }
            None => "nothing".into(),
        },
        2 => match pick_file(rng) {
            // Same size, new content, and the old mtime put back: only the
            // content checksum can tell.
            Some(p) => {
                let old = fs::read(&p).unwrap();
                let mtime = fs::metadata(&p).unwrap().modified().unwrap();
                let mut new = old.clone();
                if let Some(b) = new.first_mut() {
                    *b = b.wrapping_add(1);
                } else {
                    new.push(b'x');
                }
                // A new inode (as editors write), so the stat-keyed
                // checksum cache sees the change.
                let tmp = p.with_extension("swap");
                fs::write(&tmp, &new).unwrap();
                fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
                fs::rename(&tmp, &p).unwrap();
                format!("modify (same size and mtime) {}", p.display())
            }
            None => "nothing".into(),
        },
        3 => match pick_file(rng) {
            Some(p) => {
                let mut data = fs::read(&p).unwrap();
                data.extend_from_slice(format!("more {round}\n").as_bytes());
                fs::write(&p, data).unwrap();
                format!("append {}", p.display())
            }
            None => "nothing".into(),
        },
        4 => match pick_file(rng) {
            Some(p) => {
                let mode = [0o600, 0o644, 0o755, 0o4755][rng.below(4)];
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
                format!("chmod {mode:o} {}", p.display())
            }
            None => "nothing".into(),
        },
        5 => match pick_file(rng) {
            Some(p) => {
                let to = new_name(rng);
                fs::rename(&p, &to).unwrap();
                format!("rename {} -> {}", p.display(), to.display())
            }
            None => "nothing".into(),
        },
        6 => {
            let p = new_name(rng);
            let target = ["a.txt", "../x", "/etc/passwd", "sub"][rng.below(4)];
            symlink(target, &p).unwrap();
            format!("symlink {}", p.display())
        }
        7 => match pick_file(rng) {
            // A file becomes a directory with a file in it.
            Some(p) => {
                fs::remove_file(&p).unwrap();
                fs::create_dir(&p).unwrap();
                fs::write(p.join("inner.txt"), "inner\n").unwrap();
                format!("file->dir {}", p.display())
            }
            None => "nothing".into(),
        },
        8 => {
            // A directory (not the root) becomes a file.
            let sub: Vec<&PathBuf> = dirs.iter().skip(1).collect();
            match sub.get(rng.below(sub.len().max(1))) {
                Some(d) => {
                    let d = d.to_path_buf();
                    fs::remove_dir_all(&d).unwrap();
                    fs::write(&d, "was a dir\n").unwrap();
                    format!("dir->file {}", d.display())
                }
                None => "nothing".into(),
            }
        }
        9 => match pick_file(rng) {
            // A hard-link pair in the source (a real in-layer link), or
            // breaking one (the copy must not keep sharing the inode).
            Some(p) => {
                let to = new_name(rng);
                if fs::metadata(&p).unwrap().nlink() > 1 {
                    let data = fs::read(&p).unwrap();
                    remove(&p);
                    fs::write(&p, data).unwrap();
                    format!("unlink pair {}", p.display())
                } else {
                    fs::hard_link(&p, &to).unwrap();
                    format!("hardlink {} -> {}", to.display(), p.display())
                }
            }
            None => "nothing".into(),
        },
        _ => {
            let d = new_name(rng);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("ignored.txt"), "ignored\n").unwrap();
            fs::write(d.join("kept.txt"), format!("kept {round}\n")).unwrap();
            format!("mkdir {}", d.display())
        }
    }
}

fn seed_context(base: &Path) {
    fs::create_dir_all(base.join("sub/deeper")).unwrap();
    for i in 0..40 {
        let dir = if i % 3 == 0 { base.join("sub") } else { base.to_path_buf() };
        fs::write(dir.join(format!("f{i:02}.txt")), format!("file {i}\n").repeat(i + 1)).unwrap();
    }
    fs::write(base.join("sub/deeper/a.txt"), "deep\n").unwrap();
    fs::write(base.join("ignored.log"), "never copied\n").unwrap();
    fs::write(base.join("empty"), "").unwrap();
}

/// A later step writing over a file of the COPY (a mkfile through the
/// overlay view), as an attacker's Dockerfile would to corrupt the cache.
fn overwrite(shape: Shape) -> FileAction {
    let path = match shape {
        Shape::Scratch => "/f01.txt",
        Shape::OverBase => "/app/src/f01.txt",
    };
    FileAction::Mkfile { path: path.into(), mode: 0o777, data: "overwritten\n".into(), chown: None }
}

fn random_edits_match_a_fresh_copy(shape: Shape, seed: u64) {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    let base = match shape {
        Shape::Scratch => ctx.clone(),
        Shape::OverBase => ctx.join("src"),
    };
    seed_context(&base);
    let store = Store::open(&t.path().join("store")).unwrap();
    let def = graph(shape, None);
    let mut prev = build(&store, &ctx, &def).last().cloned().unwrap();
    let mut shared_total = 0;
    let mut rng = Rng(seed);
    for round in 0..24 {
        let did: Vec<String> = (0..1 + rng.below(3)).map(|_| edit(&mut rng, &base, round)).collect();
        let prev_layer = layer(&store, &prev);
        let prev_inodes = inodes(&store.snapshot_diff(&prev));
        let chain = build(&store, &ctx, &def);
        let id = chain.last().cloned().unwrap();
        // A fresh store: no previous snapshot, no checksum cache.
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path()).unwrap();
        let fresh_id = build(&fresh, &ctx, &def).last().cloned().unwrap();
        assert_eq!(
            comparable(shape, &store.snapshot_diff(&id)),
            comparable(shape, &fresh.snapshot_diff(&fresh_id)),
            "seed {seed} round {round}: after {did:?}"
        );
        // The previous snapshot is as it was.
        assert_eq!(layer(&store, &prev), prev_layer, "seed {seed} round {round}: previous snapshot changed");
        if id != prev {
            shared_total += inodes(&store.snapshot_diff(&id)).keys().filter(|k| prev_inodes.contains_key(k)).count();
            // A later step that overwrites a (shared) file gets its own
            // copy: neither COPY snapshot changes.
            let before = layer(&store, &id);
            let after_chain = build(&store, &ctx, &graph(shape, Some(overwrite(shape))));
            let top = after_chain.last().unwrap();
            let over = match shape {
                Shape::Scratch => "f01.txt",
                Shape::OverBase => "app/src/f01.txt",
            };
            if store.snapshot_diff(top).join(over).exists() {
                assert_eq!(fs::read_to_string(store.snapshot_diff(top).join(over)).unwrap(), "overwritten\n");
            }
            assert_eq!(layer(&store, &id), before, "seed {seed} round {round}: a later step wrote into the COPY");
            assert_eq!(layer(&store, &prev), prev_layer, "seed {seed} round {round}: a later step wrote into it");
        }
        prev = id;
    }
    assert!(shared_total > 100, "unchanged files were shared with the previous snapshot ({shared_total})");
}

#[test]
fn incremental_copy_onto_scratch_matches_a_fresh_copy() {
    for seed in [1, 7, 42] {
        random_edits_match_a_fresh_copy(Shape::Scratch, seed);
    }
}

#[test]
fn incremental_copy_with_chmod_over_a_base_matches_a_fresh_copy() {
    for seed in [3, 11] {
        random_edits_match_a_fresh_copy(Shape::OverBase, seed);
    }
}

/// Two files the previous copy wrote as one hard-link pair, now separate
/// files in the context: the new snapshot has two inodes (a fresh copy's
/// layer, with no hard-link entry), not one previous inode shared twice.
#[test]
fn a_broken_hard_link_pair_is_not_shared_twice() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("a"), "same\n").unwrap();
    fs::hard_link(ctx.join("a"), ctx.join("b")).unwrap();
    fs::write(ctx.join("c"), "other\n").unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let def = graph(Shape::Scratch, None);
    let first = build(&store, &ctx, &def).last().cloned().unwrap();
    let diff = store.snapshot_diff(&first);
    assert_eq!(fs::metadata(diff.join("a")).unwrap().ino(), fs::metadata(diff.join("b")).unwrap().ino());
    // Break the pair keeping content, mode and mtime; touch `c` so the
    // copy misses the cache.
    let mtime = fs::metadata(ctx.join("b")).unwrap().modified().unwrap();
    fs::remove_file(ctx.join("b")).unwrap();
    fs::write(ctx.join("b"), "same\n").unwrap();
    fs::File::options().write(true).open(ctx.join("b")).unwrap().set_modified(mtime).unwrap();
    fs::write(ctx.join("c"), "changed\n").unwrap();
    let second = build(&store, &ctx, &def).last().cloned().unwrap();
    let diff = store.snapshot_diff(&second);
    assert_ne!(fs::metadata(diff.join("a")).unwrap().ino(), fs::metadata(diff.join("b")).unwrap().ino());
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    let fresh_id = build(&fresh, &ctx, &def).last().cloned().unwrap();
    assert_eq!(layer(&store, &second), layer(&fresh, &fresh_id));
}

/// The xattrs of an unchanged file change (its content and mtime do not:
/// only the ctime moves), and another file changes so the copy runs: the
/// incremental copy carries the new xattrs as a fresh copy does, and a
/// file that had xattrs is never shared (the previous snapshot's inode has
/// them), also once they are removed again.
#[test]
fn xattr_changes_on_unchanged_files_reach_the_incremental_copy() {
    let t = tempfile::tempdir().unwrap();
    let ctx = t.path().join("ctx");
    fs::create_dir_all(&ctx).unwrap();
    for name in ["a", "b", "c"] {
        fs::write(ctx.join(name), format!("{name}\n")).unwrap();
    }
    if rustix::fs::lsetxattr(ctx.join("a"), "user.probe", b"1", rustix::fs::XattrFlags::empty()).is_err() {
        eprintln!("skipped: no user xattrs on this file system");
        return;
    }
    rustix::fs::lremovexattr(ctx.join("a"), "user.probe").unwrap();
    let store = Store::open(&t.path().join("store")).unwrap();
    let def = graph(Shape::Scratch, None);
    let mut prev = build(&store, &ctx, &def).last().cloned().unwrap();
    let set = |v: Option<&[u8]>| match v {
        Some(v) => rustix::fs::lsetxattr(ctx.join("a"), "user.origin", v, rustix::fs::XattrFlags::empty()).unwrap(),
        None => rustix::fs::lremovexattr(ctx.join("a"), "user.origin").unwrap(),
    };
    for (round, value) in [Some(&b"one"[..]), Some(&b"two"[..]), None, None].into_iter().enumerate() {
        if round < 3 {
            set(value);
        }
        fs::write(ctx.join("c"), format!("c {round}\n")).unwrap();
        let id = build(&store, &ctx, &def).last().cloned().unwrap();
        let fresh_dir = tempfile::tempdir().unwrap();
        let fresh = Store::open(fresh_dir.path()).unwrap();
        let fresh_id = build(&fresh, &ctx, &def).last().cloned().unwrap();
        assert_eq!(layer(&store, &id), layer(&fresh, &fresh_id), "round {round} ({value:?})");
        let (diff, prev_diff) = (store.snapshot_diff(&id), store.snapshot_diff(&prev));
        let shared =
            |n: &str| fs::metadata(diff.join(n)).unwrap().ino() == fs::metadata(prev_diff.join(n)).unwrap().ino();
        let mut got = [0u8; 16];
        let n = rustix::fs::lgetxattr(diff.join("a"), "user.origin", &mut got[..]).ok();
        assert_eq!(n.map(|n| &got[..n]), value, "round {round}: the copy's xattr");
        // `a` is written every round but the last (its previous copy had
        // xattrs until round 2's removal); `b` is always shared.
        assert_eq!(shared("a"), round == 3, "round {round}: a shared");
        assert!(shared("b"), "round {round}: b shared");
        prev = id;
    }
}
