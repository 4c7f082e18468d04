//! Reading bake files (HCL, HCL-as-JSON, compose) and evaluating them into a
//! [`Config`]: variables (defaults, types, env overrides, validation),
//! user functions, `matrix`/`name` expansion, `target.X.attr` references,
//! and same-name blocks merged. This is buildx's `ParseFiles`: `inherits` is
//! not applied yet (see `resolve`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use hcl::edit::Span as _;
use hcl::edit::expr::{Expression, TraversalOperator};
use hcl::edit::structure::{Body, Structure};

use super::compose;
use super::error::{BakeError, SourceText, from_eval};
use super::eval::{EvalError, Evaluator, Loc, Locals, Scope};
use super::functions;
use super::ojson::OJson;
use super::target::{Group, TARGET_ATTRS, Target};
use super::value::{self, ConvertError, InvalidType, Type, Value};

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
struct SAttr {
    name: String,
    expr: Expression,
    file: usize,
    offset: Option<usize>,
}

#[derive(Debug)]
struct SBlock {
    kind: String,
    labels: Vec<String>,
    attrs: Vec<SAttr>,
    blocks: Vec<SBlock>,
    file: usize,
    offset: Option<usize>,
}

impl SBlock {
    fn attr(&self, name: &str) -> Option<&SAttr> {
        self.attrs.iter().find(|a| a.name == name)
    }
}

#[derive(Default)]
struct SBody {
    attrs: Vec<SAttr>,
    blocks: Vec<SBlock>,
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

const BLOCK_KINDS: &[&str] = &["target", "group", "variable", "function"];

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
        let ctx = Ctx::new(&merged, &sources, opts);
        ctx.run(&mut config)?;
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

// ---- evaluation ----

struct Instance<'a> {
    block: &'a SBlock,
    name: String,
    matrix: BTreeMap<String, Value>,
}

struct Ctx<'a> {
    files: &'a [SourceText],
    opts: &'a ParseOptions,
    vars: BTreeMap<String, &'a SBlock>,
    attrs: BTreeMap<String, &'a SAttr>,
    funcs: BTreeMap<String, &'a SBlock>,
    blocks: Vec<&'a SBlock>,
    values: RefCell<BTreeMap<String, Value>>,
    types: RefCell<BTreeMap<String, Type>>,
    progress: RefCell<BTreeSet<String>>,
    calling: RefCell<Vec<String>>,
    instances: RefCell<Option<Vec<Instance<'a>>>>,
    computing_instances: RefCell<bool>,
    attr_cache: RefCell<BTreeMap<(usize, String), Value>>,
    attr_progress: RefCell<BTreeSet<(usize, String)>>,
    /// How deep variable, attribute and function evaluations nest right now.
    depth: std::cell::Cell<usize>,
}

/// Nested evaluations allowed (a chain of variables each reading the next):
/// deep enough for any real file, shallow enough that a hostile one cannot
/// overflow the stack.
const MAX_DEPTH: usize = 200;

/// Targets one `matrix` may expand to; a hostile file could otherwise ask
/// for billions.
pub const MAX_MATRIX: usize = 10_000;

/// Counts one level of nested evaluation while alive.
struct DepthGuard<'c>(&'c std::cell::Cell<usize>);

impl<'c> DepthGuard<'c> {
    fn enter(c: &'c std::cell::Cell<usize>) -> Result<Self, EvalError> {
        if c.get() >= MAX_DEPTH {
            return Err(EvalError::msg(format!(
                "evaluation nests deeper than {MAX_DEPTH} levels (a chain of variables, target references or function calls)"
            )));
        }
        c.set(c.get() + 1);
        Ok(DepthGuard(c))
    }
}

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

fn undefined_var(name: &str) -> EvalError {
    EvalError::msg(format!("unknown variable; There is no variable named \"{name}\"."))
}

