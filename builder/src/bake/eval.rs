//! Evaluates HCL expressions and templates (the hcl-edit syntax tree) to
//! [`Value`]s.
//!
//! Names are looked up through a [`Scope`], which is how bake's lazy
//! semantics get in: a variable is computed the first time an expression
//! reads it, a `target.NAME.ATTR` reference evaluates just that attribute of
//! that target. `try` and `can` are evaluated here because their arguments
//! must not be evaluated up front.

use std::collections::BTreeMap;

use hcl::edit::expr::{BinaryOperator, Expression, ObjectKey, TraversalOperator, UnaryOperator};
use hcl::edit::template::{Directive, Element, Template};

use super::value::{self, Value};

/// Where an error points: a file (index into the parsed files) and a byte
/// offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// Index of the file in the set being parsed.
    pub file: usize,
    /// Byte offset of the offending construct.
    pub offset: usize,
}

/// An evaluation error, located where the failing expression starts.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct EvalError {
    /// The offending expression, if it came from a file with spans.
    pub loc: Option<Loc>,
    /// What went wrong.
    pub message: String,
}

impl EvalError {
    /// An error with no location yet.
    pub fn msg(message: impl Into<String>) -> Self {
        EvalError { loc: None, message: message.into() }
    }
}

/// What names mean while evaluating.
pub trait Scope {
    /// The value of variable `name`.
    fn var(&self, name: &str) -> Result<Value, EvalError>;
    /// `target.NAME.ATTR` (or `target.NAME` with `attr` `None`).
    fn block_ref(&self, kind: &str, name: &str, attr: Option<&str>) -> Result<Value, EvalError>;
    /// Whether `kind` is a block type that `kind.NAME.ATTR` refers to.
    fn is_block_kind(&self, kind: &str) -> bool;
    /// Calls function `name`.
    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, EvalError>;
}

/// A scope with some local names (matrix values, for-expression variables,
/// function parameters) in front of a parent scope.
pub struct Locals<'a> {
    /// Where other names are looked up.
    pub parent: &'a dyn Scope,
    /// The local names.
    pub vars: BTreeMap<String, Value>,
}

impl Scope for Locals<'_> {
    fn var(&self, name: &str) -> Result<Value, EvalError> {
        match self.vars.get(name) {
            Some(v) => Ok(v.clone()),
            None => self.parent.var(name),
        }
    }
    fn block_ref(&self, kind: &str, name: &str, attr: Option<&str>) -> Result<Value, EvalError> {
        self.parent.block_ref(kind, name, attr)
    }
    fn is_block_kind(&self, kind: &str) -> bool {
        !self.vars.contains_key(kind) && self.parent.is_block_kind(kind)
    }
    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, EvalError> {
        self.parent.call(name, args)
    }
}

/// Evaluates expressions of one file.
pub struct Evaluator<'a> {
    /// Names.
    pub scope: &'a dyn Scope,
    /// The file the expressions come from (for error locations).
    pub file: usize,
}

impl<'a> Evaluator<'a> {
    fn err(&self, e: &impl hcl::edit::Span, message: impl Into<String>) -> EvalError {
        EvalError { loc: e.span().map(|s| Loc { file: self.file, offset: s.start }), message: message.into() }
    }

    /// Fills in the location of an error that has none.
    fn locate(&self, e: &impl hcl::edit::Span, mut err: EvalError) -> EvalError {
        if err.loc.is_none() {
            err.loc = e.span().map(|s| Loc { file: self.file, offset: s.start });
        }
        err
    }

    fn with<'b>(&self, locals: &'b Locals<'b>) -> Evaluator<'b> {
        Evaluator { scope: locals, file: self.file }
    }

