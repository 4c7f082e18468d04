//! Time helpers: RFC 3339 parsing, cty's `formatdate` verbs, Go durations.

use chrono::{DateTime, Datelike, FixedOffset, Timelike};

use super::e;
use crate::bake::eval::EvalError;

pub(super) fn parse_rfc3339(x: &str) -> Result<DateTime<FixedOffset>, EvalError> {
    DateTime::parse_from_rfc3339(x).map_err(|_| e(format!("not a valid RFC3339 timestamp: {x:?}")))
}

/// cty's `formatdate` spec: `YYYY YY MMMM MMM MM M DD D EEEE EEE hh h HH H
/// AA aa mm m ss s ZZZZZ ZZZZ ZZZ Z` and `'literal'`.
pub(super) fn formatdate(fmt: &str, t: &DateTime<FixedOffset>) -> Result<String, EvalError> {
    let chars: Vec<char> = fmt.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut j = i + 1;
            if j < chars.len() && chars[j] == '\'' {
                out.push('\'');
                i += 2;
                continue;
            }
            while j < chars.len() && chars[j] != '\'' {
                out.push(chars[j]);
                j += 1;
            }
            if j >= chars.len() {
                return Err(e("unterminated literal '"));
            }
            i = j + 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            out.push(c);
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && chars[j] == c {
            j += 1;
        }
        let run = j - i;
        let off = t.offset().local_minus_utc();
        let piece = match (c, run) {
            ('Y', 4) => format!("{:04}", t.year()),
            ('Y', 2) => format!("{:02}", t.year() % 100),
            ('M', 4) => t.format("%B").to_string(),
            ('M', 3) => t.format("%b").to_string(),
            ('M', 2) => format!("{:02}", t.month()),
            ('M', 1) => t.month().to_string(),
            ('D', 2) => format!("{:02}", t.day()),
            ('D', 1) => t.day().to_string(),
            ('E', 4) => t.format("%A").to_string(),
            ('E', 3) => t.format("%a").to_string(),
            ('h', 2) => format!("{:02}", t.hour()),
            ('h', 1) => t.hour().to_string(),
            ('H', 2) => format!("{:02}", (t.hour() + 11) % 12 + 1),
            ('H', 1) => ((t.hour() + 11) % 12 + 1).to_string(),
            ('A', 2) => if t.hour() < 12 { "AM" } else { "PM" }.to_string(),
            ('a', 2) => if t.hour() < 12 { "am" } else { "pm" }.to_string(),
            ('m', 2) => format!("{:02}", t.minute()),
            ('m', 1) => t.minute().to_string(),
            ('s', 2) => format!("{:02}", t.second()),
            ('s', 1) => t.second().to_string(),
            ('Z', 1) if off == 0 => "Z".to_string(),
            ('Z', 1) => {
                format!("{}{:02}:{:02}", if off < 0 { '-' } else { '+' }, off.abs() / 3600, off.abs() % 3600 / 60)
            }
            ('Z', 3) => {
                if off == 0 {
                    "UTC".to_string()
                } else {
                    t.format("%:z").to_string()
                }
            }
            ('Z', 4) => t.format("%z").to_string(),
            ('Z', 5) => t.format("%:z").to_string(),
            _ => return Err(e(format!("invalid date format verb {:?}", chars[i..j].iter().collect::<String>()))),
        };
        out.push_str(&piece);
        i = j;
    }
    Ok(out)
}

/// A Go duration (`1h30m`, `-10s`, `1.5h`) in nanoseconds.
pub(super) fn parse_go_duration(x: &str) -> Result<i64, EvalError> {
    let bad = || e(format!("invalid duration {x:?}"));
    let (neg, mut rest) = match x.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, x.strip_prefix('+').unwrap_or(x)),
    };
    if rest == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let num: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += num * mult;
        rest = &rest[unit_end..];
    }
    Ok(if neg { -(total as i64) } else { total as i64 })
}