impl<'a> Ctx<'a> {
    fn new(body: &'a SBody, files: &'a [SourceText], opts: &'a ParseOptions) -> Self {
        let mut vars = BTreeMap::new();
        let mut funcs = BTreeMap::new();
        let mut blocks = Vec::new();
        for b in &body.blocks {
            let label = b.labels.first().cloned().unwrap_or_default();
            match b.kind.as_str() {
                "variable" if !opts.defaults.contains_key(&label) => {
                    vars.insert(label, b);
                }
                "function" if !opts.defaults.contains_key(&label) => {
                    funcs.insert(label, b);
                }
                "variable" | "function" => {}
                _ => blocks.push(b),
            }
        }
        let mut attrs = BTreeMap::new();
        for a in &body.attrs {
            if opts.defaults.contains_key(&a.name) || a.name == "function" || BLOCK_KINDS.contains(&a.name.as_str()) {
                continue;
            }
            attrs.insert(a.name.clone(), a);
        }
        Ctx {
            files,
            opts,
            vars,
            attrs,
            funcs,
            blocks,
            values: RefCell::new(BTreeMap::new()),
            types: RefCell::new(BTreeMap::new()),
            progress: RefCell::new(BTreeSet::new()),
            calling: RefCell::new(Vec::new()),
            instances: RefCell::new(None),
            computing_instances: RefCell::new(false),
            attr_cache: RefCell::new(BTreeMap::new()),
            attr_progress: RefCell::new(BTreeSet::new()),
            depth: std::cell::Cell::new(0),
        }
    }

    fn err(&self, file: usize, offset: Option<usize>, message: impl Into<String>) -> BakeError {
        self.files[file].diagnostic(offset, message)
    }

    fn eval_err(&self, file: usize, e: EvalError) -> BakeError {
        from_eval(self.files, file, e)
    }

