//! One CSV record, split as Go's `encoding/csv` reads it — buildx parses
//! `--output`, `--secret` and `--cache-from/--cache-to` values this way, so
//! `type=image,"name=a:1,b:2"` is two fields and the second holds a comma.
//!
//! Rules (RFC 4180 as Go implements it, `LazyQuotes` off): fields are
//! separated by `,`; a field that starts with `"` is quoted and ends at a
//! `"` followed by `,` or the end; `""` inside it is one `"`. A quote inside
//! an unquoted field, text after a closing quote and a missing closing quote
//! are errors.

/// Why a value is not one CSV record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// `a"b`: a quote inside a field that did not start with one.
    #[error("bare `\"` in unquoted field {field} (quote the whole field: `\"key=value\"`)")]
    BareQuote {
        /// 1-based field number.
        field: usize,
    },
    /// `"a"b`: something other than `,` after a closing quote.
    #[error("extraneous character after the closing `\"` of field {field}")]
    AfterQuote {
        /// 1-based field number.
        field: usize,
    },
    /// `"a,b`: the quoted field never ends.
    #[error("field {field} has no closing `\"`")]
    Unterminated {
        /// 1-based field number.
        field: usize,
    },
}

/// Splits `input` into its fields. An empty input has no fields.
pub fn fields(input: &str) -> Result<Vec<String>, CsvError> {
    let mut out = Vec::new();
    if input.is_empty() {
        return Ok(out);
    }
    let mut chars = input.chars().peekable();
    loop {
        let number = out.len() + 1;
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(CsvError::Unterminated { field: number }),
                    Some('"') => match chars.peek() {
                        Some('"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some(',') | None => break,
                        Some(_) => return Err(CsvError::AfterQuote { field: number }),
                    },
                    Some(c) => field.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    ',' => break,
                    '"' => return Err(CsvError::BareQuote { field: number }),
                    _ => field.push(c),
                }
                chars.next();
            }
        }
        out.push(field);
        match chars.next() {
            Some(',') => continue,
            None => return Ok(out),
            Some(_) => unreachable!("a field ends at `,` or the end"),
        }
    }
}

/// Splits a field into a lower-cased key and its value (`key=value`), as
/// buildx does; `None` when there is no `=`.
pub fn key_value(field: &str) -> Option<(String, &str)> {
    let (k, v) = field.split_once('=')?;
    Some((k.to_ascii_lowercase(), v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_go_encoding_csv() {
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            ("a", &["a"]),
            ("a,b", &["a", "b"]),
            ("a,", &["a", ""]),
            (",", &["", ""]),
            ("type=image,\"name=a:1,b:2\",push=true", &["type=image", "name=a:1,b:2", "push=true"]),
            ("\"a\"\"b\",c", &["a\"b", "c"]),
            ("\"\"", &[""]),
            ("\"x,y\"", &["x,y"]),
            ("k=v w", &["k=v w"]),
            ("\"line\nbreak\"", &["line\nbreak"]),
        ];
        for (input, want) in table {
            assert_eq!(fields(input).unwrap(), *want, "input {input:?}");
        }
    }

    #[test]
    fn malformed_quoting_is_an_error_naming_the_field() {
        let table: &[(&str, CsvError, &str)] = &[
            (
                "type=image,name=\"a,b\"",
                CsvError::BareQuote { field: 2 },
                "bare `\"` in unquoted field 2 (quote the whole field: `\"key=value\"`)",
            ),
            ("\"a\"b", CsvError::AfterQuote { field: 1 }, "extraneous character after the closing `\"` of field 1"),
            ("x,\"a,b", CsvError::Unterminated { field: 2 }, "field 2 has no closing `\"`"),
        ];
        for (input, err, message) in table {
            let got = fields(input).unwrap_err();
            assert_eq!(&got, err, "input {input:?}");
            assert_eq!(got.to_string(), *message);
        }
    }

    #[test]
    fn keys_are_case_insensitive() {
        assert_eq!(key_value("TYPE=Image"), Some(("type".to_string(), "Image")));
        assert_eq!(key_value("a=b=c"), Some(("a".to_string(), "b=c")));
        assert_eq!(key_value("novalue"), None);
    }
}
