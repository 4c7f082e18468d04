//! End-to-end `rbuild bake`: real builds from a bake file, pushed to a
//! loopback registry and checked with skopeo.

mod util;

use std::path::Path;
use std::process::Output;

use util::{TestRegistry, ok, rbuild, skopeo_inspect_raw};

fn bake_env(store: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    rbuild()
        .arg("--root")
        .arg(store)
        .arg("bake")
        .args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn bake(store: &Path, dir: &Path, args: &[&str]) -> Output {
    bake_env(store, dir, args, &[])
}

fn platforms_of(index: &serde_json::Value) -> Vec<String> {
    let mut p: Vec<String> = index["manifests"]
        .as_array()
        .expect("an image index")
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap())
        })
        .collect();
    p.sort();
    p
}

const BAKE: &str = r#"
variable "REG" {}
variable "VERSION" { default = "1.0" }

group "default" {
  targets = ["app", "tools"]
}

target "_multi" {
  platforms = ["linux/amd64", "linux/arm64"]
  args      = { REG = REG }
}

# Built only because `app` reads it through a `target:` context.
target "gen" {
  dockerfile = "gen.Dockerfile"
}

target "app" {
  inherits = ["_multi"]
  contexts = { gen = "target:gen" }
  tags     = ["${REG}/app:${VERSION}"]
}

target "tools" {
  inherits = ["_multi"]
  name     = "tool-${t}"
  matrix   = { t = ["a", "b"] }
  args     = { TOOL = t }
  dockerfile = "tool.Dockerfile"
  tags     = ["${REG}/tool-${t}:${VERSION}"]
}
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("docker-bake.hcl"), BAKE).unwrap();
    std::fs::write(p.join("gen.txt"), "generated\n").unwrap();
    std::fs::write(p.join("gen.Dockerfile"), "FROM scratch\nCOPY gen.txt /gen.txt\n").unwrap();
    std::fs::write(
        p.join("Dockerfile"),
        "ARG REG\nFROM ${REG}/busybox:latest\nCOPY --from=gen /gen.txt /app/gen.txt\n",
    )
    .unwrap();
    std::fs::write(p.join("tool.Dockerfile"), "ARG REG\nFROM ${REG}/busybox:latest\nARG TOOL\nLABEL tool=${TOOL}\n")
        .unwrap();
    dir
}