    fn ev(&self, file: usize) -> Evaluator<'_> {
        Evaluator { scope: self, file }
    }

    fn loc(block: &SBlock, offset: Option<usize>) -> Option<Loc> {
        offset.or(block.offset).map(|o| Loc { file: block.file, offset: o })
    }

    /// `--var NAME=VALUE` first, then the environment (buildx `LookupVar`).
    fn lookup_env(&self, name: &str) -> Option<String> {
        self.opts.vars.get(name).or_else(|| self.opts.env.get(name)).cloned()
    }

    /// buildx `valueHasOverride`: the env value, and whether it came from `NAME_JSON`.
    fn env_override(&self, name: &str, favor_json: bool) -> Option<(String, bool)> {
        let plain = self.lookup_env(name);
        if plain.is_none() || favor_json {
            let jn = format!("{name}_JSON");
            if !self.vars.contains_key(&jn)
                && !self.opts.defaults.contains_key(&jn)
                && let Some(j) = self.lookup_env(&jn)
            {
                return Some((j, true));
            }
        }
        plain.map(|p| (p, false))
    }

    fn resolve_value(&self, name: &str) -> Result<Value, EvalError> {
        if let Some(v) = self.values.borrow().get(name) {
            return Ok(v.clone());
        }
        if let Some(d) = self.opts.defaults.get(name) {
            return Ok(Value::String(d.clone()));
        }
        if self.progress.borrow().contains(name) {
            return Err(EvalError::msg(format!("variable cycle not allowed for {name}")));
        }
        let (def, ty, typed, var_block) = if let Some(a) = self.attrs.get(name) {
            (Some((&a.expr, a.file)), Type::Any, false, self.vars.get(name).copied())
        } else if let Some(b) = self.vars.get(name) {
            let (ty, typed) = match b.attr("type") {
                Some(t) => {
                    let ty = type_expr(&t.expr)
                        .map_err(|m| EvalError { loc: Self::loc(b, t.offset), message: m.to_string() })?;
                    match ty {
                        // `type = null` means untyped.
                        None => (Type::Any, false),
                        Some(ty) => (ty, true),
                    }
                }
                None => (Type::Any, false),
            };
            (b.attr("default").map(|d| (&d.expr, d.file)), ty, typed, Some(*b))
        } else {
            return Err(undefined_var(name));
        };
        if typed {
            self.types.borrow_mut().insert(name.to_string(), ty.clone());
        }
        let _depth = DepthGuard::enter(&self.depth)?;
        self.progress.borrow_mut().insert(name.to_string());
        let result = self.compute_value(name, def, &ty, typed, var_block.is_some());
        self.progress.borrow_mut().remove(name);
        let v = result?;
        self.values.borrow_mut().insert(name.to_string(), v.clone());
        Ok(v)
    }

    fn compute_value(
        &self,
        name: &str,
        def: Option<(&Expression, usize)>,
        ty: &Type,
        typed: bool,
        is_var: bool,
    ) -> Result<Value, EvalError> {
        let over = self.env_override(name, typed);
        let mut v = match def {
            None => {
                if over.is_none() || !is_var {
                    return Ok(if typed { Value::Null } else { Value::String(String::new()) });
                }
                Value::Null
            }
            Some((expr, file)) => {
                let raw = self.ev(file).eval(expr)?;
                value::convert(&raw, ty).map_err(|e| {
                    let at = expr.span().map(|s| Loc { file, offset: s.start });
                    EvalError { loc: at, message: format!("invalid type {ty} for variable {name} default value: {e}") }
                })?
            }
        };
        let Some((env, json)) = over else { return Ok(v) };
        if !is_var {
            return Ok(v);
        }
        let fail = |m: String| EvalError::msg(m);
        v = if typed && json {
            let j: serde_json::Value = serde_json::from_str(&env)
                .map_err(|e| fail(format!("failed to convert variable {name} from JSON: {e}")))?;
            value::from_json_typed(&j, ty)
                .map_err(|e| fail(format!("failed to convert variable {name} from JSON: {e}")))?
        } else if matches!(ty, Type::List(_) | Type::Set(_) | Type::Tuple(_) | Type::Map(_)) {
            csv_value(name, &env, ty).map_err(|e| fail(format!("failed to convert variable {name} from CSV: {e}")))?
        } else if typed && ty.is_primitive() {
            convert_primitive(name, &env, ty).map_err(|e| fail(e.to_string()))?
        } else if typed {
            return Err(fail(format!("unsupported type {ty} for variable {name}")));
        } else if def.is_none() || v.is_null() {
            Value::String(env)
        } else {
            match &v {
                Value::String(_) => Value::String(env),
                Value::Number(_) => convert_primitive(name, &env, &Type::Number).map_err(|e| fail(e.to_string()))?,
                Value::Bool(_) => convert_primitive(name, &env, &Type::Bool).map_err(|e| fail(e.to_string()))?,
                other => {
                    let kind = if matches!(other, Value::List(_)) { "tuple" } else { "object" };
                    return Err(fail(format!("unsupported type {kind} for variable {name}")));
                }
            }
        };
        Ok(v)
    }

    fn call_user(&self, name: &str, f: &SBlock, args: Vec<Value>) -> Result<Value, EvalError> {
        let params_attr = f.attr("params").ok_or_else(|| EvalError {
            loc: Self::loc(f, None),
            message: format!("empty params not allowed for {name}"),
        })?;
        let result = f.attr("result").ok_or_else(|| EvalError {
            loc: Self::loc(f, None),
            message: format!("empty result not allowed for {name}"),
        })?;
        let params = keyword_list(&params_attr.expr).ok_or_else(|| EvalError {
            loc: Self::loc(f, params_attr.offset),
            message: "invalid param element: each parameter name must be an identifier".into(),
        })?;
        let variadic = match f.attr("variadic_params") {
            Some(v) => Some(keyword(&v.expr).ok_or_else(|| EvalError {
                loc: Self::loc(f, v.offset),
                message: "invalid param element: each parameter name must be an identifier".into(),
            })?),
            None => None,
        };
        if args.len() < params.len() || (variadic.is_none() && args.len() > params.len()) {
            return Err(EvalError::msg(format!(
                "function `{name}` expects {} argument(s), {} given",
                params.len(),
                args.len()
            )));
        }
        if self.calling.borrow().iter().any(|c| c == name) {
            return Err(EvalError::msg(format!("function cycle not allowed for {name}")));
        }
        let mut vars = BTreeMap::new();
        let mut it = args.into_iter();
        for p in &params {
            vars.insert(p.clone(), it.next().unwrap_or(Value::Null));
        }
        if let Some(v) = variadic {
            vars.insert(v, Value::List(it.collect()));
        }
        let _depth = DepthGuard::enter(&self.depth)?;
        self.calling.borrow_mut().push(name.to_string());
        let locals = Locals { parent: self, vars };
        let r = Evaluator { scope: &locals, file: result.file }.eval(&result.expr);
        self.calling.borrow_mut().pop();
        r
    }

    fn ensure_instances(&self) -> Result<(), EvalError> {
        if self.instances.borrow().is_some() {
            return Ok(());
        }
        if *self.computing_instances.borrow() {
            return Err(EvalError::msg("a block's `matrix` or `name` cannot refer to another target"));
        }
        *self.computing_instances.borrow_mut() = true;
        let r = self.compute_instances();
        *self.computing_instances.borrow_mut() = false;
        *self.instances.borrow_mut() = Some(r?);
        Ok(())
    }

    fn compute_instances(&self) -> Result<Vec<Instance<'a>>, EvalError> {
        let mut out = Vec::new();
        for b in &self.blocks {
            let b: &'a SBlock = b;
            if b.labels.len() != 1 {
                return Err(EvalError {
                    loc: Self::loc(b, None),
                    message: format!("invalid block label: {:?}", b.labels),
                });
            }
            let label = &b.labels[0];
            if !valid_label(label) {
                return Err(EvalError {
                    loc: Self::loc(b, None),
                    message: "only \"[a-zA-Z0-9_-]+\" are allowed".to_string(),
                });
            }
            let matrix = b.attr("matrix");
            let name_attr = b.attr("name");
            if b.kind == "group" {
                if matrix.is_some() {
                    return Err(EvalError {
                        loc: Self::loc(b, matrix.and_then(|m| m.offset)),
                        message: "matrix is not supported for groups".into(),
                    });
                }
                if name_attr.is_some() {
                    return Err(EvalError {
                        loc: Self::loc(b, name_attr.and_then(|m| m.offset)),
                        message: "name is not supported for groups".into(),
                    });
                }
            }
            let combos: Vec<BTreeMap<String, Value>> = match matrix {
                None => vec![BTreeMap::new()],
                Some(m) => {
                    let mv = self.ev(m.file).eval(&m.expr)?;
                    let Value::Map(entries) = mv else {
                        return Err(EvalError { loc: Self::loc(b, m.offset), message: "matrix must be a map".into() });
                    };
                    let mut combos = vec![BTreeMap::new()];
                    for (k, vals) in entries {
                        let Value::List(vals) = vals else {
                            return Err(EvalError {
                                loc: Self::loc(b, m.offset),
                                message: "matrix values must be a list".into(),
                            });
                        };
                        if combos.len().saturating_mul(vals.len()) > MAX_MATRIX {
                            return Err(EvalError {
                                loc: Self::loc(b, m.offset),
                                message: format!("matrix expands to more than {MAX_MATRIX} targets"),
                            });
                        }
                        let mut next = Vec::new();
                        for v in &vals {
                            for c in &combos {
                                let mut c2 = c.clone();
                                c2.insert(k.clone(), v.clone());
                                next.push(c2);
                            }
                        }
                        combos = next;
                    }
                    combos
                }
            };
            let mut names = Vec::new();
            for combo in combos {
                let name = match name_attr {
                    None => label.clone(),
                    Some(n) => {
                        if matrix.is_none() {
                            return Err(EvalError {
                                loc: Self::loc(b, n.offset),
                                message: "name requires matrix".into(),
                            });
                        }
                        let locals = Locals { parent: self, vars: combo.clone() };
                        let v = Evaluator { scope: &locals, file: n.file }.eval(&n.expr)?;
                        let s =
                            value::convert(&v, &Type::String).ok().and_then(|v| v.as_string()).ok_or_else(|| {
                                EvalError { loc: Self::loc(b, n.offset), message: "name must be a string".into() }
                            })?;
                        if !valid_label(&s) {
                            return Err(EvalError {
                                loc: Self::loc(b, n.offset),
                                message: "only \"[a-zA-Z0-9_-]+\" are allowed".into(),
                            });
                        }
                        s
                    }
                };
                if names.contains(&name) {
                    return Err(EvalError { loc: Self::loc(b, None), message: format!("duplicate name {name:?}") });
                }
                names.push(name.clone());
                out.push(Instance { block: b, name, matrix: combo });
            }
        }
        Ok(out)
    }

    /// Evaluates attribute `attr` of instance `idx` (cached, cycle-checked).
    fn instance_attr(&self, idx: usize, attr: &str) -> Result<Value, EvalError> {
        let key = (idx, attr.to_string());
        if let Some(v) = self.attr_cache.borrow().get(&key) {
            return Ok(v.clone());
        }
        let (block, matrix, name) = {
            let inst = self.instances.borrow();
            let i = &inst.as_ref().expect("instances computed")[idx];
            (i.block, i.matrix.clone(), i.name.clone())
        };
        if self.attr_progress.borrow().contains(&key) {
            return Err(EvalError::msg(format!("reference cycle not allowed for {}.{name}.{attr}", block.kind)));
        }
        let Some(a) = block.attr(attr) else { return Ok(Value::Null) };
        let _depth = DepthGuard::enter(&self.depth)?;
        self.attr_progress.borrow_mut().insert(key.clone());
        let locals = Locals { parent: self, vars: matrix };
        let r = Evaluator { scope: &locals, file: a.file }.eval(&a.expr);
        self.attr_progress.borrow_mut().remove(&key);
        let v = r?;
        self.attr_cache.borrow_mut().insert(key, v.clone());
        Ok(v)
    }

    fn run(&self, config: &mut Config) -> Result<(), BakeError> {
        // Every variable is resolved, even unused ones, as buildx does.
        for (name, b) in &self.vars {
            self.resolve_value(name).map_err(|e| self.eval_err(b.file, e))?;
        }
        for (name, b) in &self.vars {
            let v = self.values.borrow().get(name).cloned().unwrap_or(Value::Null);
            let ty = self.types.borrow().get(name).cloned();
            config.variables.push(VariableInfo {
                name: name.clone(),
                description: b
                    .attr("description")
                    .and_then(|d| self.ev(d.file).eval(&d.expr).ok())
                    .and_then(|v| v.as_string())
                    .unwrap_or_default(),
                type_name: ty.as_ref().map(|t| t.to_string()),
                value: variable_text(&v, ty.as_ref()),
            });
        }
        self.validate()?;
        for (name, f) in &self.funcs {
            if f.attr("params").is_none() {
                return Err(self.err(f.file, f.offset, format!("empty params not allowed for {name}")));
            }
            if f.attr("result").is_none() {
                return Err(self.err(f.file, f.offset, format!("empty result not allowed for {name}")));
            }
        }
        self.ensure_instances().map_err(|e| self.eval_err(0, e))?;
        let count = self.instances.borrow().as_ref().map(|i| i.len()).unwrap_or(0);
        let mut renamed: Vec<(String, Vec<String>)> = Vec::new();
        for idx in 0..count {
            let (block, name) = {
                let inst = self.instances.borrow();
                let i = &inst.as_ref().expect("instances computed")[idx];
                (i.block, i.name.clone())
            };
            let label = block.labels[0].clone();
            if block.kind == "target" || block.kind == "group" {
                match renamed.iter_mut().find(|(l, _)| *l == label) {
                    Some((_, names)) => {
                        if !names.contains(&name) {
                            names.push(name.clone())
                        }
                    }
                    None => renamed.push((label.clone(), vec![name.clone()])),
                }
            }
            match block.kind.as_str() {
                "target" => {
                    let t = self.decode_target(idx, block, &name)?;
                    match config.targets.iter_mut().find(|x| x.name == t.name) {
                        Some(existing) => existing.merge(&t),
                        None => config.targets.push(t),
                    }
                }
                "group" => {
                    let g = self.decode_group(idx, block, &name)?;
                    match config.groups.iter_mut().find(|x| x.name == g.name) {
                        Some(existing) => *existing = g,
                        None => config.groups.push(g),
                    }
                }
                other => return Err(self.err(block.file, block.offset, format!("unsupported block type `{other}`"))),
            }
        }
        for (label, names) in renamed {
            if names.len() == 1 && names[0] == label {
                continue;
            }
            config.groups.push(Group { name: label, targets: names, ..Default::default() });
        }
        for g in &mut config.groups {
            g.targets = super::entries::dedup(std::mem::take(&mut g.targets));
        }
        // Global attributes must evaluate too.
        for (name, a) in &self.attrs {
            self.resolve_value(name).map_err(|e| self.eval_err(a.file, e))?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), BakeError> {
        const BAD_MESSAGE: &str = "This check failed, but has an invalid error message.";
        for b in self.vars.values() {
            for v in b.blocks.iter().filter(|x| x.kind == "validation") {
                // A missing condition is null, which is then rejected.
                let (r, file, offset) = match v.attr("condition") {
                    Some(c) => (self.ev(c.file).eval(&c.expr).map_err(|e| self.eval_err(c.file, e))?, c.file, c.offset),
                    None => (Value::Null, v.file, v.offset),
                };
                let ok = match r {
                    Value::Null => {
                        return Err(self.err(
                            file,
                            offset,
                            "Invalid condition result: Condition expression must return either true or false, not null.",
                        ));
                    }
                    other => match value::convert(&other, &Type::Bool) {
                        Ok(Value::Bool(b)) => b,
                        Ok(_) => false,
                        Err(e) => return Err(self.err(file, offset, format!("Invalid condition result value: {e}"))),
                    },
                };
                if !ok {
                    let msg = match v.attr("error_message") {
                        Some(m) => match self.ev(m.file).eval(&m.expr).map_err(|e| self.eval_err(m.file, e))? {
                            Value::Null => BAD_MESSAGE.to_string(),
                            other => other.as_string().unwrap_or_else(|| BAD_MESSAGE.into()),
                        },
                        None => BAD_MESSAGE.to_string(),
                    };
                    return Err(self.err(file, offset, format!("validation failed: {msg}")));
                }
            }
        }
        Ok(())
    }

    fn decode_target(&self, idx: usize, block: &SBlock, name: &str) -> Result<Target, BakeError> {
        let mut t = Target { name: name.to_string(), ..Default::default() };
        if let Some(b) = &block.blocks.first() {
            return Err(self.err(
                b.file,
                b.offset,
                format!("blocks are not allowed here: unexpected `{}` block in target", b.kind),
            ));
        }
        let base = local_file_dir(&self.files[block.file].name);
        let mut errors = Vec::new();
        for a in &block.attrs {
            if a.name == "matrix" || a.name == "name" {
                continue;
            }
            if !TARGET_ATTRS.contains(&a.name.as_str()) {
                let mut msg = format!("unsupported argument; an argument named `{}` is not expected here", a.name);
                if let Some(s) = rbuild_frontend::diagnostic::closest(&a.name, TARGET_ATTRS) {
                    msg.push_str(&format!(" (did you mean `{s}`?)"));
                }
                return Err(self.err(a.file, a.offset, msg));
            }
            if let Some(off) = a.offset {
                t.locs.insert(a.name.clone(), Loc { file: a.file, offset: off });
            }
            match self.instance_attr(idx, &a.name) {
                Ok(v) => t.set_attr(&a.name, &v).map_err(|e| self.err(a.file, a.offset, e.to_string()))?,
                // Every attribute is evaluated so that all errors are reported.
                Err(e) => errors.push(self.eval_err(a.file, e)),
            }
        }
        if errors.len() == 1 {
            return Err(errors.remove(0));
        }
        if !errors.is_empty() {
            return Err(BakeError::Several(errors));
        }
        if let Some(base) = base {
            t.default_context_base = Some(base.clone());
            if let Some(a) = block.attr("context") {
                t.context_base = Some(base.clone());
                t.context_base_ref = target_context_ref(&a.expr);
            }
            if block.attr("contexts").is_some()
                && let Some(c) = &t.contexts
            {
                t.contexts_base = c.keys().map(|k| (k.clone(), base.clone())).collect();
            }
        }
        Ok(t)
    }

    fn decode_group(&self, idx: usize, block: &SBlock, name: &str) -> Result<Group, BakeError> {
        let mut g = Group { name: name.to_string(), ..Default::default() };
        for a in &block.attrs {
            let v = self.instance_attr(idx, &a.name).map_err(|e| self.eval_err(a.file, e))?;
            if a.name == "targets" {
                g.loc = a.offset.map(|offset| Loc { file: a.file, offset });
            }
            match a.name.as_str() {
                "targets" => match v {
                    Value::List(items) => {
                        g.targets = items
                            .iter()
                            .map(|i| {
                                i.as_string()
                                    .ok_or_else(|| self.err(a.file, a.offset, "`targets` must be a list of strings"))
                            })
                            .collect::<Result<_, _>>()?
                    }
                    Value::Null => {}
                    _ => return Err(self.err(a.file, a.offset, "`targets` must be a list of strings")),
                },
                "description" => g.description = v.as_string().unwrap_or_default(),
                other => {
                    return Err(self.err(
                        a.file,
                        a.offset,
                        format!("unsupported argument; an argument named `{other}` is not expected here"),
                    ));
                }
            }
        }
        Ok(g)
    }
}

