use std::cell::RefCell;

use rbuild_solver::graph::{ExecOp, FileAction, MountKind, Op, SourceOp};

use super::*;

/// An in-memory resolver: every image has a small config; records requests.
#[derive(Default)]
struct Images {
    requests: RefCell<Vec<String>>,
}

impl ImageConfigResolver for Images {
    fn resolve_all(&self, requests: &[(String, Platform)]) -> Vec<Result<ResolvedBase, ResolveError>> {
        requests
            .iter()
            .map(|(r, p)| {
                self.requests.borrow_mut().push(r.clone());
                if r.contains("missing") {
                    return Err(ResolveError::new("manifest unknown"));
                }
                let mut config =
                    ImageConfig { architecture: p.architecture.clone(), os: p.os.clone(), ..Default::default() };
                config.config.env = vec!["PATH=/bin".into(), "BASE=1".into()];
                config.config.working_dir = "/base".into();
                if r.contains("onbuild") {
                    config.config.on_build = vec!["RUN echo triggered".into()];
                }
                Ok(ResolvedBase { reference: format!("docker.io/library/{r}@sha256:{}", "0".repeat(64)), config })
            })
            .collect()
    }
}

fn lower_text(text: &str, opts: &LowerOptions) -> Result<LoweredBuild, Diagnostic> {
    parse_and_lower(text, opts, &Images::default())
}