#[test]
fn bake_group_with_matrix_and_target_context_pushes_multi_platform_indexes() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:latest");
    let dir = project();
    let store = tempfile::tempdir().unwrap();
    let meta = dir.path().join("meta.json");

    // --print resolves the definition without building.
    let env = [("REG", reg.addr.as_str())];
    let out = ok(bake_env(store.path(), dir.path(), &["--print"], &env));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["group"]["default"]["targets"], serde_json::json!(["app", "tools"]));
    assert_eq!(printed["target"]["gen"]["output"], serde_json::json!([{"type": "cacheonly"}]));
    assert!(printed["target"]["tool-b"]["tags"][0].as_str().unwrap().ends_with("/tool-b:1.0"));

    ok(bake_env(
        store.path(),
        dir.path(),
        &["--push", "--progress", "plain", "--metadata-file", meta.to_str().unwrap()],
        &env,
    ));

    for name in ["app:1.0", "tool-a:1.0", "tool-b:1.0"] {
        let index = skopeo_inspect_raw(&reg.reference(name));
        assert_eq!(platforms_of(&index), ["linux/amd64", "linux/arm64"], "{name}: {index}");
    }
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    let mut keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["app", "tool-a", "tool-b"], "one metadata entry per built target: {m}");
    assert!(m["app"]["containerimage.digest"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn bake_errors_point_into_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("docker-bake.hcl"), "target \"default\" {\n  dockerfil = \"x\"\n}\n").unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = bake(store.path(), dir.path(), &["--print"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("docker-bake.hcl:2:3:"), "{err}");
    assert!(err.contains("did you mean `dockerfile`?"), "{err}");
    assert!(err.contains(" 2 |   dockerfil = \"x\"\n   |   ^"), "{err}");

    let out = bake(store.path(), dir.path(), &["--print", "-f", "missing.hcl"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.hcl"));
}

#[test]
fn bake_reads_stdin_sets_overrides_and_lists() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut child = rbuild()
        .arg("--root")
        .arg(store.path())
        .args(["bake", "-f", "-", "--print", "--set", "*.args.A=1", "--set", "web.tags+=x:2", "web"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(b"target \"web\" {\n  tags = [\"x:1\"]\n}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["target"]["web"]["tags"], serde_json::json!(["x:1", "x:2"]));
    assert_eq!(printed["target"]["web"]["args"]["A"], "1");

    std::fs::write(
        dir.path().join("docker-bake.hcl"),
        "variable \"V\" {\n  default = \"x\"\n  description = \"the v\"\n}\ntarget \"t\" {\n  description = \"a target\"\n}\n",
    )
    .unwrap();
    let out = ok(bake(store.path(), dir.path(), &["--list", "targets"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("t") && text.contains("a target"), "{text}");
    let out = ok(bake(store.path(), dir.path(), &["--list", "variables"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("V") && text.contains("the v"), "{text}");
}

#[test]
fn target_context_feeds_one_target_into_another() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("gen.txt"), "generated\n").unwrap();
    std::fs::write(p.join("gen.Dockerfile"), "FROM scratch\nCOPY gen.txt /out/gen.txt\n").unwrap();
    std::fs::write(p.join("Dockerfile"), "FROM scratch\nCOPY --from=gen /out/gen.txt /app/from-gen.txt\n").unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
target "gen" {
  dockerfile = "gen.Dockerfile"
}
target "default" {
  contexts = { gen = "target:gen" }
  output   = ["type=local,dest=out"]
}
"#,
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    ok(bake(store.path(), p, &["--progress", "plain"]));
    assert_eq!(std::fs::read_to_string(p.join("out/app/from-gen.txt")).unwrap(), "generated\n");
    // The linked target was only built for the context: no output of its own.
    assert!(!p.join("out/out").exists());
}

#[test]
fn writing_outside_the_working_directory_needs_an_entitlement() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /x\n").unwrap();
    // A bake file from someone else wants to write next to the checkout.
    std::fs::write(
        work.join("docker-bake.hcl"),
        "target \"default\" {\n  output = [\"type=local,dest=../planted\"]\n}\n",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = bake(store.path(), &work, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("additional privileges requested"), "{err}");
    assert!(err.contains("--allow=fs.write="), "{err}");
    assert!(!root.path().join("planted").exists(), "nothing may be written before the grant");

    ok(bake(store.path(), &work, &["--allow", "fs.write=../planted"]));
    assert!(root.path().join("planted/x").is_file());
}

/// Two targets (different Dockerfiles, different context directories) share
/// a base stage whose RUN appends to a cache mount: all targets go to one
/// solve, so the RUN executes once — one `started` event, one line in the
/// mount — even with `--no-cache`, where only sharing the vertex can keep it
/// to one execution (running the targets one after another ran it twice).
#[test]
fn bake_shared_stage_runs_once() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let base = format!(
        "FROM {}/busybox:latest AS base\n\
         RUN --mount=type=cache,id=shared-runs,target=/cache sh -c 'echo ran >> /cache/runs && wc -l < /cache/runs > /built'\n",
        reg.addr
    );
    for name in ["one", "two"] {
        std::fs::create_dir_all(p.join(name)).unwrap();
        std::fs::write(p.join(name).join("mine"), name).unwrap();
        std::fs::write(p.join(name).join("Dockerfile"), format!("{base}FROM base\nCOPY mine /mine\n")).unwrap();
    }
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
group "default" { targets = ["one", "two"] }
target "one" {
  context = "one"
  output  = ["type=local,dest=out-one"]
}
target "two" {
  context = "two"
  output  = ["type=local,dest=out-two"]
}
"#,
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = ok(bake(store.path(), p, &["--progress", "rawjson", "--no-cache", "--metadata-file", "meta.json"]));
    let err = String::from_utf8_lossy(&out.stderr);
    let started =
        util::progress::ran(&err).iter().filter(|name| name.contains("RUN") && name.contains("echo ran")).count();
    assert_eq!(started, 1, "the shared RUN started {started} times:\n{err}");
    let counters = util::find_files(&store.path().join("mounts"), "runs");
    assert_eq!(counters.len(), 1, "{counters:?}");
    assert_eq!(std::fs::read_to_string(&counters[0]).unwrap(), "ran\n", "the RUN appended more than once");
    for name in ["one", "two"] {
        let out = p.join(format!("out-{name}"));
        assert_eq!(std::fs::read_to_string(out.join("built")).unwrap().trim(), "1", "{name}");
        // Each target still got its own context.
        assert_eq!(std::fs::read_to_string(out.join("mine")).unwrap(), name);
    }
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(p.join("meta.json")).unwrap()).unwrap();
    let keys: Vec<&String> = meta.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["one", "two"], "{meta}");
}

/// A `target:` dependency is part of the same solve as its user: a stage
/// both build on runs once under `--no-cache` (built in two solves, the
/// dependency first, it ran twice), and the user reads the dependency's
/// result as written by it.
#[test]
fn target_context_is_solved_with_its_user() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let base = format!(
        "FROM {}/busybox:latest AS base\n\
         RUN --mount=type=cache,id=link-runs,target=/cache sh -c 'echo ran >> /cache/runs && wc -l < /cache/runs > /built'\n",
        reg.addr
    );
    std::fs::write(p.join("gen.Dockerfile"), format!("{base}FROM base\nRUN echo generated > /gen.txt\n")).unwrap();
    std::fs::write(p.join("Dockerfile"), format!("{base}FROM base\nCOPY --from=gen /gen.txt /app/gen.txt\n")).unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
target "gen" {
  dockerfile = "gen.Dockerfile"
}
target "default" {
  contexts = { gen = "target:gen" }
  output   = ["type=local,dest=out"]
}
"#,
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = ok(bake(store.path(), p, &["--progress", "rawjson", "--no-cache"]));
    let err = String::from_utf8_lossy(&out.stderr);
    let started = util::progress::ran(&err).iter().filter(|name| name.contains("echo ran")).count();
    assert_eq!(started, 1, "the shared RUN started {started} times:\n{err}");
    let counters = util::find_files(&store.path().join("mounts"), "runs");
    assert_eq!(std::fs::read_to_string(&counters[0]).unwrap(), "ran\n");
    assert_eq!(std::fs::read_to_string(p.join("out/app/gen.txt")).unwrap(), "generated\n");
    assert_eq!(std::fs::read_to_string(p.join("out/built")).unwrap().trim(), "1");
}

/// The scale-out recipe's mechanics: one bake file, its targets spread over
/// two processes on two empty stores (two CI runners), each pushing its
/// targets' cache to the shared registry and reading everyone's; a third
/// process on a third empty store then builds every target from that cache
/// without executing a single RUN.
#[test]
fn bake_targets_split_over_runners_share_the_registry_cache() {
    split_over_runners(false);
}

/// The same recipe run by the unprivileged `rbuildtest` user (as CI
/// runners run it): rootless stores, the registry cache and its cache
/// records work the same without root.
#[test]
fn bake_targets_split_over_runners_as_an_unprivileged_user() {
    if !util::is_root() {
        eprintln!("not root: the test user cannot be created here; the other variant already runs unprivileged");
        return;
    }
    util::ensure_test_user();
    split_over_runners(true);
}

fn split_over_runners(as_test_user: bool) {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    // Under /tmp, handed to the test user when it runs the builds.
    let dir = tempfile::Builder::new().prefix("rbuild-scale-out").tempdir_in("/tmp").unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("Dockerfile"),
        "ARG REG\nFROM ${REG}/busybox:latest AS base\n\
         RUN echo base-work > /base\n\
         FROM base\nARG N\n\
         RUN echo \"target $N\" > /mine && cat /base >> /mine\n",
    )
    .unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
variable "REG" {}
group "default" { targets = ["all"] }
target "all" {
  name       = "t${n}"
  matrix     = { n = ["1", "2", "3", "4"] }
  args       = { REG = REG, N = n }
  cache-to   = ["type=registry,ref=${REG}/cache:t${n},mode=max"]
  cache-from = [for c in ["1", "2", "3", "4"] : "type=registry,ref=${REG}/cache:t${c}"]
  output     = ["type=cacheonly"]
}
"#,
    )
    .unwrap();
    let env = [("REG", reg.addr.as_str())];
    let store_dir = |name: &str| p.join(name);
    if as_test_user {
        util::run(std::process::Command::new("chown").args(["-R", "rbuildtest:rbuildtest"]).arg(p));
        util::run(std::process::Command::new("chmod").arg("755").arg(p));
    }
    let bake_env = |store: &Path, dir: &Path, args: &[&str], env: &[(&str, &str)]| -> Output {
        if !as_test_user {
            return bake_env(store, dir, args, env);
        }
        std::process::Command::new("runuser")
            .args(["-u", "rbuildtest", "--"])
            .arg(rbuild().get_program())
            .arg("--root")
            .arg(store)
            .arg("bake")
            .args(args)
            .current_dir(dir)
            .env("HOME", p)
            .env("SOURCE_DATE_EPOCH", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let runs = |out: &Output| -> Vec<String> {
        util::progress::ran(&String::from_utf8_lossy(&out.stderr)).into_iter().filter(|n| n.contains("RUN ")).collect()
    };

    let store_a = store_dir("store-a");
    let out = ok(bake_env(&store_a, p, &["--progress", "rawjson", "t1", "t2"], &env));
    // The shared base RUN once, plus one RUN per target.
    assert_eq!(runs(&out).len(), 3, "{:?}", runs(&out));

    if as_test_user {
        use std::os::unix::fs::MetadataExt as _;
        let uid = String::from_utf8(util::run(std::process::Command::new("id").args(["-u", "rbuildtest"]))).unwrap();
        assert_eq!(std::fs::metadata(&store_a).unwrap().uid().to_string(), uid.trim(), "the store is the test user's");
    }
    let store_b = store_dir("store-b");
    let out = ok(bake_env(&store_b, p, &["--progress", "rawjson", "t3", "t4"], &env));
    let ran = runs(&out);
    // The base came from runner A's cache; only the two new targets' RUNs ran.
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert!(ran.iter().all(|r| r.contains("target $N")), "{ran:?}");

    let store_c = store_dir("store-c");
    let out = ok(bake_env(&store_c, p, &["--progress", "rawjson"], &env));
    assert_eq!(runs(&out), Vec::<String>::new(), "a RUN executed despite the shared cache");
    let cached = util::progress::vertices(&String::from_utf8_lossy(&out.stderr)).iter().filter(|v| v.cached).count();
    assert!(cached > 0, "no step reported as cached:\n{}", String::from_utf8_lossy(&out.stderr));

    // The control: the same bake on an empty store without the cache runs
    // every RUN (the shared one once).
    let store_d = store_dir("store-d");
    let out = ok(bake_env(&store_d, p, &["--progress", "rawjson", "--set", "*.cache-from="], &env));
    assert_eq!(runs(&out).len(), 5, "{:?}", runs(&out));
}

/// `annotations` land where buildx puts them: the manifests (all, or the
/// one platform named), each manifest's descriptor in the index, the
/// index, and the index's descriptor in an OCI layout's `index.json`;
/// read back from the registry and from the layout.
#[test]
fn bake_annotations_reach_manifests_index_and_descriptors() {
    let reg = TestRegistry::start();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("a.txt"), "a\n").unwrap();
    std::fs::write(p.join("Dockerfile"), "FROM scratch\nCOPY a.txt /a.txt\n").unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
variable "REG" {}
target "default" {
  platforms   = ["linux/amd64", "linux/arm64"]
  tags        = ["${REG}/ann:1"]
  annotations = [
    "org.opencontainers.image.title=all",
    "manifest[linux/arm64]:org.example.arch=arm",
    "index,manifest-descriptor:org.opencontainers.image.description=d",
    "index-descriptor:org.example.top=1",
  ]
  output = ["type=registry", "type=oci,dest=layout,tar=false"]
}
"#,
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    let env = [("REG", reg.addr.as_str())];
    let out = bake_env(store.path(), p, &["--progress", "plain"], &env);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out);
    assert!(!err.contains("not applied"), "{err}");

    let index = skopeo_inspect_raw(&reg.reference("ann:1"));
    assert_eq!(index["annotations"]["org.opencontainers.image.description"], "d", "{index}");
    for m in index["manifests"].as_array().unwrap() {
        assert_eq!(m["annotations"]["org.opencontainers.image.description"], "d", "{index}");
        let arch = m["platform"]["architecture"].as_str().unwrap();
        let manifest = skopeo_inspect_raw(&format!("{}@{}", reg.reference("ann"), m["digest"].as_str().unwrap()));
        assert_eq!(manifest["annotations"]["org.opencontainers.image.title"], "all", "{manifest}");
        let want = if arch == "arm64" { serde_json::json!("arm") } else { serde_json::Value::Null };
        assert_eq!(manifest["annotations"]["org.example.arch"], want, "{arch}: {manifest}");
        assert!(manifest["annotations"].get("org.opencontainers.image.description").is_none(), "{manifest}");
    }
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.join("layout/index.json")).unwrap()).unwrap();
    let top = &layout["manifests"][0];
    assert_eq!(top["annotations"]["org.example.top"], "1", "{layout}");
    // The layout holds the same index the registry got.
    let pushed_digest = skopeo_inspect_raw(&reg.reference("ann:1"));
    let layout_index = std::fs::read(
        p.join("layout/blobs/sha256").join(top["digest"].as_str().unwrap().trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&layout_index).unwrap(), pushed_digest);
}

