//! RUN: argv from shell or exec form, heredocs, and `--mount`s.

use rbuild_solver::graph::{
    CacheSharing, Digest, ExecOp, FileAction, FileOp, Mount, MountKind, NetworkMode, Op, SecurityMode, VertexMeta,
};

use super::stage::StageState;
use super::{Lowering, PROXY_ARGS, expand, history};
use crate::diagnostic::{Diagnostic, Span};
use crate::instructions::{Command, CommandLine, MountSpec, MountType, Network, Run, Security, Sharing};

impl Lowering<'_> {
    pub(crate) fn dispatch_run(
        &mut self,
        st: &mut StageState,
        run: &Run,
        command: &Command,
        visiting: &mut Vec<usize>,
    ) -> Result<(), Diagnostic> {
        let span = command.span;
        let mut inputs: Vec<Digest> = st.state.into_iter().collect();
        let mut mounts = vec![Mount {
            input: st.state.map(|_| 0),
            selector: String::new(),
            target: "/".into(),
            readonly: false,
            kind: MountKind::Bind,
            mode: None,
            uid: None,
            gid: None,
        }];

        let shell = st.shell();
        let argv: Vec<String> = match (&run.command, run.heredocs.as_slice()) {
            (CommandLine::Exec(v), _) => v.clone(),
            (CommandLine::Shell(line), [doc]) if is_bare_heredoc(line, &doc.name) => {
                if doc.content.starts_with("#!") {
                    // A script with its own interpreter: mount it and run it.
                    let file = self.definition.add(
                        Op::File(FileOp {
                            base: None,
                            actions: vec![FileAction::Mkfile {
                                path: format!("/{}", doc.name),
                                mode: 0o755,
                                data: doc.content.clone(),
                                chown: None,
                            }],
                        }),
                        vec![],
                        VertexMeta { description: format!("heredoc {}", doc.name), ..Default::default() },
                    );
                    inputs.push(file);
                    mounts.push(Mount {
                        input: Some(inputs.len() - 1),
                        selector: String::new(),
                        target: "/dev/pipes".into(),
                        readonly: true,
                        kind: MountKind::Bind,
                        mode: None,
                        uid: None,
                        gid: None,
                    });
                    vec![format!("/dev/pipes/{}", doc.name)]
                } else {
                    let mut a = shell.clone();
                    a.push(doc.content.clone());
                    a
                }
            }
            (CommandLine::Shell(line), docs) => {
                let mut script = line.clone();
                for doc in docs {
                    script.push('\n');
                    script.push_str(&doc.content);
                    script.push_str(&doc.name);
                }
                let mut a = shell.clone();
                a.push(script);
                a
            }
        };

        let mut extra_env: Vec<String> = Vec::new();
        let mut ssh_count = 0usize;
        for spec in &run.mounts {
            let mount = self.lower_mount(st, spec, span, &mut inputs, &mut ssh_count, &mut extra_env, visiting)?;
            mounts.push(mount);
        }

        let proxies: std::collections::BTreeMap<String, String> = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| PROXY_ARGS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut env = st.run_env(&proxies);
        env.extend(extra_env);
        // `execve` takes C strings: a NUL byte cannot reach the process, and
        // failing in the sandbox would only say "exit code 126".
        let cwd = &st.config.config.working_dir;
        let user = &st.config.config.user;
        let with_nul = argv.iter().map(|a| ("argument", a)).chain(env.iter().map(|e| ("environment variable", e)));
        if let Some((what, value)) =
            with_nul.chain([("working directory", cwd), ("user", user)]).find(|(_, v)| v.contains('\0'))
        {
            let shown: String = value.chars().take(60).collect::<String>().escape_debug().to_string();
            return Err(Diagnostic::new(span, format!("RUN {what} `{shown}` contains a NUL byte")));
        }

        let exec = ExecOp {
            args: argv.clone(),
            env,
            cwd: if st.config.config.working_dir.is_empty() {
                "/".into()
            } else {
                st.config.config.working_dir.clone()
            },
            user: st.config.config.user.clone(),
            network: match run.network {
                Network::Default => self.opts.default_network,
                Network::None => NetworkMode::None,
                Network::Host => NetworkMode::Host,
            },
            security: match run.security {
                Security::Sandbox => SecurityMode::Sandbox,
                Security::Insecure => SecurityMode::Insecure,
            },
            mounts,
            ulimits: self.opts.ulimits.clone(),
            shm_size: self.opts.shm_size,
            extra_hosts: self.opts.extra_hosts.clone(),
            platform: Some(st.platform.clone()),
        };
        if let Some(granted) = &self.opts.entitlements
            && let Some(entitlement) = granted.missing_for(&exec)
        {
            let what = match entitlement {
                "network.host" => "the host's network (`--network=host`)",
                _ => "`--security=insecure`",
            };
            return Err(Diagnostic::new(
                span,
                format!("this RUN uses {what}, which needs the `{entitlement}` entitlement"),
            )
            .suggest(format!("pass `--allow {entitlement}` to rbuild build if you trust this Dockerfile")));
        }
        let shown = history::run_command_string(&argv, &[]);
        let meta = st.meta(&format!("RUN {}", first_line(&shown)));
        let d = self.definition.add(Op::Exec(exec), inputs, meta);
        st.state = Some(d);
        let args: Vec<(String, String)> = st
            .args
            .iter()
            .filter(|(k, _)| !PROXY_ARGS.contains(&k.as_str()))
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        st.commit_history(format!("RUN {} # buildkit", history::run_command_string(&argv, &args)), Some(d));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn lower_mount(
        &mut self,
        st: &StageState,
        spec: &MountSpec,
        span: Span,
        inputs: &mut Vec<Digest>,
        ssh_count: &mut usize,
        extra_env: &mut Vec<String>,
        visiting: &mut Vec<usize>,
    ) -> Result<Mount, Diagnostic> {
        let lexer = self.lexer;
        let exp = |w: &Option<String>| -> Result<Option<String>, Diagnostic> {
            w.as_ref().map(|w| expand(&lexer, w, &|k| st.lookup(k), span)).transpose()
        };
        // Numeric options written with variables are expanded, then checked.
        let resolved;
        let spec = if spec.deferred.is_empty() {
            spec
        } else {
            let mut s = spec.clone();
            for (key, raw) in &spec.deferred {
                let value = expand(&lexer, raw, &|k| st.lookup(k), span)?;
                crate::instructions::set_numeric_option(&mut s, key, &value)
                    .map_err(|e| Diagnostic::new(span, format!("{e} (from `{raw}`)")))?;
            }
            resolved = s;
            &resolved
        };
        let target = exp(&spec.target)?.map(|t| {
            let abs = st.abs_path(&t);
            super::stage::clean_path(&abs)
        });
        let source = exp(&spec.source)?.unwrap_or_default();
        let from = exp(&spec.from)?;
        let id = exp(&spec.id)?;
        let mut mount = Mount {
            input: None,
            selector: String::new(),
            target: String::new(),
            readonly: false,
            kind: MountKind::Bind,
            mode: spec.mode,
            uid: spec.uid,
            gid: spec.gid,
        };
        let push_input = |d: Option<Digest>, inputs: &mut Vec<Digest>| {
            d.map(|d| match inputs.iter().position(|x| *x == d) {
                Some(i) => i,
                None => {
                    inputs.push(d);
                    inputs.len() - 1
                }
            })
        };
        let need_target = |t: Option<String>| {
            t.ok_or_else(|| Diagnostic::new(span, "`--mount` requires a `target`").suggest("add `target=/path`"))
        };
        match spec.kind {
            MountType::Bind => {
                let input = match &from {
                    Some(f) => self.resolve_from(st, f, span, visiting)?,
                    None => Some(self.context("context")),
                };
                mount.input = push_input(input, inputs);
                mount.selector = source;
                mount.target = need_target(target)?;
                mount.readonly = spec.readonly.unwrap_or(true);
            }
            MountType::Cache => {
                let t = need_target(target)?;
                if let Some(f) = &from {
                    let input = self.resolve_from(st, f, span, visiting)?;
                    mount.input = push_input(input, inputs);
                    mount.selector = source;
                }
                mount.kind = MountKind::Cache {
                    id: id.unwrap_or_else(|| t.clone()),
                    sharing: match spec.sharing {
                        Sharing::Shared => CacheSharing::Shared,
                        Sharing::Private => CacheSharing::Private,
                        Sharing::Locked => CacheSharing::Locked,
                    },
                };
                mount.target = t;
                mount.readonly = spec.readonly.unwrap_or(false);
                mount.mode = Some(spec.mode.unwrap_or(0o755));
                mount.uid = Some(spec.uid.unwrap_or(0));
                mount.gid = Some(spec.gid.unwrap_or(0));
            }
            MountType::Tmpfs => {
                mount.target = need_target(target)?;
                mount.kind = MountKind::Tmpfs { size: spec.size.unwrap_or(0) };
            }
            MountType::Secret => {
                let id = match (&id, &target) {
                    (Some(id), _) => id.clone(),
                    (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                    (None, None) => {
                        return Err(Diagnostic::new(span, "secret mount requires an `id` or a `target`"));
                    }
                };
                let env = exp(&spec.env)?;
                mount.target = match (&target, &env) {
                    (Some(t), _) => t.clone(),
                    (None, Some(_)) => String::new(),
                    (None, None) => format!("/run/secrets/{id}"),
                };
                mount.readonly = true;
                mount.mode = Some(spec.mode.unwrap_or(0o400));
                mount.uid = Some(spec.uid.unwrap_or(0));
                mount.gid = Some(spec.gid.unwrap_or(0));
                mount.kind = MountKind::Secret { id, required: spec.required, env };
            }
            MountType::Ssh => {
                let id = id.unwrap_or_else(|| "default".into());
                let t = target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{}", *ssh_count));
                if *ssh_count == 0 {
                    extra_env.push(format!("SSH_AUTH_SOCK={t}"));
                }
                *ssh_count += 1;
                mount.target = t;
                mount.readonly = true;
                mount.mode = Some(spec.mode.unwrap_or(0o600));
                mount.uid = Some(spec.uid.unwrap_or(0));
                mount.gid = Some(spec.gid.unwrap_or(0));
                mount.kind = MountKind::Ssh { id, required: spec.required };
            }
        }
        Ok(mount)
    }
}

/// `RUN <<EOF` with nothing else on the line: the heredoc is the script.
fn is_bare_heredoc(line: &str, name: &str) -> bool {
    let l = line.trim();
    let rest = l.strip_prefix("<<-").or_else(|| l.strip_prefix("<<")).unwrap_or("");
    let rest = rest.trim_matches(|c| c == '"' || c == '\'');
    !l.is_empty() && rest == name
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}
