//! Differential compatibility tests: every case directory under
//! `testdata/compat/<case>/` is built with rbuild and the resulting image
//! (its file tree and config) is compared with the golden `expected.txt`
//! stored in the case, which records what BuildKit produces.
//!
//! A case directory holds a `Dockerfile`, its context files, an optional
//! `case.json` and `expected.txt`. `case.json` keys (all optional):
//! `build_args` (object), `target` (string), `setup` (a shell script run in
//! the copied context first, for what git cannot hold: ownership, empty
//! directories, tars with special headers), `pinned` (a string saying why
//! the golden follows current BuildKit's source rather than the reference
//! builder at hand; regenerating from a reference skips the case),
//! `intentional` (the golden is rbuild's on purpose, differing from
//! BuildKit for the reason given, also listed in the README).
//! `FROM busybox` names the test registry's busybox (a `--build-context`).
//!
//! The golden lists the image's config fields (`config Field=json`) and each
//! path the Dockerfile added, changed or deleted relative to the base image
//! (`/path type=.. mode=.. uid=.. gid=.. [size=.. sha256=..] [target=..]
//! [xattr.NAME=hex]`, `/path deleted`); mtimes are not compared. A golden
//! whose first line is `error` means the build must fail.
//!
//! Modes (env): `COMPAT_REGEN=rbuild` rewrites goldens from rbuild (to review
//! with `git diff`, never to commit unreviewed); `COMPAT_REGEN=docker`
//! rewrites them from Docker/BuildKit at `DOCKER_HOST` (`docker` CLI).
//! `COMPAT_CASES=a,b` limits the run to some cases. `scripts/compat.sh`
//! wraps these.

mod util;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use util::{TestRegistry, rbuild};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/compat");

/// What a case may say in `case.json`.
#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    target: Option<String>,
    setup: Option<String>,
    pinned: Option<String>,
    intentional: Option<String>,
}

/// One tree entry, rendered as its golden line after the path.
type Tree = BTreeMap<String, String>;

/// A built image: config lines and its whole file tree.
struct Image {
    config: Vec<String>,
    tree: Tree,
}

/// The config fields compared, in golden order.
const CONFIG_FIELDS: &[&str] = &[
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "Shell",
    "Healthcheck",
    "OnBuild",
];

fn config_lines(config: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for f in CONFIG_FIELDS {
        let v = &config[*f];
        // Docker and OCI spell "unset" as absent, null, "", [] or {}.
        let empty = match v {
            serde_json::Value::Null => true,
            serde_json::Value::String(s) => s.is_empty(),
            serde_json::Value::Array(a) => a.is_empty(),
            serde_json::Value::Object(o) => o.is_empty(),
            _ => false,
        };
        if !empty {
            out.push(format!("config {f}={}", serde_json::to_string(v).unwrap()));
        }
    }
    out
}

