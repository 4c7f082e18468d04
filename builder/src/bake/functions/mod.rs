//! buildx's bake function library: the go-cty stdlib functions buildx
//! registers (`bake/hclparser/stdlib.go`) plus its own (`timestamp`,
//! `formattimestamp`, `sanitize`, `semvercmp`, `homedir`, `indexof`,
//! `basename`, `dirname`, `unixtimestampparse`). `try` and `can` live in the
//! evaluator because their arguments are evaluated lazily.
//!
//! `convert` is in the evaluator too (its second argument is a type, not a
//! value). `rsadecrypt` is in [`crypto`] (with why the `rsa` crate's timing
//! advisory does not matter here). `byteslen` and `bytesslice` take cty's
//! `bytes` capsule type, which no function buildx registers produces and no
//! literal has, so in buildx every call fails argument conversion; rbuild
//! gives the same outcome with cty's message rather than an "unknown
//! function" error.

mod crypto;
mod net;
mod semver;
mod text;
mod time;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::eval::EvalError;
use super::value::{self, Type, Value, set_of};
use net::{cidr, ip_string};
use semver::semver_check;
use text::{captures_value, format_go, path_base, path_dir, regex, title, urlencode};
pub use text::{clean_path, csv_fields};
use time::{formatdate, parse_go_duration, parse_rfc3339};

type R = Result<Value, EvalError>;

/// Largest padding `format` and `indent` produce: a hostile file must not
/// make one call allocate gigabytes.
const MAX_PAD: f64 = 4096.0;

fn e(msg: impl Into<String>) -> EvalError {
    EvalError::msg(msg)
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), EvalError> {
    if args.len() != n {
        return Err(e(format!("function `{name}` takes {n} argument(s), {} given", args.len())));
    }
    Ok(())
}

fn s(args: &[Value], i: usize) -> Result<String, EvalError> {
    match args.get(i) {
        Some(Value::Null) => Err(e(format!("argument {} must not be null", i + 1))),
        Some(v) => {
            v.as_string().ok_or_else(|| e(format!("argument {}: a string is required, not {}", i + 1, v.kind())))
        }
        None => Err(e("missing argument")),
    }
}

fn n(args: &[Value], i: usize) -> Result<f64, EvalError> {
    match args.get(i).map(|v| value::convert(v, &Type::Number)) {
        Some(Ok(Value::Number(x))) => Ok(x),
        Some(Ok(_)) => Err(e(format!("argument {} must not be null", i + 1))),
        _ => Err(e(format!("argument {}: a number is required", i + 1))),
    }
}

fn b(args: &[Value], i: usize) -> Result<bool, EvalError> {
    match args.get(i).map(|v| value::convert(v, &Type::Bool)) {
        Some(Ok(Value::Bool(x))) => Ok(x),
        _ => Err(e(format!("argument {}: a bool is required", i + 1))),
    }
}

fn l(args: &[Value], i: usize) -> Result<Vec<Value>, EvalError> {
    match args.get(i) {
        Some(Value::List(items)) => Ok(items.clone()),
        Some(v) => Err(e(format!("argument {}: a list is required, not {}", i + 1, v.kind()))),
        None => Err(e("missing argument")),
    }
}

fn m(args: &[Value], i: usize) -> Result<BTreeMap<String, Value>, EvalError> {
    match args.get(i) {
        Some(Value::Map(items)) => Ok(items.clone()),
        Some(v) => Err(e(format!("argument {}: a map is required, not {}", i + 1, v.kind()))),
        None => Err(e("missing argument")),
    }
}

fn str_list(v: Vec<Value>) -> Result<Vec<String>, EvalError> {
    v.iter().map(|x| x.as_string().ok_or_else(|| e("a list of strings is required"))).collect()
}

fn strs(v: Vec<String>) -> Value {
    Value::List(v.into_iter().map(Value::String).collect())
}