/// Annotations that cannot be written are refused before anything is
/// exported, as BuildKit refuses them: a platform the build does not make,
/// index annotations on a single-platform image, an unknown type, and a
/// platform component that tries to escape (`..`).
#[test]
fn bake_refuses_annotations_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("Dockerfile"), "FROM scratch\nCOPY Dockerfile /d\n").unwrap();
    for (ann, says) in [
        ("manifest[linux/s390x]:k=v", "no platform linux/s390x"),
        ("index:k=v", "single platform"),
        ("config:k=v", "unknown type `config`"),
        ("manifest[linux/../x]:k=v", "invalid platform"),
        ("novalue", "expected key=value"),
    ] {
        std::fs::write(
            p.join("docker-bake.hcl"),
            format!(
                "target \"default\" {{\n  platforms = [\"linux/amd64\"]\n  annotations = [\"{ann}\"]\n  output = [\"type=oci,dest=o.tar\"]\n}}\n"
            ),
        )
        .unwrap();
        let store = tempfile::tempdir().unwrap();
        let out = bake(store.path(), p, &["--progress", "plain"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{ann}: accepted");
        assert!(err.contains(says), "{ann}: {err}");
        assert!(!p.join("o.tar").exists(), "{ann}: exported anyway");
    }
}

/// `FROM` a `target:` context starts from the dependency's image config,
/// as buildx/BuildKit pass the dependency's result with its config: the
/// dependent's RUN sees its ENV and WORKDIR, and the dependent's image
/// keeps its ENV, WORKDIR, USER and labels.
#[test]
fn target_context_passes_the_dependency_image_config() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("base.Dockerfile"),
        format!("FROM {}/busybox:latest\nENV GREETING=hi\nWORKDIR /srv\nLABEL from=base\n", reg.addr),
    )
    .unwrap();
    std::fs::write(p.join("Dockerfile"), "FROM base\nRUN echo \"$GREETING $(pwd)\" > /srv/out.txt\nUSER 1000\n")
        .unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