    /// Evaluates `expr`.
    pub fn eval(&self, expr: &Expression) -> Result<Value, EvalError> {
        match expr {
            Expression::Null(_) => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(*b.value())),
            Expression::Number(n) => Ok(Value::Number(n.value().as_f64().unwrap_or(0.0))),
            Expression::String(s) => Ok(Value::String(s.value().clone())),
            // Elements are all evaluated so that every error is reported, as
            // HCL collects diagnostics.
            Expression::Array(a) => {
                let mut out = Vec::new();
                let mut errs = Vec::new();
                for e in a.iter() {
                    match self.eval(e) {
                        Ok(v) => out.push(v),
                        Err(e) => errs.push(e),
                    }
                }
                combine(errs)?;
                Ok(Value::List(out))
            }
            Expression::Object(o) => {
                let mut m = BTreeMap::new();
                let mut errs = Vec::new();
                for (k, v) in o.iter() {
                    let key = match k {
                        ObjectKey::Ident(i) => i.as_str().to_string(),
                        ObjectKey::Expression(e) => {
                            let kv = self.eval(e)?;
                            kv.as_string().ok_or_else(|| self.err(e, "object key must be a string"))?
                        }
                    };
                    match self.eval(v.expr()) {
                        Ok(x) => {
                            m.insert(key, x);
                        }
                        Err(e) => errs.push(e),
                    }
                }
                combine(errs)?;
                Ok(Value::Map(m))
            }
            Expression::StringTemplate(t) => {
                let t: Template = t.clone().into();
                self.template(&t, true)
            }
            Expression::HeredocTemplate(h) => {
                let mut h = (**h).clone();
                h.dedent();
                self.template(&h.template, true)
            }
            Expression::Parenthesis(p) => self.eval(p.inner()),
            Expression::Variable(v) => self.scope.var(v.as_str()).map_err(|e| self.locate(expr, e)),
            Expression::Conditional(c) => {
                let cond = self.eval(&c.cond_expr)?;
                match value::convert(&cond, &value::Type::Bool) {
                    Ok(Value::Bool(true)) => self.eval(&c.true_expr),
                    Ok(Value::Bool(false)) => self.eval(&c.false_expr),
                    Ok(_) => {
                        Err(self
                            .err(&c.cond_expr, "the condition value is null; conditions must either be true or false"))
                    }
                    Err(_) => Err(self.err(&c.cond_expr, format!("the condition must be a bool, not {}", cond.kind()))),
                }
            }
            Expression::FuncCall(f) => self.func_call(expr, f),
            Expression::Traversal(t) => self.traversal(expr, t),
            Expression::UnaryOp(u) => {
                let v = self.eval(&u.expr)?;
                match u.operator.value() {
                    UnaryOperator::Neg => match value::convert(&v, &value::Type::Number) {
                        Ok(Value::Number(n)) => Ok(Value::Number(-n)),
                        _ => Err(self.err(expr, "unsuitable value for unary operand: a number is required")),
                    },
                    UnaryOperator::Not => match value::convert(&v, &value::Type::Bool) {
                        Ok(Value::Bool(b)) => Ok(Value::Bool(!b)),
                        _ => Err(self.err(expr, "unsuitable value for unary operand: a bool is required")),
                    },
                }
            }
            Expression::BinaryOp(b) => self.binary(b),
            Expression::ForExpr(f) => self.for_expr(f),
        }
    }

    fn func_call(&self, expr: &Expression, f: &hcl::edit::expr::FuncCall) -> Result<Value, EvalError> {
        let mut name = f.name.name.as_str().to_string();
        if f.name.is_namespaced() {
            let ns: Vec<&str> = f.name.namespace.iter().map(|n| n.as_str()).collect();
            name = format!("{}::{name}", ns.join("::"));
        }
        match name.as_str() {
            "try" => {
                let mut last = None;
                for a in f.args.iter() {
                    match self.eval(a) {
                        Ok(v) => return Ok(v),
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.unwrap_or_else(|| self.err(expr, "`try` needs at least one argument")));
            }
            "convert" => {
                let args: Vec<&Expression> = f.args.iter().collect();
                let [value_expr, type_expr] = args.as_slice() else {
                    return Err(self.err(expr, "`convert` takes a value and a type"));
                };
                let v = self.eval(value_expr)?;
                let ty = super::vartypes::type_expr(type_expr)
                    .map_err(|e| self.err(*type_expr, e.to_string()))?
                    .unwrap_or(value::Type::Any);
                return value::convert(&v, &ty)
                    .map_err(|e| self.err(*value_expr, format!("invalid value for `convert`: {e}")));
            }
            "can" => {
                if f.args.len() != 1 {
                    return Err(self.err(expr, "`can` takes exactly one argument"));
                }
                return Ok(Value::Bool(self.eval(f.args.iter().next().expect("one argument")).is_ok()));
            }
            _ => {}
        }
        let mut args = Vec::with_capacity(f.args.len());
        for a in f.args.iter() {
            args.push(self.eval(a)?);
        }
        if f.args.expand_final() {
            match args.pop() {
                Some(Value::List(items)) => args.extend(items),
                Some(Value::Null) | None => return Err(self.err(expr, "the final argument to expand must not be null")),
                Some(_) => return Err(self.err(expr, "the final argument to expand must be a list or tuple")),
            }
        }
        self.scope.call(&name, args).map_err(|e| self.locate(expr, e))
    }

    fn traversal(&self, expr: &Expression, t: &hcl::edit::expr::Traversal) -> Result<Value, EvalError> {
        let ops: Vec<&TraversalOperator> = t.operators.iter().map(|o| o.value()).collect();
        // `target.NAME.ATTR`: only that attribute of that block is evaluated,
        // so targets may read each other's attributes without a cycle.
        if let Expression::Variable(root) = &t.expr
            && self.scope.is_block_kind(root.as_str())
        {
            let kind = root.as_str();
            let Some(first) = ops.first() else {
                return Err(self.err(expr, format!("cannot access {kind} as a variable")));
            };
            let name = match first {
                TraversalOperator::GetAttr(a) => a.as_str().to_string(),
                TraversalOperator::Index(e) => self
                    .eval(e)?
                    .as_string()
                    .ok_or_else(|| self.err(e, format!("cannot traverse {kind} without attribute")))?,
                _ => return Err(self.err(expr, format!("cannot traverse {kind} without attribute"))),
            };
            let (attr, rest) = match ops.get(1) {
                Some(TraversalOperator::GetAttr(a)) => (Some(a.as_str()), &ops[2..]),
                _ => (None, &ops[1..]),
            };
            let base = self.scope.block_ref(kind, &name, attr).map_err(|e| self.locate(expr, e))?;
            return self.apply_ops(expr, base, rest);
        }
        let base = self.eval(&t.expr)?;
        self.apply_ops(expr, base, &ops)
    }

    fn apply_ops(&self, expr: &Expression, mut v: Value, ops: &[&TraversalOperator]) -> Result<Value, EvalError> {
        for (i, op) in ops.iter().enumerate() {
            match op {
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    let items = match v {
                        Value::Null => Vec::new(),
                        Value::List(items) => items,
                        other => vec![other],
                    };
                    let rest = &ops[i + 1..];
                    let out = items.into_iter().map(|it| self.apply_ops(expr, it, rest)).collect::<Result<_, _>>()?;
                    return Ok(Value::List(out));
                }
                TraversalOperator::GetAttr(name) => v = self.get_attr(expr, v, name.as_str())?,
                TraversalOperator::Index(e) => {
                    let key = self.eval(e)?;
                    v = self.index(expr, v, &key)?;
                }
                TraversalOperator::LegacyIndex(n) => v = self.index(expr, v, &Value::Number(*n.value() as f64))?,
            }
        }
        Ok(v)
    }

    fn get_attr(&self, expr: &Expression, v: Value, name: &str) -> Result<Value, EvalError> {
        match v {
            Value::Map(mut m) => m.remove(name).ok_or_else(|| {
                self.err(expr, format!("unsupported attribute: this object does not have an attribute named `{name}`"))
            }),
            Value::Null => Err(self.err(expr, format!("attempt to get attribute `{name}` from a null value"))),
            other => {
                Err(self.err(expr, format!("unsupported attribute `{name}`: a {} has no attributes", other.kind())))
            }
        }
    }

    fn index(&self, expr: &Expression, v: Value, key: &Value) -> Result<Value, EvalError> {
        match v {
            Value::List(mut items) => {
                let n = match value::convert(key, &value::Type::Number) {
                    Ok(Value::Number(n)) if n.fract() == 0.0 && n >= 0.0 => n as usize,
                    _ => return Err(self.err(expr, "invalid index: a whole number is required")),
                };
                if n >= items.len() {
                    return Err(self.err(expr, format!("invalid index: the given key does not identify an element in this collection value (index {n}, length {})", items.len())));
                }
                Ok(items.swap_remove(n))
            }
            Value::Map(mut m) => {
                let k = key.as_string().ok_or_else(|| self.err(expr, "invalid index: a string key is required"))?;
                m.remove(&k).ok_or_else(|| {
                    self.err(
                        expr,
                        format!(
                            "invalid index: the given key `{k}` does not identify an element in this collection value"
                        ),
                    )
                })
            }
            Value::Null => Err(self.err(expr, "attempt to index a null value")),
            other => Err(self.err(expr, format!("invalid index: a {} cannot be indexed", other.kind()))),
        }
    }

    fn binary(&self, b: &hcl::edit::expr::BinaryOp) -> Result<Value, EvalError> {
        let op = *b.operator.value();
        let l = self.eval(&b.lhs_expr)?;
        // `&&`/`||` still evaluate both sides in HCL; keep that.
        let r = self.eval(&b.rhs_expr)?;
        let num =
            |v: &Value, side: &Expression| match value::convert(v, &value::Type::Number) {
                Ok(Value::Number(n)) => Ok(n),
                _ => Err(self
                    .err(side, format!("unsuitable value for `{op}` operand: a number is required, not {}", v.kind()))),
            };
        let boolean =
            |v: &Value, side: &Expression| match value::convert(v, &value::Type::Bool) {
                Ok(Value::Bool(x)) => Ok(x),
                _ => Err(self
                    .err(side, format!("unsuitable value for `{op}` operand: a bool is required, not {}", v.kind()))),
            };
        Ok(match op {
            BinaryOperator::Eq => Value::Bool(values_equal(&l, &r)),
            BinaryOperator::NotEq => Value::Bool(!values_equal(&l, &r)),
            BinaryOperator::And => Value::Bool(boolean(&l, &b.lhs_expr)? && boolean(&r, &b.rhs_expr)?),
            BinaryOperator::Or => Value::Bool(boolean(&l, &b.lhs_expr)? || boolean(&r, &b.rhs_expr)?),
            BinaryOperator::Less => Value::Bool(num(&l, &b.lhs_expr)? < num(&r, &b.rhs_expr)?),
            BinaryOperator::LessEq => Value::Bool(num(&l, &b.lhs_expr)? <= num(&r, &b.rhs_expr)?),
            BinaryOperator::Greater => Value::Bool(num(&l, &b.lhs_expr)? > num(&r, &b.rhs_expr)?),
            BinaryOperator::GreaterEq => Value::Bool(num(&l, &b.lhs_expr)? >= num(&r, &b.rhs_expr)?),
            BinaryOperator::Plus => Value::Number(num(&l, &b.lhs_expr)? + num(&r, &b.rhs_expr)?),
            BinaryOperator::Minus => Value::Number(num(&l, &b.lhs_expr)? - num(&r, &b.rhs_expr)?),
            BinaryOperator::Mul => Value::Number(num(&l, &b.lhs_expr)? * num(&r, &b.rhs_expr)?),
            BinaryOperator::Div => {
                let d = num(&r, &b.rhs_expr)?;
                if d == 0.0 {
                    return Err(self.err(&b.rhs_expr, "divide by zero"));
                }
                Value::Number(num(&l, &b.lhs_expr)? / d)
            }
            BinaryOperator::Mod => {
                let d = num(&r, &b.rhs_expr)?;
                if d == 0.0 {
                    return Err(self.err(&b.rhs_expr, "divide by zero"));
                }
                Value::Number(num(&l, &b.lhs_expr)? % d)
            }
        })
    }

    fn for_expr(&self, f: &hcl::edit::expr::ForExpr) -> Result<Value, EvalError> {
        let coll = self.eval(&f.intro.collection_expr)?;
        let items: Vec<(Value, Value)> = match coll {
            Value::List(items) => items.into_iter().enumerate().map(|(i, v)| (Value::Number(i as f64), v)).collect(),
            Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            Value::Null => return Err(self.err(&f.intro.collection_expr, "iteration over a null value")),
            other => return Err(self.err(&f.intro.collection_expr, format!("a {} cannot be iterated", other.kind()))),
        };
        let mut list = Vec::new();
        let mut map: BTreeMap<String, Value> = BTreeMap::new();
        let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (k, v) in items {
            let mut vars = BTreeMap::new();
            if let Some(kv) = &f.intro.key_var {
                vars.insert(kv.as_str().to_string(), k);
            }
            vars.insert(f.intro.value_var.as_str().to_string(), v);
            let locals = Locals { parent: self.scope, vars };
            let ev = self.with(&locals);
            if let Some(c) = &f.cond {
                match value::convert(&ev.eval(&c.expr)?, &value::Type::Bool) {
                    Ok(Value::Bool(true)) => {}
                    Ok(Value::Bool(false)) => continue,
                    _ => return Err(self.err(&c.expr, "the for-expression condition must be a bool")),
                }
            }
            let val = ev.eval(&f.value_expr)?;
            match &f.key_expr {
                None => list.push(val),
                Some(ke) => {
                    let key =
                        ev.eval(ke)?.as_string().ok_or_else(|| self.err(ke, "for-expression key must be a string"))?;
                    if f.grouping {
                        groups.entry(key).or_default().push(val);
                    } else {
                        match map.entry(key) {
                            std::collections::btree_map::Entry::Occupied(o) => {
                                return Err(self.err(
                                    ke,
                                    format!(
                                        "duplicate object key `{}`; use `...` after the value to group values by key",
                                        o.key()
                                    ),
                                ));
                            }
                            std::collections::btree_map::Entry::Vacant(v) => {
                                v.insert(val);
                            }
                        }
                    }
                }
            }
        }
        Ok(match &f.key_expr {
            None => Value::List(list),
            Some(_) if f.grouping => Value::Map(groups.into_iter().map(|(k, v)| (k, Value::List(v))).collect()),
            Some(_) => Value::Map(map),
        })
    }

    /// Evaluates a template. A template that is exactly one interpolation
    /// yields the interpolated value unconverted, as in HCL.
    pub fn template(&self, t: &Template, top: bool) -> Result<Value, EvalError> {
        let elements: Vec<&Element> = t.iter().collect();
        if top
            && elements.len() == 1
            && let Element::Interpolation(i) = elements[0]
        {
            return self.eval(&i.expr);
        }
        Ok(Value::String(self.template_text(t, false, false)?))
    }

    /// A template's text. `trim_start`/`trim_end` come from the strip
    /// markers of an enclosing directive (`%{ for x in y ~}` ... `%{~ endfor }`).
    fn template_text(&self, t: &Template, trim_start: bool, trim_end: bool) -> Result<String, EvalError> {
        let elements: Vec<&Element> = t.iter().collect();
        let mut out = String::new();
        // Strip markers trim the whitespace of the neighbouring literals.
        let mut strip_next = trim_start;
        for (idx, el) in elements.iter().enumerate() {
            let strip_before_next = |i: usize| -> bool {
                match elements.get(i + 1) {
                    Some(Element::Interpolation(n)) => n.strip.strip_start(),
                    Some(Element::Directive(d)) => match &**d {
                        Directive::If(d) => d.if_expr.strip.strip_start(),
                        Directive::For(d) => d.for_expr.strip.strip_start(),
                    },
                    _ => false,
                }
            };
            match el {
                Element::Literal(s) => {
                    let mut text: &str = s.value();
                    if strip_next {
                        text = text.trim_start();
                    }
                    if strip_before_next(idx) || (trim_end && idx + 1 == elements.len()) {
                        text = text.trim_end();
                    }
                    out.push_str(text);
                    strip_next = false;
                }
                Element::Interpolation(i) => {
                    let v = self.eval(&i.expr)?;
                    out.push_str(&self.interpolate(&i.expr, &v)?);
                    strip_next = i.strip.strip_end();
                }
                Element::Directive(dir) if matches!(**dir, Directive::If(_)) => {
                    let Directive::If(d) = &**dir else { unreachable!("matched") };
                    let cond = self.eval(&d.if_expr.cond_expr)?;
                    let branch = match value::convert(&cond, &value::Type::Bool) {
                        Ok(Value::Bool(b)) => b,
                        _ => return Err(self.err(&d.if_expr.cond_expr, "the `%{if}` condition must be a bool")),
                    };
                    let endif_start = d.endif_expr.strip.strip_start();
                    if branch {
                        let end = match &d.else_expr {
                            Some(e) => e.strip.strip_start(),
                            None => endif_start,
                        };
                        out.push_str(&self.template_text(&d.if_expr.template, d.if_expr.strip.strip_end(), end)?);
                    } else if let Some(e) = &d.else_expr {
                        out.push_str(&self.template_text(&e.template, e.strip.strip_end(), endif_start)?);
                    }
                    strip_next = d.endif_expr.strip.strip_end();
                }
                Element::Directive(dir) => {
                    let Directive::For(d) = &**dir else { unreachable!("if handled above") };
                    let fe = &d.for_expr;
                    let coll = self.eval(&fe.collection_expr)?;
                    let items: Vec<(Value, Value)> = match coll {
                        Value::List(items) => {
                            items.into_iter().enumerate().map(|(i, v)| (Value::Number(i as f64), v)).collect()
                        }
                        Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
                        other => {
                            return Err(self.err(&fe.collection_expr, format!("a {} cannot be iterated", other.kind())));
                        }
                    };
                    for (k, v) in items {
                        let mut vars = BTreeMap::new();
                        if let Some(kv) = &fe.key_var {
                            vars.insert(kv.as_str().to_string(), k);
                        }
                        vars.insert(fe.value_var.as_str().to_string(), v);
                        let locals = Locals { parent: self.scope, vars };
                        out.push_str(&self.with(&locals).template_text(
                            &fe.template,
                            fe.strip.strip_end(),
                            d.endfor_expr.strip.strip_start(),
                        )?);
                    }
                    strip_next = d.endfor_expr.strip.strip_end();
                }
            }
        }
        Ok(out)
    }

    fn interpolate(&self, e: &Expression, v: &Value) -> Result<String, EvalError> {
        match v {
            Value::Null => Err(self.err(e, "invalid template interpolation value: the expression result is null")),
            Value::List(_) | Value::Map(_) => Err(self.err(
                e,
                format!("invalid template interpolation value: cannot include a {} in a string template", v.kind()),
            )),
            other => Ok(other.as_string().unwrap_or_default()),
        }
    }
}