fn execs(b: &LoweredBuild) -> Vec<&ExecOp> {
    b.definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn unreached_stages_produce_no_vertex_and_are_not_resolved() {
    let images = Images::default();
    let text = "FROM unused-base AS unused\nRUN echo unused\n\nFROM busybox AS build\nRUN echo build\n\nFROM busybox\nCOPY --from=build /x /x\n";
    let b = parse_and_lower(text, &LowerOptions::default(), &images).unwrap();
    assert!(!images.requests.borrow().iter().any(|r| r.contains("unused")));
    assert_eq!(execs(&b).len(), 1);
    assert_eq!(execs(&b)[0].args, vec!["/bin/sh", "-c", "echo build"]);
}

#[test]
fn target_selects_stage_and_unknown_target_suggests() {
    let text = "FROM busybox AS build\nRUN a\nFROM busybox AS test\nRUN b\n";
    let opts = LowerOptions { target: Some("build".into()), ..Default::default() };
    let b = lower_text(text, &opts).unwrap();
    assert_eq!(b.target, "build");
    assert_eq!(execs(&b).len(), 1);
    let opts = LowerOptions { target: Some("biuld".into()), ..Default::default() };
    let err = lower_text(text, &opts).unwrap_err();
    assert!(err.message.contains("`biuld`"), "{err}");
    assert_eq!(err.suggestion.as_deref(), Some("did you mean `build`?"));
}

#[test]
fn global_args_feed_from_and_redeclared_args_inherit() {
    let text = "ARG IMG=busybox\nARG V=1\nFROM ${IMG}:latest\nARG V\nRUN echo $V\n";
    let opts = LowerOptions::default();
    let images = Images::default();
    let b = parse_and_lower(text, &opts, &images).unwrap();
    assert_eq!(images.requests.borrow().as_slice(), ["busybox:latest"]);
    let e = execs(&b)[0];
    assert!(e.env.contains(&"V=1".to_string()), "{:?}", e.env);
    // --build-arg overrides
    let opts = LowerOptions { build_args: [("V".to_string(), "2".to_string())].into(), ..Default::default() };
    let b = lower_text(text, &opts).unwrap();
    assert!(execs(&b)[0].env.contains(&"V=2".to_string()));
}

#[test]
fn platform_args_are_predefined() {
    let text = "FROM --platform=$BUILDPLATFORM busybox\nARG TARGETARCH\nRUN echo $TARGETARCH\n";
    let opts = LowerOptions {
        build_platform: Platform::parse("linux/amd64").unwrap(),
        target_platform: Platform::parse("linux/arm64").unwrap(),
        ..Default::default()
    };
    let b = lower_text(text, &opts).unwrap();
    assert!(execs(&b)[0].env.contains(&"TARGETARCH=arm64".to_string()));
    assert_eq!(b.platform.to_string(), "linux/amd64");
}

#[test]
fn env_workdir_user_shell_reach_config_and_exec() {
    let text = "FROM busybox\nENV A=1 B=\"two words\"\nWORKDIR app\nWORKDIR sub\nUSER nobody\nSHELL [\"/bin/bash\", \"-e\", \"-c\"]\nRUN echo $A\nCMD run\nEXPOSE 80 53/udp\nLABEL x=y\nSTOPSIGNAL SIGINT\nVOLUME /data\n";
    let b = lower_text(text, &LowerOptions::default()).unwrap();
    let c = &b.config.config;
    assert_eq!(c.working_dir, "/base/app/sub");
    assert_eq!(c.user, "nobody");
    assert!(c.env.contains(&"B=two words".to_string()));
    assert_eq!(c.cmd.as_deref(), Some(&["/bin/bash".to_string(), "-e".into(), "-c".into(), "run".into()][..]));
    assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
    assert_eq!(c.labels["x"], "y");
    assert_eq!(c.stop_signal, "SIGINT");
    assert!(c.volumes.contains_key("/data"));
    let e = execs(&b)[0];
    assert_eq!(e.args[..3], ["/bin/bash", "-e", "-c"]);
    assert_eq!(e.cwd, "/base/app/sub");
    assert_eq!(e.user, "nobody");
    let created: Vec<&str> = b.history.iter().map(|h| h.history.created_by.as_str()).collect();
    assert!(created.contains(&"RUN /bin/bash -e -c echo $A # buildkit"), "{created:?}");
    assert!(created.contains(&"EXPOSE map[53/udp:{} 80/tcp:{}]"), "{created:?}");
}

#[test]
fn copy_from_stage_link_and_context() {
    let text =
        "FROM busybox AS build\nRUN make\nFROM scratch\nCOPY --from=build /out /bin/\nCOPY --link app.conf /etc/\n";
    let b = lower_text(text, &LowerOptions { dockerignore: vec!["*.md".into()], ..Default::default() }).unwrap();
    let kinds: Vec<&str> = b.definition.vertices.iter().map(|v| v.op.kind()).collect();
    assert!(kinds.contains(&"merge"), "{kinds:?}");
    let ctx = b.definition.vertices.iter().find_map(|v| match &v.op {
        Op::Source(SourceOp::Context { exclude, .. }) => Some(exclude.clone()),
        _ => None,
    });
    assert_eq!(ctx, Some(vec!["*.md".to_string()]));
    // scratch stage gets the default PATH
    assert_eq!(b.config.env_get("PATH"), Some(DEFAULT_PATH));
}

#[test]
fn run_mounts_are_lowered() {
    let text = "FROM busybox\nRUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=tok --mount=type=tmpfs,target=/t,size=1024 --network=none true\n";
    let b = lower_text(text, &LowerOptions::default()).unwrap();
    let e = execs(&b)[0];
    assert!(matches!(e.mounts[1].kind, MountKind::Cache { ref id, .. } if id == "/root/.cache"));
    assert!(matches!(e.mounts[2].kind, MountKind::Secret { ref id, .. } if id == "tok"));
    assert_eq!(e.mounts[2].target, "/run/secrets/tok");
    assert!(matches!(e.mounts[3].kind, MountKind::Tmpfs { size: 1024 }));
    assert_eq!(e.network, rbuild_solver::graph::NetworkMode::None);
}

#[test]
fn onbuild_triggers_run_and_are_recorded() {
    let text = "FROM onbuild-base\nONBUILD RUN echo child\n";
    let b = lower_text(text, &LowerOptions::default()).unwrap();
    assert_eq!(execs(&b)[0].args, vec!["/bin/sh", "-c", "echo triggered"]);
    assert_eq!(b.config.config.on_build, vec!["RUN echo child"]);
}

#[test]
fn heredoc_copy_becomes_mkfile() {
    let text = "FROM busybox\nARG NAME=world\nCOPY <<EOF /greeting\nhello $NAME\nEOF\n";
    let b = lower_text(text, &LowerOptions::default()).unwrap();
    let data = b.definition.vertices.iter().find_map(|v| match &v.op {
        Op::File(f) => f.actions.iter().find_map(|a| match a {
            FileAction::Mkfile { data, path, .. } if path == "/greeting" => Some(data.clone()),
            _ => None,
        }),
        _ => None,
    });
    assert_eq!(data.as_deref(), Some("hello world\n"));
}

#[test]
fn errors_name_line_and_column() {
    let err = lower_text("FROM busybox\nCOPY --from=missing-image /a /b\n", &LowerOptions::default()).unwrap_err();
    assert_eq!(err.span.start_line, 2);
    assert!(err.to_string().starts_with("Dockerfile:2:"), "{err}");
    let err = lower_text("ARG X\nFROM $X\n", &LowerOptions::default()).unwrap_err();
    assert!(err.message.contains("blank"), "{err}");
}

#[test]
fn digests_are_stable_for_identical_input() {
    let text = "FROM busybox AS a\nRUN echo a\nFROM busybox\nCOPY --from=a / /\nRUN echo b\n";
    let a = lower_text(text, &LowerOptions::default()).unwrap();
    let b = lower_text(text, &LowerOptions::default()).unwrap();
    assert_eq!(a.definition, b.definition);
    let c = lower_text(&text.replace("echo b", "echo c"), &LowerOptions::default()).unwrap();
    assert_ne!(a.definition.output(), c.definition.output());
    // the unchanged stage keeps its digest
    assert_eq!(a.definition.vertices[1].digest, c.definition.vertices[1].digest);
}

#[test]
fn mount_numeric_options_may_use_variables() {
    let text =
        "FROM busybox\nARG UID=1000\nARG MODE=0750\nRUN --mount=type=cache,target=/c,uid=$UID,mode=${MODE} true\n";
    let b = lower_text(text, &LowerOptions::default()).unwrap();
    let m = &execs(&b)[0].mounts[1];
    assert_eq!((m.uid, m.mode), (Some(1000), Some(0o750)));
    let bad = "FROM busybox\nARG UID=nobody\nRUN --mount=type=cache,target=/c,uid=$UID true\n";
    let err = lower_text(bad, &LowerOptions::default()).unwrap_err();
    assert!(err.message.contains("`nobody`") && err.message.contains("$UID"), "{err}");
}

#[test]
fn build_network_is_the_default_of_runs_without_one() {
    use rbuild_solver::graph::NetworkMode;
    let text = "FROM busybox\nRUN echo a\nRUN --network=default echo b\nRUN --network=none echo c\n";
    let plain = lower_text(text, &LowerOptions::default()).unwrap();
    let nets: Vec<_> = execs(&plain).iter().map(|e| e.network).collect();
    assert_eq!(nets, [NetworkMode::Default, NetworkMode::Default, NetworkMode::None]);
    let host = lower_text(text, &LowerOptions { default_network: NetworkMode::Host, ..Default::default() }).unwrap();
    let nets: Vec<_> = execs(&host).iter().map(|e| e.network).collect();
    assert_eq!(nets, [NetworkMode::Host, NetworkMode::Host, NetworkMode::None]);
    // As in BuildKit, the mode is part of the op: different cache keys.
    assert_ne!(plain.definition.output(), host.definition.output());
}

#[test]
fn runs_needing_an_entitlement_are_refused_at_their_line() {
    let text = "FROM busybox\nRUN echo fine\nRUN --network=host echo net\n";
    let granted = |network_host, security_insecure| LowerOptions {
        entitlements: Some(Entitlements { network_host, security_insecure }),
        ..Default::default()
    };
    let e = lower_text(text, &granted(false, false)).unwrap_err().to_string();
    assert!(e.starts_with("Dockerfile:3:1: "), "{e}");
    assert!(e.contains("`network.host`") && e.contains("--allow network.host"), "{e}");
    assert!(e.contains("RUN --network=host echo net"), "{e}");
    assert!(lower_text(text, &granted(true, false)).is_ok());
    // Unchecked (graph dumps, golden tests): the solver checks again.
    assert!(lower_text(text, &LowerOptions::default()).is_ok());

    let text = "FROM busybox\n\nRUN --security=insecure echo all caps\n";
    let e = lower_text(text, &granted(true, false)).unwrap_err().to_string();
    assert!(e.starts_with("Dockerfile:3:1: ") && e.contains("--allow security.insecure"), "{e}");
    assert!(lower_text(text, &granted(false, true)).is_ok());
    // A stage the target does not reach asks for nothing.
    let text = "FROM busybox AS unused\nRUN --network=host echo x\nFROM busybox\nRUN echo y\n";
    assert!(lower_text(text, &granted(false, false)).is_ok());
}

#[test]
fn ulimits_and_shm_size_are_part_of_every_run() {
    let opts =
        LowerOptions { ulimits: vec!["nofile=10:20".parse().unwrap()], shm_size: 128 << 20, ..Default::default() };
    let text = "FROM busybox\nRUN echo a\n";
    let limited = lower_text(text, &opts).unwrap();
    let e = execs(&limited)[0];
    assert_eq!(e.ulimits.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["nofile=10:20"]);
    assert_eq!(e.shm_size, 128 << 20);
    let plain = lower_text(text, &LowerOptions::default()).unwrap();
    assert_ne!(limited.definition.output(), plain.definition.output());
}

/// Hostile Dockerfiles found by probing: each must be an error that names
/// the line (or a success), never a stack overflow or an abort. Runs on a
/// 2 MiB thread, like a tokio worker.
#[test]
fn hostile_inputs_are_errors_not_crashes() {
    let chain: String = (0..3000)
        .map(|i| format!("FROM {} AS a{i}\n", if i == 0 { "busybox".into() } else { format!("a{}", i - 1) }))
        .collect();
    let mut doubling = String::from("ARG a0=x\n");
    for i in 1..200 {
        doubling += &format!("ARG a{i}=${{a{p}}}${{a{p}}}\n", p = i - 1);
    }
    doubling += "FROM busybox\n";
    let cases: Vec<(String, Option<&str>)> = vec![
        // Dropping the history of 100,000 steps recursed once per step.
        (format!("FROM busybox\n{}", "ENV A=1\n".repeat(100_000)), None),
        (chain, Some("Dockerfile:2900:1: stages depend on each other more than 100 levels deep")),
        (format!("FROM busybox\nONBUILD {}RUN x\n", "ONBUILD ".repeat(100_000)), Some("chaining ONBUILD")),
        (doubling, Some("Dockerfile:24:1: expansion is longer than the limit of 4194304 bytes")),
        (
            format!("FROM busybox\nENV A={}x{}\n", "${a:-".repeat(20_000), "}".repeat(20_000)),
            Some("Dockerfile:2:1: substitutions nested more than 100 levels deep"),
        ),
        ("FROM busybox\nCOPY --chmod=99999 a /b\n".into(), Some("Dockerfile:2:1: invalid --chmod value `99999`")),
        ("FROM busybox\nADD --chmod=u+q a /b\n".into(), Some("Dockerfile:2:1: invalid --chmod value `u+q`")),
        (
            "FROM busybox\nCOPY --chown=99999999999999999999:1 a /b\n".into(),
            Some(
                "Dockerfile:2:1: invalid --chown value `99999999999999999999:1`: id `99999999999999999999` is out of range",
            ),
        ),
        ("FROM busybox\nADD --chown=1:4294967295 a /b\n".into(), Some("id `4294967295` is out of range")),
        ("FROM busybox\nCOPY --chown=4294967294:app a /b\n".into(), None),
        ("FROM --platform=../../etc busybox\n".into(), Some("Dockerfile:1:1: invalid platform `../../etc`")),
        ("FROM busybox\nEXPOSE 99999999\n".into(), Some("Dockerfile:2:1: invalid containerPort `99999999`")),
        // execve cannot pass a NUL byte: say so instead of "exit code 126".
        (
            "FROM busybox\nRUN echo \0 hi\0\n".into(),
            Some("Dockerfile:2:1: RUN argument `echo \\0 hi\\0` contains a NUL byte"),
        ),
        (
            "FROM busybox\nRUN [\"echo\", \"a\\u0000b\"]\n".into(),
            Some("Dockerfile:2:1: RUN argument `a\\0b` contains a NUL byte"),
        ),
        ("FROM busybox\nENV X=a\0b\nRUN true\n".into(), Some("Dockerfile:3:1: RUN environment variable `X=a\\0b`")),
        ("FROM busybox\nLABEL a=\0\nCOPY \0 /\0\n".into(), None),
    ];
    let got = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            cases
                .into_iter()
                .map(|(text, want)| (want, lower_text(&text, &LowerOptions::default()).err().map(|e| e.to_string())))
                .collect::<Vec<_>>()
        })
        .unwrap()
        .join()
        .unwrap();
    for (want, err) in got {
        match (want, err) {
            (None, None) => {}
            (Some(want), Some(err)) => assert!(err.contains(want), "want `{want}` in:\n{}", &err[..err.len().min(400)]),
            (want, err) => panic!("want {want:?}, got {:?}", err.map(|e| e.chars().take(300).collect::<String>())),
        }
    }
}