impl Scope for Ctx<'_> {
    fn var(&self, name: &str) -> Result<Value, EvalError> {
        self.resolve_value(name)
    }

    fn is_block_kind(&self, kind: &str) -> bool {
        kind == "target" || kind == "group"
    }

    fn block_ref(&self, kind: &str, name: &str, attr: Option<&str>) -> Result<Value, EvalError> {
        self.ensure_instances()?;
        let idxs: Vec<usize> = {
            let inst = self.instances.borrow();
            inst.as_ref()
                .expect("computed")
                .iter()
                .enumerate()
                .filter(|(_, i)| i.block.kind == kind && i.name == name)
                .map(|(n, _)| n)
                .collect()
        };
        if idxs.is_empty() {
            return Err(EvalError::msg(format!(
                "unsupported attribute; this object does not have an attribute named `{name}`"
            )));
        }
        let valid: &[&str] = if kind == "target" { TARGET_ATTRS } else { &["targets", "description"] };
        let decode = |idx: usize, a: &str| -> Result<Value, EvalError> {
            if a == "name" {
                return Ok(Value::String(name.to_string()));
            }
            let raw = self.instance_attr(idx, a)?;
            if kind != "target" {
                return Ok(raw);
            }
            let mut t = Target::default();
            t.set_attr(a, &raw).map_err(|e| EvalError::msg(e.to_string()))?;
            Ok(t.attr_value(a))
        };
        let has = |idx: usize, a: &str| {
            let inst = self.instances.borrow();
            inst.as_ref().expect("computed")[idx].block.attr(a).is_some()
        };
        match attr {
            Some(a) => {
                if a != "name" && !valid.contains(&a) {
                    return Err(EvalError::msg(format!(
                        "unsupported attribute; this object does not have an attribute named `{a}`"
                    )));
                }
                let mut out = Value::Null;
                for &i in &idxs {
                    if a == "name" || has(i, a) {
                        out = decode(i, a)?;
                    }
                }
                Ok(out)
            }
            None => {
                let mut m = BTreeMap::new();
                m.insert("name".to_string(), Value::String(name.to_string()));
                for &i in &idxs {
                    for a in valid {
                        if has(i, a) {
                            m.insert(a.to_string(), decode(i, a)?);
                        }
                    }
                }
                Ok(Value::Map(m))
            }
        }
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, EvalError> {
        if let Some(f) = self.funcs.get(name) {
            return self.call_user(name, f, args);
        }
        match functions::call(name, args) {
            Some(r) => r.map_err(|e| EvalError::msg(format!("error in function `{name}`: {}", e.message))),
            None => Err(EvalError::msg(format!("call to unknown function; there is no function named `{name}`"))),
        }
    }
}

