//! COPY and ADD: sources from the context, a stage, an image, a named
//! context, a URL or a git repository; heredoc files; `--link` as a merge.

use rbuild_solver::graph::{Chown, Digest, FileAction, FileOp, MergeOp, Op, SourceOp, VertexMeta};

use super::stage::StageState;
use super::{Lowering, NamedContext, expand, history};
use crate::diagnostic::{Diagnostic, Span};
use crate::instructions::{Add, Command, Copy, CopySource, Heredoc};

/// What one COPY/ADD looks like after expansion, before it becomes a vertex.
struct CopyPlan {
    sources: Vec<PlannedSource>,
    dest: String,
    chown: Option<Chown>,
    chmod: Option<String>,
    link: bool,
    parents: bool,
    exclude: Vec<String>,
    unpack_archive: bool,
    from: Option<Digest>,
}

enum PlannedSource {
    /// A path in the `from` input (or the context).
    Path(String),
    /// A heredoc written as a file.
    Heredoc { name: String, content: String },
    /// A file from another source vertex (URL or git), copied from `path`;
    /// `shown` is the source as written, for history and progress.
    Vertex { digest: Digest, path: String, shown: String },
}

impl Lowering<'_> {
    /// The vertex a `--from` (or `--mount from=`) names: a stage, a named
    /// context, or an image.
    pub(crate) fn resolve_from(
        &mut self,
        st: &StageState,
        name: &str,
        span: Span,
        visiting: &mut Vec<usize>,
    ) -> Result<Option<Digest>, Diagnostic> {
        if let Some(j) = self.stage_by_name(name) {
            if j == st.index {
                return Err(Diagnostic::new(span, format!("stage `{name}` cannot refer to itself")));
            }
            self.lower_stage(j, visiting)?;
            return Ok(Some(self.stages[&j].state.unwrap_or_else(|| self.empty_vertex())));
        }
        match self.opts.named_contexts.get(name).cloned() {
            Some(NamedContext::Local) => return Ok(Some(self.context(name))),
            Some(NamedContext::Graph(built)) => return Ok(Some(self.built_context(&built.definition))),
            Some(NamedContext::Image(r)) => {
                let base = self.resolve_base(&r, &st.platform, span)?;
                return Ok(Some(self.image_vertex(&base, &st.platform, None)));
            }
            None => {}
        }
        if name.eq_ignore_ascii_case("scratch") {
            return Ok(Some(self.empty_vertex()));
        }
        let platform = st.platform.clone();
        let base = self.resolve_base(name, &platform, span)?;
        Ok(Some(self.image_vertex(&base, &platform, None)))
    }

    /// The result of another build's graph, taken into this one (an empty
    /// filesystem when that build has no result, as `FROM scratch`).
    pub(crate) fn built_context(&mut self, graph: &rbuild_solver::graph::Definition) -> Digest {
        match self.definition.absorb(graph) {
            Some(d) => d,
            None => self.empty_vertex(),
        }
    }

    /// A vertex for an empty filesystem.
    pub(crate) fn empty_vertex(&mut self) -> Digest {
        self.definition.add(
            Op::File(FileOp { base: None, actions: vec![] }),
            vec![],
            VertexMeta { description: "scratch".into(), ..Default::default() },
        )
    }

    pub(crate) fn dispatch_copy(
        &mut self,
        st: &mut StageState,
        copy: &Copy,
        command: &Command,
        visiting: &mut Vec<usize>,
    ) -> Result<(), Diagnostic> {
        let span = command.span;
        let lexer = self.lexer;
        let exp = |st: &StageState, w: &str| expand(&lexer, w, &|k| st.lookup(k), span);
        let from = match &copy.from {
            Some(f) => {
                let f = exp(st, f)?;
                self.resolve_from(st, &f, span, visiting)?
            }
            None => None,
        };
        let mut sources = Vec::new();
        for s in &copy.sources {
            sources.push(match s {
                CopySource::Path(p) => PlannedSource::Path(exp(st, p)?),
                CopySource::Heredoc(doc) => heredoc_source(st, doc, span)?,
            });
        }
        let plan = CopyPlan {
            sources,
            dest: exp(st, &copy.dest)?,
            chown: copy
                .chown
                .as_deref()
                .map(|c| exp(st, c))
                .transpose()?
                .map(|c| checked_chown(&c, span))
                .transpose()?,
            chmod: copy
                .chmod
                .as_deref()
                .map(|c| exp(st, c))
                .transpose()?
                .map(|c| checked_chmod(c, span))
                .transpose()?,
            link: copy.link,
            parents: copy.parents,
            exclude: copy.exclude.iter().map(|e| exp(st, e)).collect::<Result<_, _>>()?,
            unpack_archive: false,
            from,
        };
        self.emit_copy(st, plan, "COPY", span)
    }

    pub(crate) fn dispatch_add(&mut self, st: &mut StageState, add: &Add, command: &Command) -> Result<(), Diagnostic> {
        let span = command.span;
        let lexer = self.lexer;
        let exp = |st: &StageState, w: &str| expand(&lexer, w, &|k| st.lookup(k), span);
        let checksum = add.checksum.as_deref().map(|c| exp(st, c)).transpose()?;
        let mut sources = Vec::new();
        for s in &add.sources {
            match s {
                CopySource::Heredoc(doc) => sources.push(heredoc_source(st, doc, span)?),
                CopySource::Path(p) => {
                    let p = exp(st, p)?;
                    if let Some(git) = parse_git_url(&p) {
                        let digest = self.definition.add(
                            Op::Source(SourceOp::Git {
                                remote: git.remote,
                                git_ref: git.git_ref,
                                subdir: git.subdir,
                                keep_git_dir: add.keep_git_dir,
                            }),
                            vec![],
                            VertexMeta { description: format!("git {p}"), ..Default::default() },
                        );
                        sources.push(PlannedSource::Vertex { digest, path: "/".into(), shown: p.clone() });
                    } else if p.starts_with("http://") || p.starts_with("https://") {
                        let filename = url_filename(&p);
                        let digest = self.definition.add(
                            Op::Source(SourceOp::Http {
                                url: p.clone(),
                                checksum: checksum.clone(),
                                filename: filename.clone(),
                            }),
                            vec![],
                            VertexMeta { description: format!("https {p}"), ..Default::default() },
                        );
                        sources.push(PlannedSource::Vertex { digest, path: format!("/{filename}"), shown: p.clone() });
                    } else {
                        if checksum.is_some() {
                            return Err(Diagnostic::new(
                                span,
                                "`--checksum` is only supported for HTTP(S) and git sources",
                            ));
                        }
                        sources.push(PlannedSource::Path(p));
                    }
                }
            }
        }
        let plan = CopyPlan {
            sources,
            dest: exp(st, &add.dest)?,
            chown: add
                .chown
                .as_deref()
                .map(|c| exp(st, c))
                .transpose()?
                .map(|c| checked_chown(&c, span))
                .transpose()?,
            chmod: add.chmod.as_deref().map(|c| exp(st, c)).transpose()?.map(|c| checked_chmod(c, span)).transpose()?,
            link: add.link,
            parents: false,
            exclude: add.exclude.iter().map(|e| exp(st, e)).collect::<Result<_, _>>()?,
            unpack_archive: true,
            from: None,
        };
        self.emit_copy(st, plan, "ADD", span)
    }

    fn emit_copy(&mut self, st: &mut StageState, plan: CopyPlan, verb: &str, span: Span) -> Result<(), Diagnostic> {
        if plan.sources.is_empty() {
            return Err(Diagnostic::new(span, format!("`{verb}` requires at least one source and a destination")));
        }
        let dest_is_dir = plan.dest.ends_with('/') || plan.sources.len() > 1;
        let mut dest = st.abs_path(&plan.dest);
        if plan.dest.ends_with('/') && !dest.ends_with('/') {
            dest.push('/');
        }
        if plan.dest == "." || plan.dest.ends_with("/.") {
            dest = format!("{}/", dest.trim_end_matches('.').trim_end_matches('/'));
        }

        // Inputs: [base?] then every source vertex, deduplicated.
        let mut inputs: Vec<Digest> = Vec::new();
        let base = if plan.link { None } else { st.state };
        if let Some(b) = base {
            inputs.push(b);
        }
        let input_of = |d: Digest, inputs: &mut Vec<Digest>| match inputs.iter().position(|x| *x == d) {
            Some(i) => i,
            None => {
                inputs.push(d);
                inputs.len() - 1
            }
        };

        let mut actions = Vec::new();
        let mut shown: Vec<String> = Vec::new();
        let mut paths: Vec<String> = Vec::new();
        let mut vertex_paths: Vec<(Digest, String)> = Vec::new();
        // Sources as written, in order, for history and progress.
        for s in &plan.sources {
            match s {
                PlannedSource::Path(p) => {
                    shown.push(p.clone());
                    paths.push(p.clone());
                }
                PlannedSource::Vertex { digest, path, shown: text } => {
                    shown.push(text.clone());
                    vertex_paths.push((*digest, path.clone()));
                }
                PlannedSource::Heredoc { name, content } => {
                    shown.push(format!("<<{name}"));
                    let path =
                        if dest_is_dir { format!("{}/{}", dest.trim_end_matches('/'), name) } else { dest.clone() };
                    let mode = plan.chmod.as_deref().and_then(|m| u32::from_str_radix(m, 8).ok()).unwrap_or(0o644);
                    if let Some(parent) = path.rsplit_once('/').map(|(p, _)| p).filter(|p| !p.is_empty()) {
                        actions.push(FileAction::Mkdir {
                            path: parent.to_string(),
                            mode: 0o755,
                            make_parents: true,
                            chown: plan.chown.clone(),
                        });
                    }
                    actions.push(FileAction::Mkfile { path, mode, data: content.clone(), chown: plan.chown.clone() });
                }
            }
        }
        if !paths.is_empty() {
            let src_vertex = match plan.from {
                Some(d) => d,
                None => self.context("context"),
            };
            let input = input_of(src_vertex, &mut inputs);
            actions.push(FileAction::Copy {
                input,
                src: paths,
                dest: dest.clone(),
                chown: plan.chown.clone(),
                chmod: plan.chmod.clone(),
                allow_wildcard: true,
                // BuildKit's COPY lowering sets `AllowEmptyWildcard` on every
                // context/stage source: a wildcard matching nothing copies
                // nothing (and creates no destination).
                allow_empty_wildcard: true,
                unpack_archive: plan.unpack_archive,
                parents: plan.parents,
                exclude: plan.exclude.clone(),
            });
        }
        for (digest, path) in vertex_paths {
            let input = input_of(digest, &mut inputs);
            actions.push(FileAction::Copy {
                input,
                src: vec![path],
                dest: dest.clone(),
                chown: plan.chown.clone(),
                chmod: plan.chmod.clone(),
                allow_wildcard: false,
                allow_empty_wildcard: false,
                // Remote files are never unpacked (Docker's rule for URLs).
                unpack_archive: false,
                parents: false,
                exclude: plan.exclude.clone(),
            });
        }
        let text = format!("{verb} {} {}", shown.join(" "), plan.dest);
        let meta = st.meta(&text);
        let copied = self.definition.add(Op::File(FileOp { base: base.map(|_| 0), actions }), inputs, meta.clone());
        let result = match (plan.link, st.state) {
            (true, Some(prev)) => self.definition.add(
                Op::Merge(MergeOp {}),
                vec![prev, copied],
                VertexMeta { description: format!("{} (link)", meta.description), ..meta },
            ),
            _ => copied,
        };
        st.state = Some(result);
        st.commit_history(format!("{text} # buildkit"), Some(copied));
        Ok(())
    }
}