/// One 4 MiB ARG is copied into the environment of every later RUN: the
/// graph is bounded instead of growing with each RUN (2 GB for 200 RUNs).
#[test]
fn graph_size_is_bounded() {
    let mut text = String::from("FROM busybox\nARG a=xxxxxxxx\n");
    for _ in 0..19 {
        text += "ARG a=${a}${a}\n";
    }
    text += &"RUN true\n".repeat(40);
    let err = lower_text(&text, &LowerOptions::default()).unwrap_err().to_string();
    assert!(err.contains("Dockerfile:53:1: the build graph grew past 128 MiB"), "{}", &err[..err.len().min(300)]);
}

/// A `target:` context (another build's graph) is taken into this graph:
/// `FROM gen` and `COPY --from=gen` build on its result vertex, and the
/// vertices both graphs hold are there once.
#[test]
fn a_graph_context_is_taken_into_the_lowering() {
    let dep = lower_text("FROM busybox\nRUN echo dep > /dep\n", &LowerOptions::default()).unwrap();
    let dep_result = dep.definition.output().unwrap();
    let mut opts = LowerOptions::default();
    let bare = BuiltContext { definition: dep.definition.clone(), ..Default::default() };
    opts.named_contexts.insert("gen".into(), NamedContext::Graph(Arc::new(bare)));
    let b = lower_text("FROM busybox\nRUN echo user\nCOPY --from=gen /dep /dep\n", &opts).unwrap();
    assert!(dep.definition.vertices.iter().all(|v| b.definition.get(&v.digest).is_some()));
    let copy = b.definition.get(&b.definition.output().unwrap()).unwrap();
    assert!(copy.inputs.contains(&dep_result), "COPY --from=gen reads the dependency's result");
    // busybox's source vertex is shared, not duplicated.
    let sources = b.definition.vertices.iter().filter(|v| matches!(v.op, Op::Source(_))).count();
    assert_eq!(sources, 1);
    let from = lower_text("FROM gen\nRUN echo on-top\n", &opts).unwrap();
    let run = from.definition.get(&from.definition.output().unwrap()).unwrap();
    assert_eq!(run.inputs, [dep_result]);
}

