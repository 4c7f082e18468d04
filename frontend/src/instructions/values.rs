//! Value syntaxes shared by instructions: Go's `time.ParseDuration`,
//! `strconv.ParseBool`, docker's `units.RAMInBytes` and Go's
//! `encoding/csv` field splitting (for `--mount`), each as BuildKit uses
//! them so a Dockerfile means the same thing here as there.

use std::time::Duration;

/// A value that does not parse (each message as BuildKit's, with the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a Go duration.
    #[error("invalid duration `{0}`")]
    Duration(String),
    /// A duration number without a unit.
    #[error("missing unit in duration `{0}`")]
    DurationUnitMissing(String),
    /// A duration unit Go does not know.
    #[error("unknown unit `{unit}` in duration `{value}`")]
    DurationUnit {
        /// The unit.
        unit: String,
        /// The whole value.
        value: String,
    },
    /// A duration beyond Go's `time.Duration`.
    #[error("invalid duration `{0}`: out of range")]
    DurationRange(String),
    /// Not a size.
    #[error("invalid size `{0}`")]
    Size(String),
    /// A quoted CSV field without its closing quote.
    #[error("unterminated quoted field in `{0}`")]
    UnterminatedField(String),
    /// Text after a quoted CSV field.
    #[error("unexpected `{found}` after quoted field in `{value}`")]
    AfterQuotedField {
        /// The character found.
        found: char,
        /// The whole value.
        value: String,
    },
    /// A `"` inside an unquoted CSV field.
    #[error("bare `\"` in non-quoted field in `{0}`")]
    BareQuote(String),
}

/// A duration as Go's `time.ParseDuration` reads it (`1h30m`, `1.5s`,
/// `300ms`, `0`). Returns whether it was negative and its magnitude.
pub fn parse_go_duration(s: &str) -> Result<(bool, Duration), ValueError> {
    let bad = || ValueError::Duration(s.to_string());
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok((negative, Duration::ZERO));
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number = &rest[..num_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(ValueError::DurationUnitMissing(s.to_string())),
            unit => return Err(ValueError::DurationUnit { unit: unit.to_string(), value: s.to_string() }),
        };
        rest = &rest[unit_len..];
        total += value * nanos_per_unit;
    }
    // Go's limit: about 292 years in nanoseconds.
    if total > i64::MAX as f64 {
        return Err(ValueError::DurationRange(s.to_string()));
    }
    Ok((negative && total > 0.0, Duration::from_nanos(total.round() as u64)))
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker's `units.RAMInBytes`: `64m`, `1.5GiB`, `100` (binary multiples).
pub fn parse_ram_in_bytes(s: &str) -> Result<u64, ValueError> {
    let bad = || ValueError::Size(s.to_string());
    let num_len = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let number = &s[..num_len];
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') || number.contains("..") {
        return Err(bad());
    }
    // `\d+(\.\d+)*`: Go's ParseFloat then reads only a valid float.
    let value: f64 = number.parse().map_err(|_| bad())?;
    let mut rest = s[num_len..].strip_prefix(' ').unwrap_or(&s[num_len..]);
    let mut multiplier = 1u64;
    if let Some(c) = rest.chars().next() {
        let power = match c.to_ascii_lowercase() {
            'k' => Some(1),
            'm' => Some(2),
            'g' => Some(3),
            't' => Some(4),
            'p' => Some(5),
            _ => None,
        };
        if let Some(p) = power {
            multiplier = 1024u64.pow(p);
            rest = &rest[1..];
        }
    }
    let rest = rest.strip_prefix(['i', 'I']).unwrap_or(rest);
    let rest = rest.strip_prefix(['b', 'B']).unwrap_or(rest);
    if !rest.is_empty() {
        return Err(bad());
    }
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// One CSV record as Go's `encoding/csv` reads it: comma-separated
/// fields, a field starting with `"` is quoted (`""` is a literal quote).
pub fn csv_fields(s: &str) -> Result<Vec<String>, ValueError> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(ValueError::UnterminatedField(s.to_string())),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(ValueError::AfterQuotedField { found: c, value: s.to_string() }),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some('"') => return Err(ValueError::BareQuote(s.to_string())),
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_like_go() {
        assert_eq!(parse_go_duration("5s"), Ok((false, Duration::from_secs(5))));
        assert_eq!(parse_go_duration("1h30m"), Ok((false, Duration::from_secs(5400))));
        assert_eq!(parse_go_duration("1.5s"), Ok((false, Duration::from_millis(1500))));
        assert_eq!(parse_go_duration("300ms"), Ok((false, Duration::from_millis(300))));
        assert_eq!(parse_go_duration("2us"), Ok((false, Duration::from_micros(2))));
        assert_eq!(parse_go_duration("0"), Ok((false, Duration::ZERO)));
        assert_eq!(parse_go_duration("-1s"), Ok((true, Duration::from_secs(1))));
        for bad in ["", "5", "s", "1x", "1..2s", "-", "1.s2"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_like_docker_units() {
        assert_eq!(parse_ram_in_bytes("100"), Ok(100));
        assert_eq!(parse_ram_in_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_ram_in_bytes("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_ram_in_bytes("2 kb"), Ok(2048));
        assert!(parse_ram_in_bytes("x").is_err());
        assert!(parse_ram_in_bytes("10q").is_err());
    }

    #[test]
    fn csv_like_go() {
        assert_eq!(csv_fields("a=1,b=2").unwrap(), vec!["a=1", "b=2"]);
        assert_eq!(csv_fields("\"a=1,2\",b").unwrap(), vec!["a=1,2", "b"]);
        assert_eq!(csv_fields("\"x\"\"y\"").unwrap(), vec!["x\"y"]);
        assert!(csv_fields("a\"b").is_err());
        assert!(csv_fields("\"ab").is_err());
    }
}
