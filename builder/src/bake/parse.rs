//! Reading bake files (HCL, HCL-as-JSON, compose) into one syntax tree and
//! evaluating it ([`hcl_eval`](super::hcl_eval)) into a [`Config`]: this is
//! buildx's `ParseFiles`, so `inherits` is not applied yet (see `resolve`).

use std::collections::BTreeMap;

use hcl::edit::Span as _;
use hcl::edit::expr::Expression;
use hcl::edit::structure::{Body, Structure};

use super::compose;
use super::error::{BakeError, SourceText};
use super::eval::Loc;
use super::ojson::OJson;
use super::target::{Group, Target};

/// One input file.
#[derive(Debug, Clone)]
pub struct BakeFile {
    /// The name as given (`-f` value, `-` for stdin); decides the format.
    pub name: String,
    /// The contents.
    pub data: Vec<u8>,
}

/// Inputs besides the files.
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// The environment variables override `variable` defaults from.
    pub env: BTreeMap<String, String>,
    /// Built-in variables (`BAKE_CMD_CONTEXT`, `BAKE_LOCAL_PLATFORM`); a
    /// `variable` block of the same name is ignored.
    pub defaults: BTreeMap<String, String>,
    /// Paths relative to each file's directory (`BUILDX_BAKE_FILE_RELATIVE_PATHS`).
    pub file_relative_paths: bool,
    /// `--var NAME=VALUE`: like environment variables, looked up first.
    pub vars: BTreeMap<String, String>,
}

/// A variable as `--list variables` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct VariableInfo {
    /// Name.
    pub name: String,
    /// `description`.
    pub description: String,
    /// The declared type, if any.
    pub type_name: Option<String>,
    /// The resolved value as text (`None` for null).
    pub value: Option<String>,
}

/// The parsed definition: groups and targets in declaration order.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Groups (including those created for matrix/renamed blocks).
    pub groups: Vec<Group>,
    /// Targets (same-name blocks merged).
    pub targets: Vec<Target>,
    /// All `variable` blocks, by name.
    pub variables: Vec<VariableInfo>,
    /// The files' text, for locating errors found while resolving.
    pub sources: Vec<SourceText>,
}

impl Config {
    /// `err` located at `loc` (an attribute), when the file has positions.
    pub fn locate(&self, loc: Option<Loc>, err: BakeError) -> BakeError {
        match loc.and_then(|l| self.sources.get(l.file).map(|s| (s, l.offset))) {
            Some((src, off)) if src.spans => src.diagnostic(Some(off), err.to_string()),
            _ => err,
        }
    }

    /// The target called `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }
    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// The bake file names buildx looks for, in order.
pub const DEFAULT_FILES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
    "docker-bake.json",
    "docker-bake.hcl",
    "docker-bake.override.json",
    "docker-bake.override.hcl",
];

// ---- syntax, unified over HCL and JSON ----

#[derive(Debug)]
pub(super) struct SAttr {
    pub(super) name: String,
    pub(super) expr: Expression,
    pub(super) file: usize,
    pub(super) offset: Option<usize>,
}

#[derive(Debug)]
pub(super) struct SBlock {
    pub(super) kind: String,
    pub(super) labels: Vec<String>,
    pub(super) attrs: Vec<SAttr>,
    pub(super) blocks: Vec<SBlock>,
    pub(super) file: usize,
    pub(super) offset: Option<usize>,
}

impl SBlock {
    pub(super) fn attr(&self, name: &str) -> Option<&SAttr> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

#[derive(Default)]
pub(super) struct SBody {
    pub(super) attrs: Vec<SAttr>,
    pub(super) blocks: Vec<SBlock>,
}

fn convert_hcl_body(body: &Body, file: usize) -> (Vec<SAttr>, Vec<SBlock>) {
    let mut attrs = Vec::new();
    let mut blocks = Vec::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => attrs.push(SAttr {
                name: a.key.as_str().to_string(),
                expr: a.value.clone(),
                file,
                offset: a.span().map(|s| s.start),
            }),
            Structure::Block(b) => {
                let (a, bl) = convert_hcl_body(&b.body, file);
                blocks.push(SBlock {
                    kind: b.ident.as_str().to_string(),
                    labels: b.labels.iter().map(|l| l.as_str().to_string()).collect(),
                    attrs: a,
                    blocks: bl,
                    file,
                    offset: b.span().map(|s| s.start),
                })
            }
        }
    }
    (attrs, blocks)
}

