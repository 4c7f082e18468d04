use super::*;
use std::time::Duration;

fn parse(text: &str) -> Dockerfile {
    parse_dockerfile(text, "Dockerfile").unwrap_or_else(|e| panic!("{e}"))
}

/// The single instruction of the first stage.
fn one(line: &str) -> Instruction {
    let df = parse(&format!("FROM a\n{line}\n"));
    assert_eq!(df.stages[0].commands.len(), 1);
    df.stages[0].commands[0].instruction.clone()
}

/// Parsing `FROM a\n<line>` fails; the rendered error names `2:<col>` and
/// contains `needle`.
fn fails(line: &str, col: usize, needle: &str) {
    let err = parse_dockerfile(&format!("FROM a\n{line}\n"), "Dockerfile").unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with(&format!("Dockerfile:2:{col}: ")), "{line}: {text}");
    assert!(text.contains(needle), "{line}: {text}");
    assert!(text.contains(line.lines().next().unwrap()), "source line shown: {text}");
}

#[test]
fn stages_and_global_args() {
    let df = parse(
        "# syntax=docker/dockerfile:1\nARG V=1 W\nFROM --platform=$BUILDPLATFORM golang:$V AS Build\nRUN go build\nFROM scratch\nCOPY --from=build /out /\n",
    );
    assert_eq!(df.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(df.global_args.len(), 1);
    assert_eq!(
        df.global_args[0].instruction,
        Instruction::Arg(vec![("V".into(), Some("1".into())), ("W".into(), None)])
    );
    assert_eq!(df.stages.len(), 2);
    assert_eq!(
        df.stages[0].from,
        From { image: "golang:$V".into(), name: Some("build".into()), platform: Some("$BUILDPLATFORM".into()) }
    );
    assert_eq!(df.stages[0].span.start_line, 3);
    assert_eq!(df.stages[1].commands[0].span.start_line, 6);
    assert_eq!(df.stages[1].commands[0].original, "COPY --from=build /out /");
    assert_eq!(df.escape, '\\');
}

#[test]
fn from_errors() {
    let err = parse_dockerfile("FROM a AS 1x\n", "Dockerfile").unwrap_err().to_string();
    assert!(err.starts_with("Dockerfile:1:11: invalid name for build stage"), "{err}");
    let err = parse_dockerfile("FROM a b\n", "Dockerfile").unwrap_err().to_string();
    assert!(err.starts_with("Dockerfile:1:1: FROM requires either one or three"), "{err}");
    let err = parse_dockerfile("FROM --platfrom=x a\n", "Dockerfile").unwrap_err();
    assert_eq!(err.span.column, 6);
    assert_eq!(err.suggestion.as_deref(), Some("did you mean `--platform`?"));
    let err = parse_dockerfile("FROM a AS x\nFROM b AS X\n", "Dockerfile").unwrap_err().to_string();
    assert!(err.contains("duplicate stage name `x`"), "{err}");
}

#[test]
fn before_from_and_unknown() {
    let err = parse_dockerfile("RUN x\nFROM a\n", "Dockerfile").unwrap_err().to_string();
    assert!(err.starts_with("Dockerfile:1:1: `RUN` before the first `FROM`"), "{err}");
    let err = parse_dockerfile("FROM a\n  FROOM b\n", "Dockerfile").unwrap_err();
    assert_eq!(
        err.to_string(),
        "Dockerfile:2:3: unknown instruction `FROOM`\n 2 |   FROOM b\n   |   ^\ndid you mean `FROM`?"
    );
}

#[test]
fn run_forms_and_flags() {
    assert_eq!(
        one("RUN echo hi"),
        Instruction::Run(Run {
            command: CommandLine::Shell("echo hi".into()),
            heredocs: vec![],
            mounts: vec![],
            network: Network::Default,
            security: Security::Sandbox
        })
    );
    let Instruction::Run(run) = one(
        "run --mount=type=cache,target=/c --mount=type=secret,id=s --network=none --security=insecure [\"a\", \"b\"]",
    ) else {
        panic!()
    };
    assert_eq!(run.command, CommandLine::Exec(vec!["a".into(), "b".into()]));
    assert_eq!(run.mounts.len(), 2);
    assert_eq!(run.mounts[1].kind, MountType::Secret);
    assert_eq!((run.network, run.security), (Network::None, Security::Insecure));
    fails("RUN --network=bridge x", 5, "network mode `bridge`");
    fails("RUN --security=root x", 5, "security mode");
    fails("RUN --mount=type=cache x", 13, "requires a `target`");
    fails("RUN --mount x", 5, "missing a value");
    fails("RUN --network=none --network=host x", 20, "duplicate flag");
    fails("RUN --mnt=type=bind x", 5, "unknown flag `--mnt`");
}

#[test]
fn run_heredoc() {
    let Instruction::Run(run) = one("RUN <<-EOF bash\n\techo $x\n\tEOF") else { panic!() };
    assert_eq!(run.command, CommandLine::Shell("<<-EOF bash".into()));
    assert_eq!(run.heredocs, vec![Heredoc { name: "EOF".into(), content: "echo $x\n".into(), expand: true }]);
}

#[test]
fn copy_and_add() {
    let Instruction::Copy(c) = one(
        "COPY --from=b --chown=1:1 --chmod=755 --link --parents --exclude=*.md --exclude=x a <<\"F\" /d/\nbody $x\nF",
    ) else {
        panic!()
    };
    assert_eq!(
        c.sources,
        vec![
            CopySource::Path("a".into()),
            CopySource::Heredoc(Heredoc { name: "F".into(), content: "body $x\n".into(), expand: false })
        ]
    );
    assert_eq!(c.dest, "/d/");
    assert_eq!((c.from.as_deref(), c.chown.as_deref(), c.chmod.as_deref()), (Some("b"), Some("1:1"), Some("755")));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, vec!["*.md", "x"]);
    let Instruction::Copy(c) = one("COPY --link=false [\"a b\", \"/c\"]") else { panic!() };
    assert!(!c.link);
    assert_eq!(c.sources, vec![CopySource::Path("a b".into())]);
    let Instruction::Add(a) = one("ADD --checksum=sha256:abc --keep-git-dir --chown=u https://x/y /z") else {
        panic!()
    };
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert!(a.keep_git_dir);
    fails("COPY a", 1, "requires at least two arguments");
    fails("COPY --link=maybe a b", 6, "expecting boolean");
    fails("ADD --from=x a b", 5, "unknown flag `--from`");
    fails("COPY --checksum=x a b", 6, "unknown flag");
    fails("COPY a <<EOF\nx\nEOF", 8, "heredoc as a destination");
}