/// Several errors as one, located at the first.
fn combine(errs: Vec<EvalError>) -> Result<(), EvalError> {
    let mut it = errs.into_iter();
    let Some(mut first) = it.next() else { return Ok(()) };
    for e in it {
        first.message.push_str("; ");
        first.message.push_str(&e.message);
    }
    Err(first)
}

/// HCL's `==`: deep equality where a number never equals a string.
pub fn values_equal(a: &Value, b: &Value) -> bool {
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scope with a few variables and the built-in functions.
    struct TestScope(BTreeMap<String, Value>);

    impl Scope for TestScope {
        fn var(&self, name: &str) -> Result<Value, EvalError> {
            self.0.get(name).cloned().ok_or_else(|| EvalError::msg(format!("unknown variable `{name}`")))
        }
        fn block_ref(&self, _: &str, _: &str, _: Option<&str>) -> Result<Value, EvalError> {
            Err(EvalError::msg("no blocks"))
        }
        fn is_block_kind(&self, _: &str) -> bool {
            false
        }
        fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, EvalError> {
            super::super::functions::call(name, args).unwrap_or_else(|| Err(EvalError::msg("unknown function")))
        }
    }

    fn eval(src: &str) -> Result<Value, EvalError> {
        let scope = TestScope(BTreeMap::from([
            ("list".to_string(), Value::List(vec![Value::String("a".into()), Value::String("b".into())])),
            ("obj".to_string(), Value::Map(BTreeMap::from([("k".to_string(), Value::Number(1.0))]))),
            (
                "items".to_string(),
                Value::List(vec![Value::Map(BTreeMap::from([("n".to_string(), Value::String("x".into()))]))]),
            ),
        ]));
        let expr = hcl::edit::parser::parse_expr(src).expect("parses");
        Evaluator { scope: &scope, file: 0 }.eval(&expr)
    }

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn single_interpolation_keeps_the_value() {
        assert_eq!(eval(r#""${list}""#).unwrap(), eval("list").unwrap());
        assert_eq!(eval(r#""x-${obj.k}""#).unwrap(), s("x-1"));
    }

    #[test]
    fn operators_and_conditionals() {
        assert_eq!(eval("1 + 2 * 3").unwrap(), Value::Number(7.0));
        assert_eq!(eval(r#""2" + 1"#).unwrap(), Value::Number(3.0));
        assert_eq!(eval("1 == \"1\"").unwrap(), Value::Bool(false));
        assert_eq!(eval("!(1 > 2) && true ? \"y\" : \"n\"").unwrap(), s("y"));
        assert!(eval("null ? 1 : 2").is_err());
        assert!(eval("1 / 0").is_err());
    }

    #[test]
    fn for_expressions_and_splats() {
        assert_eq!(eval("[for i, v in list : \"${i}${v}\"]").unwrap(), Value::List(vec![s("0a"), s("1b")]));
        assert_eq!(
            eval("{for v in list : v => upper(v) if v != \"a\"}").unwrap(),
            Value::Map(BTreeMap::from([("b".into(), s("B"))]))
        );
        assert_eq!(
            eval("{for v in [\"a\", \"a\"] : v => 1...}").unwrap(),
            Value::Map(BTreeMap::from([("a".into(), Value::List(vec![Value::Number(1.0); 2]))]))
        );
        assert!(eval("{for v in [\"a\", \"a\"] : v => 1}").is_err());
        assert_eq!(eval("items[*].n").unwrap(), Value::List(vec![s("x")]));
        assert_eq!(eval("items.*.n").unwrap(), Value::List(vec![s("x")]));
        assert_eq!(eval("list[1]").unwrap(), s("b"));
        assert!(eval("list[5]").is_err());
    }

    #[test]
    fn template_directives_and_strip_markers() {
        assert_eq!(eval(r#""%{ if length(list) > 1 }many%{ else }one%{ endif }""#).unwrap(), s("many"));
        assert_eq!(eval(r#""%{ for v in list ~} ${v} %{~ endfor }""#).unwrap(), s("ab"));
        assert_eq!(eval(r#""a ${"b"} c""#).unwrap(), s("a b c"));
        assert_eq!(eval(r#""a ${~ "b" ~} c""#).unwrap(), s("abc"));
        assert_eq!(eval(r#""$${literal}""#).unwrap(), s("${literal}"));
    }

    #[test]
    fn try_can_and_expansion() {
        assert_eq!(eval("try(nope, \"fallback\")").unwrap(), s("fallback"));
        assert_eq!(eval("can(nope)").unwrap(), Value::Bool(false));
        assert_eq!(eval("max([3, 9, 4]...)").unwrap(), Value::Number(9.0));
        assert_eq!(eval("convert(1, string)").unwrap(), s("1"));
        assert_eq!(eval("convert([\"b\", \"a\", \"b\"], set(string))").unwrap(), Value::List(vec![s("a"), s("b")]));
        assert!(eval("convert(\"x\", number)").is_err());
    }

    #[test]
    fn interpolating_a_list_or_null_is_an_error() {
        assert!(eval(r#""x${list}""#).is_err());
        assert!(eval(r#""x${null}""#).is_err());
    }
}