/// Applies one layer tar (uncompressed) to `tree`, honouring whiteouts.
fn apply_layer(tree: &mut Tree, data: impl Read, whiteouts: bool) {
    let mut ar = tar::Archive::new(data);
    let mut links: Vec<(String, String)> = Vec::new();
    for e in ar.entries().expect("layer entries") {
        let mut e = e.expect("layer entry");
        let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let path = clean(&raw);
        if path == "/" {
            continue;
        }
        let (dir, base) = path.rsplit_once('/').unwrap();
        let dir = if dir.is_empty() { "/" } else { dir };
        if whiteouts && base == ".wh..wh..opq" {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            tree.retain(|k, _| !k.starts_with(&prefix));
            continue;
        }
        if whiteouts && let Some(hidden) = base.strip_prefix(".wh.") {
            let gone = format!("{}/{hidden}", dir.trim_end_matches('/'));
            let prefix = format!("{gone}/");
            tree.retain(|k, _| k != &gone && !k.starts_with(&prefix));
            continue;
        }
        let h = e.header().clone();
        let mode = h.mode().unwrap() & 0o7777;
        let (uid, gid) = (h.uid().unwrap(), h.gid().unwrap());
        let mut xattrs = String::new();
        if let Ok(Some(pax)) = e.pax_extensions() {
            let mut xs: Vec<(String, String)> = pax
                .filter_map(|x| x.ok())
                .filter_map(|x| {
                    let k = x.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_string();
                    Some((k, hex::encode(x.value_bytes())))
                })
                .collect();
            xs.sort();
            for (k, v) in xs {
                xattrs.push_str(&format!(" xattr.{k}={v}"));
            }
        }
        let common = format!("mode={mode:04o} uid={uid} gid={gid}");
        let line = match h.entry_type() {
            tar::EntryType::Directory => format!("type=dir {common}{xattrs}"),
            tar::EntryType::Symlink => {
                let t = String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned();
                format!("type=symlink {common} target={t}{xattrs}")
            }
            tar::EntryType::Link => {
                let t = clean(&String::from_utf8_lossy(&e.link_name_bytes().unwrap()));
                links.push((path.clone(), t));
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                let digest = hex::encode(Sha256::digest(&data));
                format!("type=file {common} size={} sha256={}{xattrs}", data.len(), &digest[..16])
            }
            tar::EntryType::Fifo => format!("type=fifo {common}"),
            tar::EntryType::Char | tar::EntryType::Block => format!("type=device {common}"),
            _ => continue,
        };
        // A directory entry over an existing directory keeps its content;
        // anything else replaces the path and what was below it.
        if !line.starts_with("type=dir") {
            let prefix = format!("{path}/");
            tree.retain(|k, _| !k.starts_with(&prefix));
        }
        tree.insert(path, line);
    }
    // A hard link is the same file as its target (same content and owner).
    for (path, target) in links {
        if let Some(t) = tree.get(&target).cloned() {
            tree.insert(path, t);
        }
    }
}

fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Reads an OCI layout written by rbuild (`tar=false`, uncompressed).
fn read_layout(dir: &Path) -> Image {
    let json = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&fs::read(&p).unwrap()).unwrap() };
    let blob = |d: &serde_json::Value| dir.join("blobs/sha256").join(d.as_str().unwrap().trim_start_matches("sha256:"));
    let index = json(dir.join("index.json"));
    let manifest = json(blob(&index["manifests"][0]["digest"]));
    let config = json(blob(&manifest["config"]["digest"]));
    let mut tree = Tree::new();
    for l in manifest["layers"].as_array().unwrap() {
        let f = fs::File::open(blob(&l["digest"])).unwrap();
        // Base layers keep their compression; the case's own are plain.
        match l["mediaType"].as_str().unwrap() {
            m if m.ends_with("+gzip") => apply_layer(&mut tree, flate2::read::GzDecoder::new(f), true),
            m if m.ends_with(".tar") => apply_layer(&mut tree, f, true),
            m => panic!("unexpected layer media type {m}"),
        }
    }
    Image { config: config_lines(&config["config"]), tree }
}

/// Whether the stage that is built (`target`, or the last) starts from
/// `scratch` after following stage names: such images are compared with an
/// empty base, the others with busybox.
fn built_from_scratch(dockerfile: &str, target: Option<&str>) -> bool {
    let mut stages: Vec<(String, String)> = Vec::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        if words.first().is_some_and(|w| w.eq_ignore_ascii_case("from")) && words.len() >= 2 {
            let name = if words.len() >= 4 && words[2].eq_ignore_ascii_case("as") { words[3] } else { "" };
            stages.push((name.to_lowercase(), words[1].to_lowercase()));
        }
    }
    let mut i = match target {
        Some(t) => stages.iter().position(|(n, _)| n == &t.to_lowercase()).expect("target stage"),
        None => stages.len() - 1,
    };
    loop {
        let base = &stages[i].1;
        match stages[..i].iter().position(|(n, _)| n == base) {
            Some(j) => i = j,
            None => return base == "scratch",
        }
    }
}

/// Mount points BuildKit's RUN leaves in a layer when the base lacks them
/// and rbuild does not (README, intentional difference "RUN mount points"):
/// left out of goldens on both sides.
const RUN_MOUNT_POINTS: &[&str] = &["/dev", "/proc", "/sys"];