target "base" {
  dockerfile = "base.Dockerfile"
}
target "default" {
  contexts = { base = "target:base" }
  output   = ["type=local,dest=out", "type=oci,dest=layout,tar=false"]
}
"#,
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    ok(bake(store.path(), p, &["--progress", "plain"]));
    assert_eq!(std::fs::read_to_string(p.join("out/srv/out.txt")).unwrap(), "hi /srv\n");
    let blob = |d: &str| -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(p.join("layout/blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap(),
        )
        .unwrap()
    };
    let top: serde_json::Value = serde_json::from_slice(&std::fs::read(p.join("layout/index.json")).unwrap()).unwrap();
    let manifest = blob(top["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    let c = &config["config"];
    assert!(c["Env"].as_array().unwrap().iter().any(|e| e == "GREETING=hi"), "{config}");
    assert_eq!(c["WorkingDir"], "/srv", "{config}");
    assert_eq!(c["User"], "1000", "{config}");
    assert_eq!(c["Labels"]["from"], "base", "{config}");
    // One history entry per layer: busybox's, then the RUN's.
    let layers = manifest["layers"].as_array().unwrap().len();
    let with_layers = config["history"].as_array().unwrap().iter().filter(|h| h["empty_layer"] != true).count();
    assert_eq!(with_layers, layers, "{config}");
}

/// `extra-hosts`, `shm-size` and `ulimits` from a bake file reach RUN:
/// the hosts file has BuildKit's localhost lines then the extra entries,
/// `/dev/shm` has the size, and the soft `nofile` limit is the one given.
/// A name that would add lines to the hosts file, a non-address and
/// `host-gateway` are refused before anything runs, and so are
/// `resources` (not applied by rbuild).
#[test]
fn bake_extra_hosts_shm_size_and_ulimits_reach_run() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\n\
             RUN cat /etc/hosts > /hosts && df -k /dev/shm | tail -1 | awk '{{print $2}}' > /shm && ulimit -n > /nofile\n",
            reg.addr
        ),
    )
    .unwrap();
    let bake_file = |extra: &str| {
        format!(
            "target \"default\" {{\n  extra-hosts = {{ {extra} }}\n  shm-size = \"8m\"\n  ulimits = [\"nofile=1024:2048\"]\n  output = [\"type=local,dest=out\"]\n}}\n"
        )
    };
    std::fs::write(p.join("docker-bake.hcl"), bake_file(r#"db = "10.1.2.3", "v6.example" = "fe80::1,[::2]""#)).unwrap();
    let store = tempfile::tempdir().unwrap();
    let out = bake(store.path(), p, &["--progress", "plain"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    ok(out);
    assert!(!err.contains("not applied"), "{err}");
    assert_eq!(
        std::fs::read_to_string(p.join("out/hosts")).unwrap(),
        "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n10.1.2.3\tdb\nfe80::1\tv6.example\n::2\tv6.example\n"
    );
    assert_eq!(std::fs::read_to_string(p.join("out/shm")).unwrap().trim(), "8192");
    assert_eq!(std::fs::read_to_string(p.join("out/nofile")).unwrap().trim(), "1024");

    for (extra, says) in [
        (r#""a\n6.6.6.6 evil" = "1.2.3.4""#, "letters, digits"),
        (r#"a = "not-an-ip""#, "is not an IP address"),
        (r#"a = "host-gateway""#, "`host-gateway` is not supported"),
    ] {
        std::fs::write(p.join("docker-bake.hcl"), bake_file(extra)).unwrap();
        let out = bake(store.path(), p, &["--progress", "plain"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra}: accepted");
        assert!(err.contains(says), "{extra}: {err}");
    }
    std::fs::write(
        p.join("docker-bake.hcl"),
        "target \"default\" {\n  resources = { memory = \"1g\" }\n  output = [\"type=local,dest=out2\"]\n}\n",
    )
    .unwrap();
    let out = bake(store.path(), p, &["--progress", "plain"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`resources`"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!p.join("out2").exists());
}

/// `attest = ["type=provenance,mode=max"]`: the pushed index lists, after
/// the image, an attestation manifest for `unknown/unknown` pointing at the
/// image's manifest (BuildKit's storage layout), whose in-toto layer is SLSA
/// provenance v1 naming the image as subject, the base image as resolved
/// dependency with its digest, the build args and the secret's id; the
/// secret's value appears in no blob written.
#[test]
fn bake_provenance_attestation_is_attached_as_buildkit_does() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("Dockerfile"),
        format!(
            "FROM {}/busybox:latest\nARG VERSION\nRUN --mount=type=secret,id=tok,env=TOK test -n \"$TOK\" && echo $VERSION > /v\n",
            reg.addr
        ),
    )
    .unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
variable "REG" {}
target "default" {
  tags   = ["${REG}/prov:1"]
  args   = { VERSION = "1.2" }
  secret = ["id=tok,env=PROV_SECRET"]
  attest = ["type=provenance,mode=max", "type=sbom,disabled=true"]
  output = ["type=registry", "type=oci,dest=layout,tar=false"]
}
"#,
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    const SECRET: &str = "s3cr3t-value-never-in-provenance";
    let env = [("REG", reg.addr.as_str()), ("PROV_SECRET", SECRET)];
    ok(bake_env(store.path(), p, &["--progress", "plain"], &env));

    let index = skopeo_inspect_raw(&reg.reference("prov:1"));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    let (image, att) = (&entries[0], &entries[1]);
    assert_eq!(image["platform"]["architecture"], "amd64", "{index}");
    assert_eq!(att["platform"], serde_json::json!({"architecture": "unknown", "os": "unknown"}), "{index}");
    assert_eq!(att["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(att["annotations"]["vnd.docker.reference.digest"], image["digest"]);
    let att_manifest = skopeo_inspect_raw(&format!("{}@{}", reg.reference("prov"), att["digest"].as_str().unwrap()));
    let layer = &att_manifest["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.in-toto+json", "{att_manifest}");
    assert_eq!(layer["annotations"]["in-toto.io/predicate-type"], "https://slsa.dev/provenance/v1");

    let blobs = p.join("layout/blobs/sha256");
    let blob = |d: &str| std::fs::read(blobs.join(d.trim_start_matches("sha256:"))).unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&blob(layer["digest"].as_str().unwrap())).unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let image_hex = image["digest"].as_str().unwrap().trim_start_matches("sha256:");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], image_hex, "{statement}");
    assert!(statement["subject"][0]["name"].as_str().unwrap().starts_with("pkg:docker/"), "{statement}");
    let def = &statement["predicate"]["buildDefinition"];
    let dep = &def["resolvedDependencies"][0];
    assert!(dep["uri"].as_str().unwrap().contains("/busybox@latest?platform=linux%2Famd64"), "{dep}");
    let busybox = skopeo_inspect_raw(&reg.reference("busybox:latest"));
    let busybox_digest = {
        use sha2::Digest as _;
        let raw = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}", reg.reference("busybox:latest")))
            .output()
            .unwrap()
            .stdout;
        hex::encode(sha2::Sha256::digest(&raw))
    };
    assert!(busybox.is_object());
    assert_eq!(dep["digest"]["sha256"], busybox_digest, "the base image's manifest digest: {dep}");
    let request = &def["externalParameters"]["request"];
    assert_eq!(request["args"]["build-arg:VERSION"], "1.2", "{request}");
    assert_eq!(request["secrets"], serde_json::json!([{"id": "tok"}]), "{request}");

    // The secret's value is in no blob (the statement, configs and manifests
    // are plain JSON).
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the secret leaked into a blob");
    }

    // An SBOM cannot be made honestly here: refused, not silently skipped.
    std::fs::write(p.join("docker-bake.hcl"), "target \"default\" {\n  attest = [\"type=sbom\"]\n}\n").unwrap();
    let out = bake(store.path(), p, &["--progress", "plain"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`type=sbom` attestations are not supported"), "{err}");
}

/// Two platforms with provenance: one attestation manifest per platform,
/// each after the images and pointing at its own platform's manifest, and
/// each statement naming that platform in its subject and dependencies.
#[test]
fn bake_provenance_per_platform() {
    let reg = TestRegistry::start();
    reg.push_busybox_multiarch("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("Dockerfile"), format!("FROM {}/busybox:latest\nCOPY Dockerfile /d\n", reg.addr)).unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        r#"
variable "REG" {}
target "default" {
  platforms = ["linux/amd64", "linux/arm64"]
  tags      = ["${REG}/multi-prov:1"]
  attest    = ["type=provenance,mode=min"]
  output    = ["type=registry", "type=oci,dest=layout,tar=false"]
}
"#,
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    ok(bake_env(store.path(), p, &["--progress", "plain"], &[("REG", reg.addr.as_str())]));
    let index = skopeo_inspect_raw(&reg.reference("multi-prov:1"));
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 4, "{index}");
    let blobs = p.join("layout/blobs/sha256");
    for (image, att) in entries[..2].iter().zip(&entries[2..]) {
        assert_eq!(att["annotations"]["vnd.docker.reference.digest"], image["digest"], "{index}");
        assert_eq!(att["platform"]["os"], "unknown", "{index}");
        let arch = image["platform"]["architecture"].as_str().unwrap();
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blobs.join(att["digest"].as_str().unwrap().trim_start_matches("sha256:"))).unwrap(),
        )
        .unwrap();
        let statement = std::fs::read_to_string(
            blobs.join(m["layers"][0]["digest"].as_str().unwrap().trim_start_matches("sha256:")),
        )
        .unwrap();
        let s: serde_json::Value = serde_json::from_str(&statement).unwrap();
        assert!(s["subject"][0]["name"].as_str().unwrap().ends_with(&format!("platform=linux%2F{arch}")), "{s}");
        let dep = &s["predicate"]["buildDefinition"]["resolvedDependencies"][0]["uri"];
        assert!(dep.as_str().unwrap().ends_with(&format!("platform=linux%2F{arch}")), "{dep}");
    }
}

/// A `type=local` output with provenance gets `provenance.json` beside
/// the files, as BuildKit's local exporter writes it: the statement's
/// subjects are the exported regular files with their sha256.
#[test]
fn local_output_gets_provenance_json() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(p.join("a.txt"), "a\n").unwrap();
    std::fs::write(p.join("Dockerfile"), "FROM scratch\nCOPY a.txt /sub/a.txt\n").unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        "target \"default\" {\n  attest = [\"type=provenance,mode=min\"]\n  output = [\"type=local,dest=out\"]\n}\n",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    ok(bake(store.path(), p, &["--progress", "plain"]));
    let path = p.join("out/provenance.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
    let a_hex = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(b"a\n"))
    };
    assert_eq!(s["subject"], serde_json::json!([{"name": "sub/a.txt", "digest": {"sha256": a_hex}}]), "{s}");
    assert_eq!(std::fs::read_to_string(p.join("out/sub/a.txt")).unwrap(), "a\n");
}

/// A build result holding a `provenance.json` symlink (pointing out of the
/// output directory) does not make rbuild write the statement through it:
/// the link is replaced by a regular file and its target is untouched.
#[test]
fn provenance_json_is_never_written_through_a_planted_symlink() {
    let reg = TestRegistry::start();
    reg.push_busybox("busybox:latest");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let victim = p.join("victim.txt");
    std::fs::write(&victim, "original\n").unwrap();
    std::fs::write(
        p.join("Dockerfile"),
        format!("FROM {}/busybox:latest\nRUN ln -s {} /provenance.json\n", reg.addr, victim.display()),
    )
    .unwrap();
    std::fs::write(
        p.join("docker-bake.hcl"),
        "target \"default\" {\n  attest = [\"type=provenance\"]\n  output = [\"type=local,dest=out\"]\n}\n",
    )
    .unwrap();
    let store = tempfile::tempdir().unwrap();
    ok(bake(store.path(), p, &["--progress", "plain"]));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original\n");
    let md = std::fs::symlink_metadata(p.join("out/provenance.json")).unwrap();
    assert!(md.file_type().is_file(), "provenance.json must be a regular file");
    assert!(std::fs::read_to_string(p.join("out/provenance.json")).unwrap().contains("slsa.dev/provenance/v1"));
}
