//! Evaluating the merged bake syntax with buildx's semantics: every
//! `variable` resolved lazily (defaults, types, environment overrides,
//! `validation`), user `function` blocks, `matrix`/`name` expansion,
//! `target.NAME.ATTR` references (only that attribute is evaluated, with
//! cycle errors), and each target/group block decoded; same-name targets
//! merge. Hostile files are bounded (evaluation depth, matrix size).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use hcl::edit::Span as _;
use hcl::edit::expr::{Expression, TraversalOperator};

use super::error::{BakeError, SourceText, from_eval};
use super::eval::{EvalError, Evaluator, Loc, Locals, Scope};
use super::functions;
use super::parse::{
    BLOCK_KINDS, Config, ParseOptions, SAttr, SBlock, SBody, VariableInfo, local_file_dir, valid_label,
};
use super::target::{Group, TARGET_ATTRS, Target};
use super::value::{self, Type, Value};
use super::vartypes::{convert_primitive, csv_value, type_expr, variable_text};

/// Evaluates `body` (all files merged) into `config`.
pub(super) fn evaluate(
    body: &SBody,
    files: &[SourceText],
    opts: &ParseOptions,
    config: &mut Config,
) -> Result<(), BakeError> {
    Ctx::new(body, files, opts).run(config)
}

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