/// The golden text of `img` relative to `base`.
fn golden(img: &Image, base: &Tree) -> String {
    let mut out = img.config.clone();
    for (p, line) in &img.tree {
        if RUN_MOUNT_POINTS.contains(&p.as_str()) && line.starts_with("type=dir ") && !base.contains_key(p) {
            continue;
        }
        if base.get(p) != Some(line) {
            out.push(format!("{p} {line}"));
        }
    }
    for p in base.keys() {
        if !img.tree.contains_key(p) {
            out.push(format!("{p} deleted"));
        }
    }
    out.join("\n") + "\n"
}

/// The case's context: a copy of its directory without the harness files,
/// with `setup` run in it.
fn context(case: &Path, cf: &CaseFile, work: &Path) -> PathBuf {
    let ctx = work.join("ctx");
    let _ = fs::remove_dir_all(&ctx);
    util::run(Command::new("cp").arg("-a").arg(case).arg(&ctx));
    for f in ["case.json", "expected.txt"] {
        let _ = fs::remove_file(ctx.join(f));
    }
    if let Some(s) = &cf.setup {
        util::run(Command::new("sh").arg("-ec").arg(s).current_dir(&ctx));
    }
    ctx
}

struct Rbuild<'a> {
    reg: &'a TestRegistry,
    store: PathBuf,
    /// Run as the unprivileged `rbuildtest` user (with a subuid range).
    rootless: bool,
}

impl Rbuild<'_> {
    /// Builds `ctx`; `Err(stderr)` when the build fails.
    fn build(&self, ctx: &Path, cf: &CaseFile, out: &Path) -> Result<Image, String> {
        let _ = fs::remove_dir_all(out);
        let mut cmd = if self.rootless {
            // The user reads the context and writes the store and output.
            util::run(Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(ctx));
            util::rbuild_as("rbuildtest", self.store.parent().unwrap())
        } else {
            rbuild()
        };
        cmd.arg("--root").arg(&self.store).args(["build", "--progress", "plain"]);
        cmd.arg("--build-context").arg(format!("busybox=docker-image://{}", self.reg.reference("busybox:latest")));
        for (k, v) in &cf.build_args {
            cmd.arg("--build-arg").arg(format!("{k}={v}"));
        }
        if let Some(t) = &cf.target {
            cmd.args(["--target", t]);
        }
        cmd.arg("-o").arg(format!("type=oci,dest={},tar=false,compression=uncompressed", out.display())).arg(ctx);
        let o = cmd.output().unwrap();
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        Ok(read_layout(out))
    }
}

/// Docker/BuildKit at `DOCKER_HOST`, for regenerating goldens.
struct Docker;

impl Docker {
    fn cmd() -> Command {
        let mut c = Command::new(std::env::var("COMPAT_DOCKER").unwrap_or_else(|_| "docker".into()));
        c.env("DOCKER_BUILDKIT", "1");
        c
    }

    fn prepare(reg: &TestRegistry) {
        let r = reg.reference("busybox:latest");
        util::run(Self::cmd().args(["pull", &r]));
        util::run(Self::cmd().args(["tag", &r, "busybox:latest"]));
    }

    fn build(ctx: &Path, cf: &CaseFile, work: &Path) -> Result<Image, String> {
        let args = |c: &mut Command| {
            for (k, v) in &cf.build_args {
                c.arg("--build-arg").arg(format!("{k}={v}"));
            }
            if let Some(t) = &cf.target {
                c.args(["--target", t]);
            }
        };
        let fs_tar = work.join("docker-fs.tar");
        let mut c = Self::cmd();
        // `--network=host`: a private dockerd has no bridge network.
        c.args(["build", "--progress", "plain", "--network=host"]);
        args(&mut c);
        c.arg("-o").arg(format!("type=tar,dest={}", fs_tar.display())).arg(ctx);
        let o = c.output().unwrap();
        if !o.status.success() {
            return Err(String::from_utf8_lossy(&o.stderr).into_owned());
        }
        let mut c = Self::cmd();
        c.args(["build", "-q", "--network=host", "-t", "rbuild-compat:case"]);
        args(&mut c);
        util::run(c.arg(ctx));
        let inspect = util::run(Self::cmd().args(["image", "inspect", "rbuild-compat:case"]));
        let v: serde_json::Value = serde_json::from_slice(&inspect).unwrap();
        let mut tree = Tree::new();
        apply_layer(&mut tree, fs::File::open(&fs_tar).unwrap(), false);
        Ok(Image { config: config_lines(&v[0]["Config"]), tree })
    }
}