/// `--chown` after expansion: a numeric id must fit a uid (below
/// 4294967295, which `chown(2)` reads as "unchanged"). A name is looked up
/// in the image when the step runs.
fn checked_chown(value: &str, span: Span) -> Result<Chown, Diagnostic> {
    let chown = history::parse_chown(value);
    for id in std::iter::once(&chown.user).chain(chown.group.as_ref()) {
        if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u32>().map_or(true, |v| v == u32::MAX)
        {
            return Err(Diagnostic::new(span, format!("invalid --chown value `{value}`: id `{id}` is out of range"))
                .suggest("ids go up to 4294967294"));
        }
    }
    Ok(chown)
}

/// `--chmod` after expansion must be what the file op accepts: failing
/// here names the instruction, failing at solve time would not.
fn checked_chmod(value: String, span: Span) -> Result<String, Diagnostic> {
    match rbuild_solver::fileop::Chmod::parse(&value) {
        Some(_) => Ok(value),
        None => Err(Diagnostic::new(span, format!("invalid --chmod value `{value}`"))
            .suggest("use octal (`755`, at most 4 digits) or symbolic (`u+x,g-w`)")),
    }
}

fn heredoc_source(st: &StageState, doc: &Heredoc, span: Span) -> Result<PlannedSource, Diagnostic> {
    let content = if doc.expand {
        expand_vars(&doc.content, &|k| st.lookup(k)).map_err(|e| Diagnostic::new(span, e.to_string()))?
    } else {
        doc.content.clone()
    };
    Ok(PlannedSource::Heredoc { name: doc.name.clone(), content })
}