/// Calls the built-in function `name`; `None` when there is no such function.
pub fn call(name: &str, args: Vec<Value>) -> Option<R> {
    let a = &args;
    let r = match name {
        "absolute" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Number(n(a, 0)?.abs()))
        })(),
        "add" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Number(n(a, 0)? + n(a, 1)?))
        })(),
        "subtract" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Number(n(a, 0)? - n(a, 1)?))
        })(),
        "multiply" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Number(n(a, 0)? * n(a, 1)?))
        })(),
        "divide" => (|| {
            arity(name, a, 2)?;
            let d = n(a, 1)?;
            if d == 0.0 {
                return Err(e("divide by zero"));
            }
            Ok(Value::Number(n(a, 0)? / d))
        })(),
        "modulo" => (|| {
            arity(name, a, 2)?;
            let d = n(a, 1)?;
            if d == 0.0 {
                return Err(e("divide by zero"));
            }
            Ok(Value::Number(n(a, 0)? % d))
        })(),
        "negate" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Number(-n(a, 0)?))
        })(),
        "signum" => (|| {
            arity(name, a, 1)?;
            let x = n(a, 0)?;
            Ok(Value::Number(if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }))
        })(),
        "ceil" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Number(n(a, 0)?.ceil()))
        })(),
        "floor" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Number(n(a, 0)?.floor()))
        })(),
        "int" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Number(n(a, 0)?.trunc()))
        })(),
        "log" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Number(n(a, 0)?.ln() / n(a, 1)?.ln()))
        })(),
        "pow" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Number(n(a, 0)?.powf(n(a, 1)?)))
        })(),
        "max" | "min" => (|| {
            if a.is_empty() {
                return Err(e(format!("`{name}` needs at least one argument")));
            }
            let mut best = n(a, 0)?;
            for i in 1..a.len() {
                let x = n(a, i)?;
                best = if name == "max" { best.max(x) } else { best.min(x) };
            }
            Ok(Value::Number(best))
        })(),
        "parseint" => (|| {
            arity(name, a, 2)?;
            let text = s(a, 0)?;
            let base = n(a, 1)? as u32;
            if !(2..=62).contains(&base) {
                return Err(e("base must be a whole number between 2 and 62 inclusive"));
            }
            let (neg, digits) = match text.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, text.strip_prefix('+').unwrap_or(&text)),
            };
            let v = i128::from_str_radix(digits, base.min(36))
                .map_err(|_| e(format!("cannot parse {text:?} as a base {base} integer")))?;
            Ok(Value::Number(if neg { -(v as f64) } else { v as f64 }))
        })(),
        "greaterthan" | "greaterthanorequalto" | "lessthan" | "lessthanorequalto" => (|| {
            arity(name, a, 2)?;
            let (x, y) = (n(a, 0)?, n(a, 1)?);
            Ok(Value::Bool(match name {
                "greaterthan" => x > y,
                "greaterthanorequalto" => x >= y,
                "lessthan" => x < y,
                _ => x <= y,
            }))
        })(),
        "equal" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(a[0] == a[1]))
        })(),
        "notequal" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(a[0] != a[1]))
        })(),
        "and" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(b(a, 0)? && b(a, 1)?))
        })(),
        "or" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(b(a, 0)? || b(a, 1)?))
        })(),
        "not" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Bool(!b(a, 0)?))
        })(),
        "upper" => unary_str(name, a, |x| x.to_uppercase()),
        "lower" => unary_str(name, a, |x| x.to_lowercase()),
        "title" => unary_str(name, a, title),
        "trimspace" => unary_str(name, a, |x| x.trim().to_string()),
        "chomp" => unary_str(name, a, |x| x.trim_end_matches(['\n', '\r']).to_string()),
        "reverse" => unary_str(name, a, |x| x.chars().rev().collect()),
        "sanitize" => unary_str(name, a, |x| {
            x.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
        }),
        "basename" => unary_str(name, a, |x| path_base(&x)),
        "dirname" => unary_str(name, a, |x| path_dir(&x)),
        "urlencode" => unary_str(name, a, |x| urlencode(&x)),
        "strlen" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Number(s(a, 0)?.chars().count() as f64))
        })(),
        "trim" => (|| {
            arity(name, a, 2)?;
            let cut: Vec<char> = s(a, 1)?.chars().collect();
            Ok(Value::String(s(a, 0)?.trim_matches(|c| cut.contains(&c)).to_string()))
        })(),
        "trimprefix" => (|| {
            arity(name, a, 2)?;
            let (x, p) = (s(a, 0)?, s(a, 1)?);
            Ok(Value::String(x.strip_prefix(p.as_str()).unwrap_or(&x).to_string()))
        })(),
        "trimsuffix" => (|| {
            arity(name, a, 2)?;
            let (x, p) = (s(a, 0)?, s(a, 1)?);
            Ok(Value::String(x.strip_suffix(p.as_str()).unwrap_or(&x).to_string()))
        })(),
        "indent" => (|| {
            arity(name, a, 2)?;
            let width = n(a, 0)?;
            if !(0.0..=MAX_PAD).contains(&width) {
                return Err(e(format!("indent must be between 0 and {MAX_PAD}")));
            }
            let pad = " ".repeat(width as usize);
            let text = s(a, 1)?;
            Ok(Value::String(text.split('\n').collect::<Vec<_>>().join(&format!("\n{pad}"))))
        })(),
        "replace" => (|| {
            arity(name, a, 3)?;
            Ok(Value::String(s(a, 0)?.replace(&s(a, 1)?, &s(a, 2)?)))
        })(),
        "substr" => (|| {
            arity(name, a, 3)?;
            let chars: Vec<char> = s(a, 0)?.chars().collect();
            let len = chars.len() as i64;
            let mut off = n(a, 1)? as i64;
            let mut cnt = n(a, 2)? as i64;
            if off < 0 {
                off += len;
            }
            if off < 0 || off > len {
                return Ok(Value::String(String::new()));
            }
            if cnt < 0 || off + cnt > len {
                cnt = len - off;
            }
            Ok(Value::String(chars[off as usize..(off + cnt) as usize].iter().collect()))
        })(),
        "split" => (|| {
            arity(name, a, 2)?;
            let (sep, text) = (s(a, 0)?, s(a, 1)?);
            Ok(strs(text.split(sep.as_str()).map(str::to_string).collect()))
        })(),
        "join" => (|| {
            if a.len() < 2 {
                return Err(e("`join` takes a separator and at least one list"));
            }
            let sep = s(a, 0)?;
            let mut parts = Vec::new();
            for i in 1..a.len() {
                for v in l(a, i)? {
                    parts.push(v.as_string().ok_or_else(|| e("`join` needs lists of strings"))?);
                }
            }
            Ok(Value::String(parts.join(&sep)))
        })(),
        "format" => (|| {
            if a.is_empty() {
                return Err(e("`format` needs a format string"));
            }
            Ok(Value::String(format_go(&s(a, 0)?, &a[1..])?))
        })(),
        "formatlist" => (|| {
            if a.is_empty() {
                return Err(e("`formatlist` needs a format string"));
            }
            let fmt = s(a, 0)?;
            let len = a[1..].iter().filter_map(|v| if let Value::List(x) = v { Some(x.len()) } else { None }).max();
            let Some(len) = len else { return Ok(Value::List(vec![Value::String(format_go(&fmt, &a[1..])?)])) };
            let mut out = Vec::new();
            for i in 0..len {
                let row: Vec<Value> = a[1..]
                    .iter()
                    .map(|v| match v {
                        Value::List(x) => {
                            x.get(i).cloned().ok_or_else(|| e("all list arguments must have the same length"))
                        }
                        other => Ok(other.clone()),
                    })
                    .collect::<Result<_, _>>()?;
                out.push(Value::String(format_go(&fmt, &row)?));
            }
            Ok(Value::List(out))
        })(),
        "regex" => (|| {
            arity(name, a, 2)?;
            let re = regex(&s(a, 0)?)?;
            let text = s(a, 1)?;
            let caps = re.captures(&text).ok_or_else(|| e("pattern did not match any part of the given string"))?;
            Ok(captures_value(&re, &caps))
        })(),
        "regexall" => (|| {
            arity(name, a, 2)?;
            let re = regex(&s(a, 0)?)?;
            let text = s(a, 1)?;
            Ok(Value::List(re.captures_iter(&text).map(|c| captures_value(&re, &c)).collect()))
        })(),
        "regex_replace" => (|| {
            arity(name, a, 3)?;
            let re = regex(&s(a, 1)?)?;
            Ok(Value::String(re.replace_all(&s(a, 0)?, s(a, 2)?.as_str()).into_owned()))
        })(),
        "length" => (|| {
            arity(name, a, 1)?;
            Ok(Value::Number(match &a[0] {
                Value::List(x) => x.len(),
                Value::Map(x) => x.len(),
                Value::String(x) => x.chars().count(),
                Value::Null => return Err(e("argument must not be null")),
                other => return Err(e(format!("collection must be a list, a map or a tuple, not {}", other.kind()))),
            } as f64))
        })(),
        "coalesce" => (|| {
            for v in a {
                match v {
                    Value::Null => continue,
                    Value::String(x) if x.is_empty() => continue,
                    other => return Ok(other.clone()),
                }
            }
            Err(e("no non-null, non-empty-string arguments"))
        })(),
        "coalescelist" => (|| {
            for v in a {
                if let Value::List(x) = v
                    && !x.is_empty()
                {
                    return Ok(v.clone());
                }
            }
            Err(e("no non-null arguments"))
        })(),
        "compact" => (|| {
            arity(name, a, 1)?;
            let items = str_list(l(a, 0)?)?;
            Ok(strs(items.into_iter().filter(|x| !x.is_empty()).collect()))
        })(),
        "concat" => (|| {
            let mut out = Vec::new();
            for i in 0..a.len() {
                out.extend(l(a, i)?);
            }
            Ok(Value::List(out))
        })(),
        "contains" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(l(a, 0)?.contains(&a[1])))
        })(),
        "distinct" => (|| {
            arity(name, a, 1)?;
            let mut out: Vec<Value> = Vec::new();
            for v in l(a, 0)? {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
            Ok(Value::List(out))
        })(),
        "element" => (|| {
            arity(name, a, 2)?;
            let items = l(a, 0)?;
            if items.is_empty() {
                return Err(e("cannot use element function with an empty list"));
            }
            let i = n(a, 1)?;
            if i < 0.0 {
                return Err(e("cannot use element function with a negative index"));
            }
            Ok(items[(i as usize) % items.len()].clone())
        })(),
        "index" => (|| {
            arity(name, a, 2)?;
            match &a[0] {
                Value::List(items) => {
                    let i = n(a, 1)?;
                    items
                        .get(i as usize)
                        .cloned()
                        .ok_or_else(|| e("the given index is greater than or equal to the length of the collection"))
                }
                Value::Map(mm) => {
                    let k = s(a, 1)?;
                    mm.get(&k).cloned().ok_or_else(|| e("the given key does not exist in the map"))
                }
                _ => Err(e("the first argument must be a list or a map")),
            }
        })(),
        "indexof" => (|| {
            arity(name, a, 2)?;
            let items = l(a, 0).map_err(|_| e("argument must be a list or tuple"))?;
            if items.is_empty() {
                return Err(e("cannot search an empty list"));
            }
            items.iter().position(|v| *v == a[1]).map(|i| Value::Number(i as f64)).ok_or_else(|| e("item not found"))
        })(),
        "hasindex" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(match &a[0] {
                Value::List(items) => n(a, 1).map(|i| i >= 0.0 && (i as usize) < items.len()).unwrap_or(false),
                Value::Map(mm) => s(a, 1).map(|k| mm.contains_key(&k)).unwrap_or(false),
                _ => false,
            }))
        })(),
        "flatten" => (|| {
            arity(name, a, 1)?;
            fn flat(v: Vec<Value>, out: &mut Vec<Value>) {
                for x in v {
                    match x {
                        Value::List(inner) => flat(inner, out),
                        other => out.push(other),
                    }
                }
            }
            let mut out = Vec::new();
            flat(l(a, 0)?, &mut out);
            Ok(Value::List(out))
        })(),
        "chunklist" => (|| {
            arity(name, a, 2)?;
            let items = l(a, 0)?;
            let size = n(a, 1)?;
            if size < 0.0 {
                return Err(e("the size argument must be positive"));
            }
            if size == 0.0 {
                return Ok(Value::List(vec![Value::List(items)]));
            }
            Ok(Value::List(items.chunks(size as usize).map(|c| Value::List(c.to_vec())).collect()))
        })(),
        "keys" => (|| {
            arity(name, a, 1)?;
            Ok(strs(m(a, 0)?.into_keys().collect()))
        })(),
        "values" => (|| {
            arity(name, a, 1)?;
            Ok(Value::List(m(a, 0)?.into_values().collect()))
        })(),
        "lookup" => (|| {
            if a.len() != 2 && a.len() != 3 {
                return Err(e("`lookup` takes a map, a key and an optional default"));
            }
            let mm = m(a, 0)?;
            match mm.get(&s(a, 1)?) {
                Some(v) => Ok(v.clone()),
                None if a.len() == 3 => Ok(a[2].clone()),
                None => Err(e("the given key does not exist in the map and no default was given")),
            }
        })(),
        "merge" => (|| {
            let mut out = BTreeMap::new();
            for (i, v) in a.iter().enumerate() {
                if v.is_null() {
                    continue;
                }
                out.extend(m(a, i)?);
            }
            Ok(Value::Map(out))
        })(),
        "zipmap" => (|| {
            arity(name, a, 2)?;
            let keys = str_list(l(a, 0)?)?;
            let vals = l(a, 1)?;
            if keys.len() != vals.len() {
                return Err(e("number of keys and values must be equal"));
            }
            Ok(Value::Map(keys.into_iter().zip(vals).collect()))
        })(),
        "range" => (|| {
            let (start, end, step) = match a.len() {
                1 => (0.0, n(a, 0)?, 1.0),
                2 => (n(a, 0)?, n(a, 1)?, 1.0),
                3 => (n(a, 0)?, n(a, 1)?, n(a, 2)?),
                _ => return Err(e("`range` takes one to three numbers")),
            };
            let step = if a.len() < 3 && end < start { -1.0 } else { step };
            if step == 0.0 {
                return Err(e("step must not be zero"));
            }
            let mut out = Vec::new();
            let mut x = start;
            while (step > 0.0 && x < end) || (step < 0.0 && x > end) {
                out.push(Value::Number(x));
                x += step;
                if out.len() > 1024 {
                    return Err(e("more than 1024 values were generated"));
                }
            }
            Ok(Value::List(out))
        })(),
        "reverselist" => (|| {
            arity(name, a, 1)?;
            let mut items = l(a, 0)?;
            items.reverse();
            Ok(Value::List(items))
        })(),
        "slice" => (|| {
            arity(name, a, 3)?;
            let items = l(a, 0)?;
            let (from, to) = (n(a, 1)? as usize, n(a, 2)? as usize);
            if from > to || to > items.len() {
                return Err(e("invalid slice indices"));
            }
            Ok(Value::List(items[from..to].to_vec()))
        })(),
        "sort" => (|| {
            arity(name, a, 1)?;
            let mut items = str_list(l(a, 0)?)?;
            items.sort();
            Ok(strs(items))
        })(),
        "sethaselement" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(l(a, 0)?.contains(&a[1])))
        })(),
        "setunion" | "setintersection" | "setsubtract" | "setsymmetricdifference" => (|| {
            if a.is_empty() {
                return Err(e(format!("`{name}` needs at least one set")));
            }
            let sets: Vec<Vec<Value>> = (0..a.len()).map(|i| l(a, i).map(set_of)).collect::<Result<_, _>>()?;
            let mut acc = sets[0].clone();
            for other in &sets[1..] {
                acc = match name {
                    "setunion" => acc.into_iter().chain(other.iter().cloned()).collect(),
                    "setintersection" => acc.into_iter().filter(|x| other.contains(x)).collect(),
                    "setsubtract" => acc.into_iter().filter(|x| !other.contains(x)).collect(),
                    _ => {
                        let mut out: Vec<Value> = acc.iter().filter(|x| !other.contains(x)).cloned().collect();
                        out.extend(other.iter().filter(|x| !acc.contains(x)).cloned());
                        out
                    }
                };
            }
            Ok(Value::List(set_of(acc)))
        })(),
        "setproduct" => (|| {
            let mut acc: Vec<Vec<Value>> = vec![Vec::new()];
            for i in 0..a.len() {
                let items = l(a, i)?;
                acc = acc
                    .into_iter()
                    .flat_map(|p| items.iter().map(move |x| [p.clone(), vec![x.clone()]].concat()))
                    .collect();
            }
            if a.is_empty() {
                return Err(e("`setproduct` needs at least one set"));
            }
            Ok(Value::List(acc.into_iter().map(Value::List).collect()))
        })(),
        "jsonencode" => (|| {
            arity(name, a, 1)?;
            Ok(Value::String(serde_json::to_string(&a[0].to_json()).unwrap_or_default()))
        })(),
        "jsondecode" => (|| {
            arity(name, a, 1)?;
            let j: serde_json::Value = serde_json::from_str(&s(a, 0)?).map_err(|x| e(format!("invalid JSON: {x}")))?;
            Ok(Value::from_json(&j))
        })(),
        "csvdecode" => (|| {
            arity(name, a, 1)?;
            let text = s(a, 0)?;
            let mut rows = text.lines().filter(|x| !x.is_empty()).map(csv_fields);
            let header = rows.next().ok_or_else(|| e("missing header line"))??;
            let mut out = Vec::new();
            for row in rows {
                let row = row?;
                if row.len() != header.len() {
                    return Err(e("the number of fields in a row does not match the header"));
                }
                out.push(Value::Map(header.iter().cloned().zip(row.into_iter().map(Value::String)).collect()));
            }
            Ok(Value::List(out))
        })(),
        "timestamp" => (|| {
            arity(name, a, 0)?;
            Ok(Value::String(Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        })(),
        "formatdate" => (|| {
            arity(name, a, 2)?;
            Ok(Value::String(formatdate(&s(a, 0)?, &parse_rfc3339(&s(a, 1)?)?)?))
        })(),
        "formattimestamp" => (|| {
            arity(name, a, 2)?;
            let fmt = s(a, 0)?;
            let t = match &a[1] {
                Value::String(x) => parse_rfc3339(x)?,
                Value::Number(x) => {
                    DateTime::from_timestamp(*x as i64, 0).ok_or_else(|| e("timestamp out of range"))?.fixed_offset()
                }
                _ => return Err(e("must be a string timestamp or a unix timestamp number")),
            };
            if fmt == "X" {
                return Ok(Value::String(t.timestamp().to_string()));
            }
            Ok(Value::String(formatdate(&fmt, &t)?))
        })(),
        "timeadd" => (|| {
            arity(name, a, 2)?;
            let t = parse_rfc3339(&s(a, 0)?)?;
            let d = parse_go_duration(&s(a, 1)?)?;
            let t2 = t + chrono::Duration::nanoseconds(d);
            Ok(Value::String(t2.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
        })(),
        "unixtimestampparse" => (|| {
            arity(name, a, 1)?;
            let t = DateTime::from_timestamp(n(a, 0)? as i64, 0).ok_or_else(|| e("timestamp out of range"))?;
            let mut o = BTreeMap::new();
            let num = |x: i64| Value::Number(x as f64);
            o.insert("year".into(), num(t.year() as i64));
            o.insert("year_day".into(), num(t.ordinal() as i64));
            o.insert("day".into(), num(t.day() as i64));
            o.insert("month".into(), num(t.month() as i64));
            o.insert("month_name".into(), Value::String(t.format("%B").to_string()));
            o.insert("weekday".into(), num(t.weekday().num_days_from_sunday() as i64));
            o.insert("weekday_name".into(), Value::String(t.format("%A").to_string()));
            o.insert("hour".into(), num(t.hour() as i64));
            o.insert("minute".into(), num(t.minute() as i64));
            o.insert("second".into(), num(t.second() as i64));
            o.insert("rfc3339".into(), Value::String(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()));
            o.insert("iso_year".into(), num(t.iso_week().year() as i64));
            o.insert("iso_week".into(), num(t.iso_week().week() as i64));
            Ok(Value::Map(o))
        })(),
        "bcrypt" => (|| {
            if a.is_empty() || a.len() > 2 {
                return Err(e("`bcrypt` takes a string and an optional cost"));
            }
            let cost = if a.len() == 2 { n(a, 1)? } else { 10.0 };
            if !(4.0..=31.0).contains(&cost) || cost.fract() != 0.0 {
                return Err(e("bcrypt cost must be a whole number from 4 to 31"));
            }
            let h = ::bcrypt::hash_with_result(s(a, 0)?, cost as u32).map_err(|x| e(format!("bcrypt: {x}")))?;
            Ok(Value::String(h.format_for_version(::bcrypt::Version::TwoA)))
        })(),
        "rsadecrypt" => (|| {
            arity(name, a, 2)?;
            crypto::rsadecrypt(&s(a, 0)?, &s(a, 1)?).map(Value::String).map_err(|x| e(x.to_string()))
        })(),
        "byteslen" => (|| {
            arity(name, a, 1)?;
            Err(bytes_required(&a[0]))
        })(),
        "bytesslice" => (|| {
            arity(name, a, 3)?;
            n(a, 1)?;
            n(a, 2)?;
            Err(bytes_required(&a[0]))
        })(),
        "homedir" => (|| {
            arity(name, a, 0)?;
            Ok(Value::String(std::env::var("HOME").unwrap_or_else(|_| "/".into())))
        })(),
        "semvercmp" => (|| {
            arity(name, a, 2)?;
            Ok(Value::Bool(semver_check(&s(a, 0)?, &s(a, 1)?)?))
        })(),
        "cidrhost" => (|| {
            arity(name, a, 2)?;
            let (net, bits) = cidr(&s(a, 0)?)?;
            let host = n(a, 1)? as i128;
            let size: i128 = 1i128 << (net.1 - bits);
            let off = if host < 0 { size + host } else { host };
            if off < 0 || off >= size {
                return Err(e(format!("prefix of {bits} does not accommodate a host numbered {host}")));
            }
            Ok(Value::String(ip_string(net.0 + off as u128, net.1)))
        })(),
        "cidrnetmask" => (|| {
            arity(name, a, 1)?;
            let ((_, width), bits) = cidr(&s(a, 0)?)?;
            if width != 32 {
                return Err(e("only IPv4 networks have a netmask"));
            }
            let mask: u128 = if bits == 0 { 0 } else { (u32::MAX << (32 - bits)) as u128 };
            Ok(Value::String(ip_string(mask, 32)))
        })(),
        "cidrsubnet" => (|| {
            arity(name, a, 3)?;
            let ((base, width), bits) = cidr(&s(a, 0)?)?;
            let newbits = n(a, 1)? as u32;
            let num = n(a, 2)? as u128;
            let nb = bits + newbits;
            if nb > width || (newbits < 128 && num >= (1u128 << newbits)) {
                return Err(e("not enough remaining address space for the requested subnet"));
            }
            Ok(Value::String(format!("{}/{nb}", ip_string(base | (num << (width - nb)), width))))
        })(),
        "cidrsubnets" => (|| {
            if a.is_empty() {
                return Err(e("`cidrsubnets` needs a prefix"));
            }
            let ((base, width), bits) = cidr(&s(a, 0)?)?;
            let mut next = base;
            let mut out = Vec::new();
            for i in 1..a.len() {
                let nb = bits + n(a, i)? as u32;
                if nb > width {
                    return Err(e("not enough remaining address space"));
                }
                let size = 1u128 << (width - nb);
                let start = next.div_ceil(size) * size;
                out.push(Value::String(format!("{}/{nb}", ip_string(start, width))));
                next = start + size;
            }
            Ok(Value::List(out))
        })(),
        _ => return None,
    };
    Some(r)
}

/// cty's conversion error for a `bytes` parameter given any bake value.
fn bytes_required(v: &Value) -> EvalError {
    if v.is_null() {
        return e("invalid value for \"buf\" parameter: argument must not be null");
    }
    e(format!(
        "invalid value for \"buf\" parameter: bytes required, not {} (cty's bytes values come from no bake function)",
        v.kind()
    ))
}

fn unary_str(name: &str, a: &[Value], f: impl Fn(String) -> String) -> R {
    arity(name, a, 1)?;
    Ok(Value::String(f(s(a, 0)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(x: &str) -> Value {
        Value::String(x.into())
    }

    #[test]
    fn format_verbs() {
        assert_eq!(
            format_go(
                "%s-%d-%05.1f-%t-%q",
                &[st("a"), Value::Number(3.0), Value::Number(2.25), Value::Bool(true), st("x")]
            )
            .unwrap(),
            "a-3-002.2-true-\"x\""
        );
        assert!(format_go("%s", &[]).is_err());
    }

    #[test]
    fn semver_constraints() {
        assert!(semver_check("1.2.3", ">= 1.2.0").unwrap());
        assert!(semver_check("1.2.3", "~1.2").unwrap());
        assert!(!semver_check("1.3.0", "~1.2.0").unwrap());
        assert!(semver_check("1.9.0", "^1.2").unwrap());
        assert!(!semver_check("2.0.0", "^1.2").unwrap());
        assert!(semver_check("2.0.0", "<1.0 || >=2.0").unwrap());
        assert!(semver_check("1.2.7", "1.2.x").unwrap());
    }

    #[test]
    fn dates() {
        let t = parse_rfc3339("2024-03-05T07:08:09Z").unwrap();
        assert_eq!(
            formatdate("YYYY-MM-DD'T'hh:mm:ssZ EEE MMM D H AA", &t).unwrap(),
            "2024-03-05T07:08:09Z Tue Mar 5 7 AM"
        );
        assert_eq!(
            call("timeadd", vec![st("2024-01-01T00:00:00Z"), st("1h30m")]).unwrap().unwrap(),
            st("2024-01-01T01:30:00Z")
        );
    }

    #[test]
    fn bytes_functions_reject_every_bake_value_as_cty_does() {
        for v in [st("abc"), Value::Number(1.0), Value::List(vec![]), Value::Null] {
            let err = call("byteslen", vec![v.clone()]).unwrap().unwrap_err().to_string();
            assert!(err.contains("\"buf\" parameter"), "{err}");
            let err = call("bytesslice", vec![v, Value::Number(0.0), Value::Number(1.0)]).unwrap().unwrap_err();
            assert!(err.to_string().contains("\"buf\" parameter"), "{err}");
        }
        assert!(call("byteslen", vec![]).unwrap().unwrap_err().to_string().contains("takes 1 argument"));
    }

    #[test]
    fn rsadecrypt_is_registered() {
        let plain = call("rsadecrypt", vec![st(crypto::tests::CIPHERTEXT.trim()), st(crypto::tests::KEY)]);
        assert_eq!(plain.unwrap().unwrap(), st("hello"));
    }

    #[test]
    fn bcrypt_hash_verifies() {
        let Value::String(h) = call("bcrypt", vec![st("secret"), Value::Number(4.0)]).unwrap().unwrap() else {
            panic!("string")
        };
        assert!(h.starts_with("$2a$04$"), "{h}");
        assert!(::bcrypt::verify("secret", &h).unwrap());
        assert!(call("bcrypt", vec![st("x"), Value::Number(3.0)]).unwrap().is_err());
    }

    #[test]
    fn cidr_functions() {
        assert_eq!(
            call("cidrsubnet", vec![st("10.1.0.0/16"), Value::Number(8.0), Value::Number(2.0)]).unwrap().unwrap(),
            st("10.1.2.0/24")
        );
        assert_eq!(call("cidrhost", vec![st("10.0.0.0/24"), Value::Number(5.0)]).unwrap().unwrap(), st("10.0.0.5"));
        assert_eq!(call("cidrnetmask", vec![st("10.0.0.0/12")]).unwrap().unwrap(), st("255.240.0.0"));
    }

    #[test]
    fn paths_and_strings() {
        assert_eq!(path_base("/a/b/"), "b");
        assert_eq!(path_dir("a/b/c"), "a/b");
        assert_eq!(path_dir("c"), ".");
        assert_eq!(title("hello world".into()), "Hello World");
        assert_eq!(call("sanitize", vec![st("a.b/c")]).unwrap().unwrap(), st("a_b_c"));
        assert_eq!(
            call("substr", vec![st("hello"), Value::Number(1.0), Value::Number(-1.0)]).unwrap().unwrap(),
            st("ello")
        );
    }
}