/// A `target:` context brings its image config along, as BuildKit's
/// `input:` contexts do: `FROM gen` sees its ENV, WORKDIR, USER, labels and
/// entrypoint, runs its ONBUILD triggers, and continues its history; a
/// `COPY --from=gen` takes files only.
#[test]
fn a_graph_context_brings_its_image_config() {
    let dep = lower_text(
        "FROM busybox\nENV GREETING=hi\nWORKDIR /srv\nUSER 1000:1000\nLABEL from=dep\n\
         ENTRYPOINT [\"/bin/dep\"]\nONBUILD RUN echo triggered\nRUN echo dep > /dep\n",
        &LowerOptions::default(),
    )
    .unwrap();
    let mut opts = LowerOptions::default();
    opts.named_contexts.insert("gen".into(), NamedContext::Graph(Arc::new(BuiltContext::of(&dep))));
    let user = lower_text("FROM gen\nRUN echo $GREETING\n", &opts).unwrap();
    let c = &user.config.config;
    assert!(c.env.iter().any(|e| e == "GREETING=hi"), "{:?}", c.env);
    assert_eq!(c.working_dir, "/srv");
    assert_eq!(c.user, "1000:1000");
    assert_eq!(c.labels.get("from").map(String::as_str), Some("dep"));
    assert_eq!(c.entrypoint.as_deref(), Some(&["/bin/dep".to_string()][..]));
    assert!(c.on_build.is_empty(), "triggers run once, they are not inherited further");
    let runs: Vec<String> = user
        .definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e.args.join(" ")),
            _ => None,
        })
        .collect();
    assert!(runs.iter().any(|r| r.contains("echo triggered")), "{runs:?}");
    let run = user.definition.vertices.iter().find_map(|v| match &v.op {
        Op::Exec(e) if e.args.join(" ").contains("echo $GREETING") => Some(e.clone()),
        _ => None,
    });
    let run = run.expect("the user's RUN");
    assert_eq!(run.cwd, "/srv");
    assert!(run.user.starts_with("1000"), "{}", run.user);
    assert_eq!(user.history.len(), dep.history.len() + 2, "the dependency's history continues");

    let copy = lower_text("FROM scratch\nCOPY --from=gen /dep /dep\n", &opts).unwrap();
    assert!(copy.config.config.env.iter().all(|e| !e.starts_with("GREETING=")));
    assert!(copy.config.config.user.is_empty());
}