fn first_diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let missing: Vec<&&str> = w.iter().filter(|l| !g.contains(l)).take(3).collect();
    let extra: Vec<&&str> = g.iter().filter(|l| !w.contains(l)).take(3).collect();
    format!("want {missing:?}, got {extra:?}")
}

#[test]
fn compat_cases_match_buildkit() {
    run_cases(false);
}

/// The same cases built by an unprivileged user: a rootless build must
/// give the same image.
#[test]
fn compat_cases_match_buildkit_rootless() {
    if !util::is_root() {
        eprintln!("not root: cannot switch to the test user; the other test already runs unprivileged");
        return;
    }
    if std::env::var("COMPAT_REGEN").is_ok() {
        return;
    }
    util::ensure_test_user();
    run_cases(true);
}

fn run_cases(rootless: bool) {
    let regen = std::env::var("COMPAT_REGEN").ok();
    let only: Option<Vec<String>> =
        std::env::var("COMPAT_CASES").ok().map(|s| s.split(',').map(str::to_string).collect());
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    // Under /tmp, which the test user can reach.
    let work = tempfile::Builder::new().prefix("rbuild-compat").tempdir_in("/tmp").unwrap();
    if rootless {
        util::run(Command::new("chown").arg("rbuildtest:rbuildtest").arg(work.path()));
    }
    let rb = Rbuild { reg: &reg, store: work.path().join("store"), rootless };
    let docker = regen.as_deref() == Some("docker");
    if docker {
        Docker::prepare(&reg);
    }

    let base_ctx = work.path().join("base");
    fs::create_dir_all(&base_ctx).unwrap();
    fs::write(base_ctx.join("Dockerfile"), "FROM busybox\n").unwrap();
    let base = if docker {
        Docker::build(&base_ctx, &CaseFile::default(), work.path()).expect("docker builds the base").tree
    } else {
        rb.build(&base_ctx, &CaseFile::default(), &work.path().join("out")).expect("rbuild builds the base").tree
    };

    let mut cases: Vec<PathBuf> =
        fs::read_dir(CASES).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("Dockerfile").exists()).collect();
    cases.sort();
    let (mut passed, mut failed) = (0, Vec::new());
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|o| !o.contains(&name)) {
            continue;
        }
        let cf: CaseFile = match fs::read(case.join("case.json")) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| panic!("{name}/case.json: {e}")),
            Err(_) => CaseFile::default(),
        };
        let ctx = context(case, &cf, work.path());
        let got = if docker {
            if let Some(why) = &cf.pinned {
                println!("skip {name}: golden pinned to current BuildKit ({why})");
                continue;
            }
            if let Some(why) = &cf.intentional {
                println!("skip {name}: intentional difference from BuildKit ({why})");
                continue;
            }
            Docker::build(&ctx, &cf, work.path())
        } else {
            rb.build(&ctx, &cf, &work.path().join("out"))
        };
        let dockerfile = fs::read_to_string(case.join("Dockerfile")).unwrap();
        let empty = Tree::new();
        let from = if built_from_scratch(&dockerfile, cf.target.as_deref()) { &empty } else { &base };
        let text = match &got {
            Ok(img) => golden(img, from),
            Err(_) => "error\n".to_string(),
        };
        if regen.is_some() {
            fs::write(case.join("expected.txt"), &text).unwrap();
            println!("wrote {name}");
            continue;
        }
        let want = fs::read_to_string(case.join("expected.txt")).unwrap_or_default();
        if want == text {
            println!("ok   {name}{}", if rootless { " (rootless)" } else { "" });
            passed += 1;
        } else {
            let why = match &got {
                Err(e) => format!("build failed: {}", e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("")),
                Ok(_) => first_diff(&want, &text),
            };
            println!("FAIL {name}{}: {why}", if rootless { " (rootless)" } else { "" });
            failed.push(name);
        }
    }
    println!("{passed} passed, {} failed", failed.len());
    assert!(regen.is_some() || passed > 0, "no compat case ran");
    assert!(failed.is_empty(), "compat cases differ from BuildKit: {failed:?}");
}