#[test]
fn env_label_arg() {
    assert_eq!(
        one("ENV A=1 B=\"x y\""),
        Instruction::Env(vec![("A".into(), "1".into()), ("B".into(), "\"x y\"".into())])
    );
    assert_eq!(one("ENV A b c"), Instruction::Env(vec![("A".into(), "b c".into())]));
    assert_eq!(one("LABEL a=b"), Instruction::Label(vec![("a".into(), "b".into())]));
    fails("ENV", 1, "ENV requires at least one argument");
    fails("ENV A", 1, "must have two arguments");
    fails("ENV =x", 1, "names can not be blank");
    fails("LABEL a=b c", 1, "can't find =");
    fails("ARG =x", 5, "ARG names can not be blank");
    fails("ARG", 1, "at least one argument");
    fails("ENV --x=1 A=b", 5, "`ENV` takes no flags");
}

#[test]
fn simple_instructions() {
    assert_eq!(one("CMD [\"a\"]"), Instruction::Cmd(CommandLine::Exec(vec!["a".into()])));
    assert_eq!(one("ENTRYPOINT a b"), Instruction::Entrypoint(CommandLine::Shell("a b".into())));
    assert_eq!(one("EXPOSE 80/tcp 443"), Instruction::Expose(vec!["80/tcp".into(), "443".into()]));
    assert_eq!(one("VOLUME [\"/a\", \"/b\"]"), Instruction::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(one("VOLUME /a /b"), Instruction::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(one("USER app:app"), Instruction::User("app:app".into()));
    assert_eq!(one("WORKDIR /src"), Instruction::Workdir("/src".into()));
    assert_eq!(one("STOPSIGNAL SIGTERM"), Instruction::Stopsignal("SIGTERM".into()));
    assert_eq!(one("SHELL [\"bash\", \"-c\"]"), Instruction::Shell(vec!["bash".into(), "-c".into()]));
    assert_eq!(one("MAINTAINER me"), Instruction::Maintainer("me".into()));
    fails("EXPOSE", 1, "at least one argument");
    fails("VOLUME [\"\"]", 1, "empty string");
    fails("USER", 1, "exactly one argument");
    fails("WORKDIR", 1, "exactly one argument");
    fails("STOPSIGNAL", 1, "exactly one argument");
    fails("SHELL bash -c", 1, "JSON form");
    fails("SHELL []", 1, "at least one argument");
    fails("MAINTAINER", 1, "exactly one argument");
    fails("CMD --x a", 5, "unknown flag");
}

#[test]
fn onbuild() {
    let Instruction::Onbuild { expression, instruction } = one("ONBUILD RUN echo hi") else { panic!() };
    assert_eq!(expression, "RUN echo hi");
    assert!(matches!(*instruction, Instruction::Run(_)));
    let Instruction::Onbuild { expression, instruction } = one("onbuild run <<EOF\necho x\nEOF") else { panic!() };
    assert_eq!(expression, "run <<EOF\necho x\nEOF");
    let Instruction::Run(run) = *instruction else { panic!() };
    assert_eq!(run.heredocs.len(), 1);
    fails("ONBUILD ONBUILD RUN x", 9, "chaining ONBUILD");
    fails("ONBUILD FROM x", 9, "isn't allowed as an ONBUILD trigger");
    fails("ONBUILD MAINTAINER x", 9, "isn't allowed");
    fails("ONBUILD COPY --bogus a b", 14, "unknown flag");
    fails("ONBUILD", 1, "at least one argument");
    fails("ONBUILD FOO x", 1, "unknown instruction `FOO`");
}

#[test]
fn healthcheck() {
    assert_eq!(one("HEALTHCHECK NONE"), Instruction::Healthcheck(Healthcheck::None));
    assert_eq!(
        one(
            "HEALTHCHECK --interval=5s --timeout=1m30s --start-period=0s --start-interval=500ms --retries=3 CMD curl -f x"
        ),
        Instruction::Healthcheck(Healthcheck::Cmd {
            test: CommandLine::Shell("curl -f x".into()),
            interval: Some(Duration::from_secs(5)),
            timeout: Some(Duration::from_secs(90)),
            start_period: Some(Duration::ZERO),
            start_interval: Some(Duration::from_millis(500)),
            retries: Some(3),
        })
    );
    let Instruction::Healthcheck(Healthcheck::Cmd { test, .. }) = one("HEALTHCHECK cmd [\"a\"]") else { panic!() };
    assert_eq!(test, CommandLine::Exec(vec!["a".into()]));
    fails("HEALTHCHECK NONE x", 1, "takes no arguments");
    fails("HEALTHCHECK CMD", 13, "missing command");
    fails("HEALTHCHECK CONNECT x", 13, "unknown type `CONNECT`");
    fails("HEALTHCHECK --interval=5 CMD x", 13, "missing unit");
    fails("HEALTHCHECK --interval=1us CMD x", 13, "cannot be less than 1ms");
    fails("HEALTHCHECK --retries=-1 CMD x", 13, "cannot be negative");
    fails("HEALTHCHECK --retries=x CMD x", 13, "invalid value");
    fails("HEALTHCHECK --foo=1 CMD x", 13, "unknown flag");
    fails("HEALTHCHECK", 1, "at least one argument");
}

#[test]
fn errors_carry_file_and_line_for_parser_errors() {
    let err = parse_dockerfile("FROM a\nRUN <<EOF\nx\n", "build/Dockerfile").unwrap_err().to_string();
    assert!(err.starts_with("build/Dockerfile:2:1: unterminated heredoc"), "{err}");
}