/// Issue 10, difference 1: `FROM scratch` has BuildKit's `emptyImage`
/// config, WorkingDir `/` included.
#[test]
fn diff01_scratch_config_has_working_dir_root() {
    let b = lower_text("FROM scratch\nCOPY a /a\n", &LowerOptions::default()).unwrap();
    assert_eq!(b.config.config.working_dir, "/");
    assert_eq!(b.config.env_get("PATH"), Some(DEFAULT_PATH));
}

/// Issue 10, difference 8: an absolute WORKDIR is recorded as written
/// (trailing slash kept), a relative one is joined and cleaned, and
/// `WORKDIR /` adds no layer.
#[test]
fn diff08_workdir_keeps_absolute_paths_as_written() {
    let b = lower_text("FROM busybox\nWORKDIR /tmp/\n", &LowerOptions::default()).unwrap();
    assert_eq!(b.config.config.working_dir, "/tmp/");
    let b = lower_text("FROM busybox\nWORKDIR /srv/\nWORKDIR a/../b/\n", &LowerOptions::default()).unwrap();
    assert_eq!(b.config.config.working_dir, "/srv/b");
    let mkdirs: Vec<String> = b
        .definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::File(f) => match &f.actions[0] {
                FileAction::Mkdir { path, .. } => Some(path.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(mkdirs, ["/srv", "/srv/b"]);
    let b = lower_text("FROM busybox\nWORKDIR /\n", &LowerOptions::default()).unwrap();
    assert_eq!(b.config.config.working_dir, "/");
    let last = b.history.last().unwrap();
    assert_eq!(last.history.created_by, "WORKDIR /");
    assert!(last.history.empty_layer && last.layer.is_none());
}

/// Issue 10, difference 2: COPY sources allow an empty wildcard match
/// (BuildKit's `AllowEmptyWildcard`).
#[test]
fn diff02_copy_sources_allow_empty_wildcards() {
    let b = lower_text("FROM busybox\nCOPY a.txt missing* /d/\n", &LowerOptions::default()).unwrap();
    let copies: Vec<bool> = b
        .definition
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            Op::File(f) => f.actions.iter().find_map(|a| match a {
                FileAction::Copy { allow_empty_wildcard, .. } => Some(*allow_empty_wildcard),
                _ => None,
            }),
            _ => None,
        })
        .collect();
    assert_eq!(copies, [true]);
}

/// Found by the compat cases: ONBUILD triggers of a parent *stage* run in
/// the stage built on it (BuildKit's `resolveStages`), and are not kept in
/// the child's config.
#[test]
fn onbuild_of_a_parent_stage_triggers_in_the_child() {
    let text = "FROM busybox AS parent\nONBUILD RUN echo triggered\nFROM parent\nRUN echo child\n";
    let b = lower_text(text, &LowerOptions::default()).unwrap();
    let args: Vec<&str> = execs(&b).iter().map(|e| e.args[2].as_str()).collect();
    assert_eq!(args, ["echo triggered", "echo child"]);
    assert!(b.config.config.on_build.is_empty());
    let b = lower_text(text, &LowerOptions { target: Some("parent".into()), ..Default::default() }).unwrap();
    assert_eq!(b.config.config.on_build, ["RUN echo triggered"]);
}