/// A JSON value as an HCL expression: strings are templates.
fn json_expr(v: &OJson, src: &SourceText) -> Result<Expression, BakeError> {
    use hcl::edit::expr::{Array, Object, ObjectKey, ObjectValue};
    use hcl::edit::{Decorated, Formatted, Number};
    Ok(match v {
        OJson::Null => Expression::null(),
        OJson::Bool(b) => Expression::Bool(Decorated::new(*b)),
        OJson::Number(n) => {
            let num = n
                .as_i64()
                .map(Number::from)
                .or_else(|| n.as_f64().and_then(Number::from_f64))
                .unwrap_or_else(|| Number::from(0));
            Expression::Number(Formatted::new(num))
        }
        OJson::String(s) => {
            let t = hcl::edit::parser::parse_template(s)
                .map_err(|e| src.diagnostic(None, format!("invalid template {s:?}: {}", e.message())))?;
            Expression::StringTemplate(t.into())
        }
        OJson::Array(items) => {
            let mut a = Array::new();
            for i in items {
                a.push(json_expr(i, src)?);
            }
            Expression::Array(a)
        }
        OJson::Object(o) => {
            let mut obj = Object::new();
            for (k, v) in o {
                obj.insert(
                    ObjectKey::Expression(Expression::String(Decorated::new(k.clone()))),
                    ObjectValue::new(json_expr(v, src)?),
                );
            }
            Expression::Object(obj)
        }
    })
}

pub(super) const BLOCK_KINDS: &[&str] = &["target", "group", "variable", "function"];

fn convert_json(j: &OJson, file: usize, src: &SourceText) -> Result<SBody, BakeError> {
    let OJson::Object(top) = j else {
        return Err(src.diagnostic(None, "the top level of a JSON bake file must be an object"));
    };
    let mut body = SBody::default();
    for (k, v) in top {
        if BLOCK_KINDS.contains(&k.as_str()) {
            let groups: Vec<&OJson> = match v {
                OJson::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for labels in groups {
                let OJson::Object(labels) = labels else {
                    return Err(src.diagnostic(None, format!("`{k}` must be an object of labelled blocks")));
                };
                for (label, b) in labels {
                    let bodies: Vec<&OJson> = match b {
                        OJson::Array(a) => a.iter().collect(),
                        other => vec![other],
                    };
                    for bj in bodies {
                        let OJson::Object(attrs) = bj else {
                            return Err(src.diagnostic(None, format!("{k} `{label}` must be an object")));
                        };
                        let mut block = SBlock {
                            kind: k.clone(),
                            labels: vec![label.clone()],
                            attrs: Vec::new(),
                            blocks: Vec::new(),
                            file,
                            offset: None,
                        };
                        for (an, av) in attrs {
                            if k == "variable" && an == "validation" {
                                let vals: Vec<&OJson> = match av {
                                    OJson::Array(a) => a.iter().collect(),
                                    other => vec![other],
                                };
                                for vj in vals {
                                    let OJson::Object(vo) = vj else { continue };
                                    let mut vb = SBlock {
                                        kind: "validation".into(),
                                        labels: vec![],
                                        attrs: vec![],
                                        blocks: vec![],
                                        file,
                                        offset: None,
                                    };
                                    for (vn, vv) in vo {
                                        vb.attrs.push(SAttr {
                                            name: vn.clone(),
                                            expr: json_expr(vv, src)?,
                                            file,
                                            offset: None,
                                        });
                                    }
                                    block.blocks.push(vb);
                                }
                                continue;
                            }
                            let expr = if k == "variable" && an == "type" {
                                match av {
                                    OJson::String(s) => hcl::edit::parser::parse_expr(s).map_err(|e| {
                                        src.diagnostic(None, format!("invalid type expression {s:?}: {}", e.message()))
                                    })?,
                                    other => json_expr(other, src)?,
                                }
                            } else {
                                json_expr(av, src)?
                            };
                            block.attrs.push(SAttr { name: an.clone(), expr, file, offset: None });
                        }
                        body.blocks.push(block);
                    }
                }
            }
        } else {
            body.attrs.push(SAttr { name: k.clone(), expr: json_expr(v, src)?, file, offset: None });
        }
    }
    Ok(body)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    Hcl,
    Json,
    Compose,
    Unknown,
}

fn format_of(name: &str) -> Format {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".yml") || lower.ends_with(".yaml") {
        Format::Compose
    } else if lower.ends_with(".json") {
        Format::Json
    } else if lower.ends_with(".hcl") {
        Format::Hcl
    } else {
        Format::Unknown
    }
}

