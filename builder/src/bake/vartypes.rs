//! Variable types and values from the environment: `type = ...`
//! expressions, buildx's conversion of an env value by type (primitives,
//! CSV lists/sets/tuples/maps), and a value as `--list variables` shows it.

use std::collections::BTreeMap;

use hcl::edit::expr::Expression;

use super::functions;
use super::value::{self, ConvertError, InvalidType, Type, Value};

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
pub(super) fn convert_primitive(name: &str, v: &str, t: &Type) -> Result<Value, ConvertError> {
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
pub(super) fn csv_value(name: &str, v: &str, t: &Type) -> Result<Value, ConvertError> {
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
pub(super) fn variable_text(v: &Value, ty: Option<&Type>) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) if ty.is_none() || ty.is_some_and(Type::is_primitive) => v.as_string(),
        other => Some(serde_json::to_string(&other.to_json()).unwrap_or_default()),
    }
}