/// `$VAR`/`${VAR}` substitution for heredoc file bodies: quotes in a file
/// body are content, not shell syntax, so the word lexer does not apply.
/// The result is bounded like a word's ([`crate::shell::MAX_EXPANDED_LEN`]).
fn expand_vars(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, crate::shell::ShellError> {
    let limit = crate::shell::MAX_EXPANDED_LEN;
    let mut out = String::with_capacity(text.len().min(limit));
    let chars: Vec<char> = text.chars().collect();
    // A `${` after the last `}` has no closing brace: knowing that up front
    // keeps a body full of unclosed `${` linear instead of quadratic.
    let last_close = chars.iter().rposition(|&c| c == '}');
    let mut i = 0;
    while i < chars.len() {
        if out.len() > limit {
            return Err(crate::shell::ShellError::TooLong { limit });
        }
        let c = chars[i];
        if c == '\\' && chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c == '$' {
            if chars.get(i + 1) == Some(&'{') {
                if last_close.is_some_and(|l| l > i + 1)
                    && let Some(end) = chars[i + 2..].iter().position(|&c| c == '}')
                {
                    let name: String = chars[i + 2..i + 2 + end].iter().collect();
                    out.push_str(&lookup(&name).unwrap_or_default());
                    i += end + 3;
                    continue;
                }
            } else {
                let name: String =
                    chars[i + 1..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == '_').collect();
                if !name.is_empty() {
                    out.push_str(&lookup(&name).unwrap_or_default());
                    i += 1 + name.len();
                    continue;
                }
            }
        }
        out.push(c);
        i += 1;
    }
    if out.len() > limit {
        return Err(crate::shell::ShellError::TooLong { limit });
    }
    Ok(out)
}

struct GitUrl {
    remote: String,
    git_ref: String,
    subdir: String,
}

/// Recognises git sources as BuildKit does: `git@host:repo`, `git://`,
/// `ssh://`, and `http(s)://...` ending in `.git` (optionally `#ref[:subdir]`).
fn parse_git_url(s: &str) -> Option<GitUrl> {
    let (url, fragment) = s.split_once('#').unwrap_or((s, ""));
    let is_git = url.starts_with("git@")
        || url.starts_with("git://")
        || url.starts_with("ssh://")
        || ((url.starts_with("https://") || url.starts_with("http://")) && url.trim_end_matches('/').ends_with(".git"));
    if !is_git {
        return None;
    }
    let (git_ref, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    Some(GitUrl { remote: url.to_string(), git_ref: git_ref.to_string(), subdir: subdir.to_string() })
}

/// The file name a downloaded URL gets: its last path segment.
fn url_filename(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    after_host.rsplit('/').find(|s| !s.is_empty()).unwrap_or("index.html").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_git_and_http_sources() {
        let g = parse_git_url("https://github.com/moby/buildkit.git#v0.12:frontend").unwrap();
        assert_eq!(
            (g.remote.as_str(), g.git_ref.as_str(), g.subdir.as_str()),
            ("https://github.com/moby/buildkit.git", "v0.12", "frontend")
        );
        assert!(parse_git_url("git@github.com:a/b.git").is_some());
        assert!(parse_git_url("https://example.com/file.tar.gz").is_none());
        assert_eq!(url_filename("https://example.com/a/b.tar.gz?x=1"), "b.tar.gz");
        assert_eq!(url_filename("https://example.com/"), "index.html");
    }

    #[test]
    fn heredoc_bodies_expand_only_variables() {
        let v = expand_vars("a=$A b=${B} \"q\" \\$A\n", &|k| Some(format!("<{k}>"))).unwrap();
        assert_eq!(v, "a=<A> b=<B> \"q\" $A\n");
    }

    #[test]
    fn heredoc_bodies_are_bounded_and_linear() {
        let mb = "x".repeat(1 << 20);
        let err = expand_vars(&"$A".repeat(5), &|_| Some(mb.clone())).unwrap_err();
        assert_eq!(err, crate::shell::ShellError::TooLong { limit: crate::shell::MAX_EXPANDED_LEN });
        // 200,000 unclosed `${`: each used to scan to the end for a `}`.
        let body = format!("}}{}", "${".repeat(200_000));
        let start = std::time::Instant::now();
        assert_eq!(expand_vars(&body, &|_| None).unwrap(), body);
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "{:?}", start.elapsed());
    }
}
