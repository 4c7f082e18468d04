//! The values bake expressions compute, and the type constraints of
//! `variable` blocks (`string`, `list(number)`, `object({...})`, ...).
//!
//! The model follows go-cty as buildx uses it closely enough for bake files:
//! lists, sets and tuples are one sequence kind, maps and objects one keyed
//! kind with keys in sorted order (cty iterates maps that way, and Go's JSON
//! encoder prints them that way).

use std::collections::BTreeMap;
use std::fmt;

/// A computed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null` (of any type).
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number (cty numbers are arbitrary precision; f64 covers bake files).
    Number(f64),
    /// A string.
    String(String),
    /// A list, set or tuple.
    List(Vec<Value>),
    /// A map or object.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The friendly name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::List(_) => "tuple",
            Value::Map(_) => "object",
        }
    }

    /// The value as a string the way cty converts primitives, `None` for
    /// null and collections.
    pub fn as_string(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(format_number(*n)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Whether this is `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as JSON (numbers that are whole print without a fraction).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => number_to_json(*n),
            Value::String(s) => serde_json::Value::String(s.clone()),
            Value::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Value::Map(m) => serde_json::Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }

    /// A value from JSON (objects keep sorted keys).
    pub fn from_json(j: &serde_json::Value) -> Value {
        match j {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(0.0)),
            serde_json::Value::String(s) => Value::String(s.clone()),
            serde_json::Value::Array(a) => Value::List(a.iter().map(Value::from_json).collect()),
            serde_json::Value::Object(o) => {
                Value::Map(o.iter().map(|(k, v)| (k.clone(), Value::from_json(v))).collect())
            }
        }
    }
}

/// A number as cty prints it: whole numbers without a fraction.
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e21 { format!("{}", n as i128) } else { format!("{n}") }
}

fn number_to_json(n: f64) -> serde_json::Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
    }
}

/// A type constraint, as written in a `variable` block's `type`.
#[derive(Clone, Debug, PartialEq)]
pub enum Type {
    /// `any`: no constraint.
    Any,
    /// `string`.
    String,
    /// `number`.
    Number,
    /// `bool`.
    Bool,
    /// `list(T)`.
    List(Box<Type>),
    /// `set(T)`.
    Set(Box<Type>),
    /// `map(T)`.
    Map(Box<Type>),
    /// `tuple([T, ...])`.
    Tuple(Vec<Type>),
    /// `object({name = T, ...})`.
    Object(BTreeMap<String, Type>),
}

impl Type {
    /// Whether this is `string`, `number` or `bool`.
    pub fn is_primitive(&self) -> bool {
        matches!(self, Type::String | Type::Number | Type::Bool)
    }
}

impl fmt::Display for Type {
    /// cty's `FriendlyNameForConstraint`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Any => write!(f, "any"),
            Type::String => write!(f, "string"),
            Type::Number => write!(f, "number"),
            Type::Bool => write!(f, "bool"),
            Type::List(t) => write!(f, "list of {t}"),
            Type::Set(t) => write!(f, "set of {t}"),
            Type::Map(t) => write!(f, "map of {t}"),
            Type::Tuple(_) => write!(f, "tuple"),
            Type::Object(_) => write!(f, "object"),
        }
    }
}

/// A `type = ...` expression that is not a type.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidType(pub String);

/// Why a value does not fit a type.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

/// Converts `v` to type `t` as cty's `convert.Convert` does for the cases bake
/// files meet: primitives convert to each other through strings, collections
/// element-wise, objects keep only the attributes the type names.
pub fn convert(v: &Value, t: &Type) -> Result<Value, ConvertError> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    let mismatch = || ConvertError(format!("{t} required"));
    Ok(match t {
        Type::Any => v.clone(),
        Type::String => Value::String(v.as_string().ok_or_else(mismatch)?),
        Type::Number => match v {
            Value::Number(n) => Value::Number(*n),
            Value::String(s) => {
                Value::Number(parse_number(s).ok_or_else(|| ConvertError("a number is required".into()))?)
            }
            _ => return Err(mismatch()),
        },
        Type::Bool => match v {
            Value::Bool(b) => Value::Bool(*b),
            Value::String(s) if s == "true" => Value::Bool(true),
            Value::String(s) if s == "false" => Value::Bool(false),
            Value::String(_) => return Err(ConvertError("a bool is required".into())),
            _ => return Err(mismatch()),
        },
        Type::List(et) | Type::Set(et) => {
            let Value::List(items) = v else { return Err(mismatch()) };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(convert(item, et).map_err(|e| ConvertError(format!("element {i}: {}", e.0)))?);
            }
            if matches!(t, Type::Set(_)) {
                out = set_of(out);
            }
            Value::List(out)
        }
        Type::Map(et) => {
            let Value::Map(m) = v else { return Err(mismatch()) };
            let mut out = BTreeMap::new();
            for (k, item) in m {
                out.insert(k.clone(), convert(item, et).map_err(|e| ConvertError(format!("element {k:?}: {}", e.0)))?);
            }
            Value::Map(out)
        }
        Type::Tuple(ts) => {
            let Value::List(items) = v else { return Err(mismatch()) };
            if items.len() != ts.len() {
                return Err(ConvertError(format!("tuple required with {} elements", ts.len())));
            }
            Value::List(items.iter().zip(ts).map(|(i, t)| convert(i, t)).collect::<Result<_, _>>()?)
        }
        Type::Object(attrs) => {
            let Value::Map(m) = v else { return Err(mismatch()) };
            let mut out = BTreeMap::new();
            for (k, at) in attrs {
                let item = m.get(k).ok_or_else(|| ConvertError(format!("attribute {k:?} is required")))?;
                out.insert(k.clone(), convert(item, at)?);
            }
            Value::Map(out)
        }
    })
}

/// A set's elements: deduplicated and sorted (cty sorts string sets
/// lexically, numbers numerically).
pub fn set_of(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out.sort_by(|a, b| match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    });
    out
}

/// A decimal number as `strconv.ParseFloat` reads it (no NaN or infinity).
pub fn parse_number(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("nan") || t.to_ascii_lowercase().contains("inf") {
        return None;
    }
    t.parse::<f64>().ok().filter(|n| n.is_finite())
}

/// JSON `j` read as a value of type `t` (cty's `json.Unmarshal`).
pub fn from_json_typed(j: &serde_json::Value, t: &Type) -> Result<Value, ConvertError> {
    let v = Value::from_json(j);
    match (t, &v) {
        (Type::String, Value::String(_)) | (Type::Number, Value::Number(_)) | (Type::Bool, Value::Bool(_)) => Ok(v),
        (Type::String | Type::Number | Type::Bool, Value::Null) => Ok(v),
        (Type::String | Type::Number | Type::Bool, _) => Err(ConvertError(format!("{t} required"))),
        (Type::List(et) | Type::Set(et), Value::List(_)) => {
            let serde_json::Value::Array(items) = j else { unreachable!("checked above") };
            let items = items.iter().map(|i| from_json_typed(i, et)).collect::<Result<Vec<_>, _>>()?;
            Ok(Value::List(if matches!(t, Type::Set(_)) { set_of(items) } else { items }))
        }
        (Type::Map(et), Value::Map(_)) => {
            let serde_json::Value::Object(o) = j else { unreachable!("checked above") };
            Ok(Value::Map(o.iter().map(|(k, v)| Ok((k.clone(), from_json_typed(v, et)?))).collect::<Result<_, _>>()?))
        }
        _ => convert(&v, t),
    }
}
