//! JSON with object keys in file order. HCL-as-JSON bake files declare
//! targets by object keys, and buildx keeps declaration order; serde_json's
//! map sorts keys (and its order-keeping feature would change every other
//! crate's canonical JSON), so bake files get this small tree of their own.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum OJson {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number.
    Number(serde_json::Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<OJson>),
    /// An object, in file order.
    Object(Vec<(String, OJson)>),
}

impl<'de> Deserialize<'de> for OJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OJson;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<OJson, E> {
                Ok(OJson::Null)
            }
            fn visit_none<E>(self) -> Result<OJson, E> {
                Ok(OJson::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<OJson, E> {
                Ok(OJson::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<OJson, E> {
                Ok(OJson::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<OJson, E> {
                Ok(OJson::Number(n.into()))
            }
            fn visit_f64<E>(self, n: f64) -> Result<OJson, E> {
                Ok(serde_json::Number::from_f64(n).map(OJson::Number).unwrap_or(OJson::Null))
            }
            fn visit_str<E>(self, s: &str) -> Result<OJson, E> {
                Ok(OJson::String(s.to_string()))
            }
            fn visit_string<E>(self, s: String) -> Result<OJson, E> {
                Ok(OJson::String(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OJson, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    v.push(x);
                }
                Ok(OJson::Array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OJson, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = map.next_entry::<String, OJson>()? {
                    v.push((k, x));
                }
                Ok(OJson::Object(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::OJson;

    #[test]
    fn keeps_key_order() {
        let j: OJson = serde_json::from_str(r#"{"b": 1, "a": [true, null, "x"]}"#).unwrap();
        let OJson::Object(o) = j else { panic!("object") };
        assert_eq!(o[0].0, "b");
        assert_eq!(o[1].0, "a");
    }
}