/// A `params = [a, b]` list.
fn keyword_list(e: &Expression) -> Option<Vec<String>> {
    match e {
        Expression::Array(a) => a.iter().map(keyword).collect(),
        _ => None,
    }
}

/// An identifier (or, from JSON, a string naming one).
fn keyword(e: &Expression) -> Option<String> {
    match e {
        Expression::Variable(v) => Some(v.as_str().to_string()),
        Expression::String(s) => Some(s.value().clone()),
        Expression::StringTemplate(t) => {
            let parts: Vec<_> = t.iter().collect();
            match parts.as_slice() {
                [hcl::edit::template::Element::Literal(l)] => Some(l.value().clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

/// `context = target.X.context`: the name X (buildx `targetContextRef`).
fn target_context_ref(e: &Expression) -> Option<String> {
    let Expression::Traversal(t) = e else { return None };
    let Expression::Variable(root) = &t.expr else { return None };
    if root.as_str() != "target" || t.operators.len() != 2 {
        return None;
    }
    let name = match t.operators[0].value() {
        TraversalOperator::GetAttr(a) => a.as_str().to_string(),
        TraversalOperator::Index(Expression::String(s)) => s.value().clone(),
        _ => return None,
    };
    match t.operators[1].value() {
        TraversalOperator::GetAttr(a) if a.as_str() == "context" => Some(name),
        _ => None,
    }
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

/// A type expression (`string`, `list(number)`, `object({a = string})`);
/// `Ok(None)` for `null` (untyped).
pub fn type_expr(e: &Expression) -> Result<Option<Type>, InvalidType> {
    fn go(e: &Expression) -> Result<Type, InvalidType> {
        match e {
            Expression::Variable(v) => match v.as_str() {
                "string" => Ok(Type::String),
                "number" => Ok(Type::Number),
                "bool" => Ok(Type::Bool),
                "any" => Ok(Type::Any),
                "list" | "map" | "set" => Err(InvalidType(format!("invalid type specification: the {} type constructor requires one argument specifying the element type", v.as_str()))),
                other => Err(InvalidType(format!("invalid type specification: the keyword `{other}` is not a valid type specification"))),
            },
            Expression::FuncCall(f) => {
                let name = f.name.name.as_str();
                let args: Vec<&Expression> = f.args.iter().collect();
                let one = || -> Result<Type, InvalidType> {
                    if args.len() != 1 {
                        return Err(InvalidType(format!("invalid type specification: the {name} type constructor requires one argument")));
                    }
                    go(args[0])
                };
                match name {
                    "list" => Ok(Type::List(Box::new(one()?))),
                    "set" => Ok(Type::Set(Box::new(one()?))),
                    "map" => Ok(Type::Map(Box::new(one()?))),
                    "tuple" => match args.as_slice() {
                        [Expression::Array(a)] => Ok(Type::Tuple(a.iter().map(go).collect::<Result<_, _>>()?)),
                        _ => Err(InvalidType("invalid type specification: the tuple type constructor requires a list of element types".into())),
                    },
                    "object" => match args.as_slice() {
                        [Expression::Object(o)] => {
                            let mut m = BTreeMap::new();
                            for (k, v) in o.iter() {
                                let key = match k {
                                    hcl::edit::expr::ObjectKey::Ident(i) => i.as_str().to_string(),
                                    hcl::edit::expr::ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
                                    hcl::edit::expr::ObjectKey::Expression(Expression::Variable(s)) => s.as_str().to_string(),
                                    _ => return Err(InvalidType("invalid type specification: object attribute names must be identifiers".into())),
                                };
                                m.insert(key, go(v.expr())?);
                            }
                            Ok(Type::Object(m))
                        }
                        _ => Err(InvalidType("invalid type specification: the object type constructor requires an object of attribute types".into())),
                    },
                    other => Err(InvalidType(format!("invalid type specification: keyword `{other}` is not a valid type constructor"))),
                }
            }
            _ => Err(InvalidType("invalid type specification: a type specification is either a primitive type keyword (bool, number, string) or a complex type constructor call, like list(string); this is not a valid type".into())),
        }
    }
    match e {
        Expression::Null(_) => Ok(None),
        other => go(other).map(Some),
    }
}

/// buildx `convertPrimitive`.
fn convert_primitive(name: &str, v: &str, t: &Type) -> Result<Value, ConvertError> {
    match t {
        Type::String => Ok(Value::String(v.to_string())),
        Type::Bool => super::entries::parse_go_bool(v).map(Value::Bool).ok_or_else(|| {
            ConvertError(format!("failed to parse {name} as bool: strconv.ParseBool: parsing {v:?}: invalid syntax"))
        }),
        Type::Number => value::parse_number(v)
            .map(Value::Number)
            .ok_or_else(|| ConvertError(format!("failed to parse {name} as number: invalid number value {v:?}"))),
        other => Err(ConvertError(format!("{name} of type {other} is not a primitive"))),
    }
}

/// buildx `valueFromCSV`.
fn csv_value(name: &str, v: &str, t: &Type) -> Result<Value, ConvertError> {
    let fields =
        functions::csv_fields(v).map_err(|e| ConvertError(format!("failed to parse {v} as CSV: {}", e.message)))?;
    match t {
        Type::List(et) | Type::Set(et) => {
            if !et.is_primitive() {
                return Err(ConvertError(format!("unsupported type {t} for CSV specification")));
            }
            let items = fields
                .iter()
                .map(|f| {
                    convert_primitive(name, f, et)
                        .map_err(|e| ConvertError(format!("failed to parse element of type {t}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Value::List(if matches!(t, Type::Set(_)) { value::set_of(items) } else { items }))
        }
        Type::Tuple(ts) => {
            if ts.len() != fields.len() {
                return Err(ConvertError(format!(
                    "{t} expects {} elements but only {} provided",
                    ts.len(),
                    fields.len()
                )));
            }
            let mut out = Vec::new();
            for (f, et) in fields.iter().zip(ts) {
                if !et.is_primitive() {
                    return Err(ConvertError(format!("unsupported type {t} for CSV specification")));
                }
                out.push(
                    convert_primitive(name, f, et)
                        .map_err(|e| ConvertError(format!("failed to parse element of type {t}: {e}")))?,
                );
            }
            Ok(Value::List(out))
        }
        Type::Map(et) => {
            if !et.is_primitive() {
                return Err(ConvertError(format!("unsupported type {t} for CSV specification")));
            }
            let mut m = BTreeMap::new();
            for f in fields {
                let kv: Vec<&str> = f.splitn(3, ':').collect();
                if kv.len() != 2 {
                    return Err(ConvertError(format!("expected one k/v pair but got {} pieces from {f}", kv.len())));
                }
                m.insert(
                    kv[0].to_string(),
                    convert_primitive(name, kv[1], et)
                        .map_err(|e| ConvertError(format!("failed to parse element from type {t}: {e}")))?,
                );
            }
            Ok(Value::Map(m))
        }
        other => Err(ConvertError(format!("unsupported type {other} for CSV specification"))),
    }
}

/// A variable's value as `--list variables` prints it.
fn variable_text(v: &Value, ty: Option<&Type>) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) if ty.is_none() || ty.is_some_and(Type::is_primitive) => v.as_string(),
        other => Some(serde_json::to_string(&other.to_json()).unwrap_or_default()),
    }
}