fn parse_hcl(src: &SourceText, file: usize) -> Result<SBody, BakeError> {
    let body = hcl::edit::parser::parse_body(&src.text).map_err(|e| {
        let loc = e.location();
        let mut d = rbuild_frontend::diagnostic::Diagnostic::new(
            rbuild_frontend::diagnostic::Span::at(loc.line(), loc.column()),
            e.message().to_string(),
        )
        .with_source(&src.name, &src.text);
        super::error::shorten(&mut d);
        BakeError::Source(d)
    })?;
    let (attrs, blocks) = convert_hcl_body(&body, file);
    Ok(SBody { attrs, blocks })
}

/// Parses and evaluates `files` (buildx `ParseFiles`).
pub fn parse_files(files: &[BakeFile], opts: &ParseOptions) -> Result<Config, BakeError> {
    let mut sources = Vec::new();
    let mut bodies = Vec::new();
    let mut compose_files = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let text = String::from_utf8_lossy(&f.data).into_owned();
        let fmt = format_of(&f.name);
        let mut src = SourceText { name: f.name.clone(), text, spans: true };
        match fmt {
            Format::Compose => {
                src.spans = false;
                compose_files.push(i);
            }
            Format::Json => {
                src.spans = false;
                let j: OJson = serde_json::from_str(&src.text)
                    .map_err(|source| BakeError::Json { file: f.name.clone(), source })?;
                bodies.push(convert_json(&j, i, &src)?);
            }
            Format::Hcl => bodies.push(parse_hcl(&src, i)?),
            Format::Unknown => {
                if compose::looks_like_compose(&src.text) {
                    src.spans = false;
                    compose_files.push(i);
                } else {
                    match parse_hcl(&src, i) {
                        Ok(b) => bodies.push(b),
                        Err(hcl_err) => match serde_json::from_str::<OJson>(&src.text) {
                            Ok(j) => {
                                src.spans = false;
                                bodies.push(convert_json(&j, i, &src)?);
                            }
                            Err(_) => return Err(hcl_err),
                        },
                    }
                }
            }
        }
        sources.push(src);
    }

    let mut config = Config::default();
    if !compose_files.is_empty() {
        let c = compose::parse(&compose_files.iter().map(|&i| &sources[i]).collect::<Vec<_>>(), opts)?;
        merge_config(&mut config, c);
    }
    if !bodies.is_empty() {
        let mut merged = SBody::default();
        for b in bodies {
            merged.attrs.extend(b.attrs);
            merged.blocks.extend(b.blocks);
        }
        super::hcl_eval::evaluate(&merged, &sources, opts, &mut config)?;
    }
    if opts.file_relative_paths {
        super::resolve::rebase_context_paths(&mut config);
    }
    config.sources = sources;
    Ok(config)
}

fn merge_config(c: &mut Config, other: Config) {
    for g in other.groups {
        match c.groups.iter_mut().find(|x| x.name == g.name) {
            Some(existing) => {
                for t in g.targets {
                    if !existing.targets.contains(&t) {
                        existing.targets.push(t);
                    }
                }
            }
            None => c.groups.push(g),
        }
    }
    for t in other.targets {
        match c.targets.iter_mut().find(|x| x.name == t.name) {
            Some(existing) => existing.merge(&t),
            None => c.targets.push(t),
        }
    }
}

/// Whether `name` is a valid target or group label.
pub fn valid_label(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Directory of a local file name (`None` for stdin and URLs).
pub fn local_file_dir(name: &str) -> Option<String> {
    if name.is_empty() || name == "-" || name.contains("://") {
        return None;
    }
    Some(super::functions::clean_path(&match name.rfind('/') {
        Some(i) => name[..i].to_string(),
        None => ".".to_string(),
    }))
}
