//! String helpers of the function library: Go's `path` functions,
//! `title`, `urlencode`, regular expressions, CSV records and Go-style
//! `format` verbs.

use std::collections::BTreeMap;

use super::{MAX_PAD, e};
use crate::bake::eval::EvalError;
use crate::bake::value::{self, Type, Value, format_number};

pub(super) fn title(x: String) -> String {
    let mut out = String::with_capacity(x.len());
    let mut prev_letter = false;
    for c in x.chars() {
        if !prev_letter && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_letter = c.is_alphanumeric() || c == '\'';
    }
    out
}

/// Go's `path.Base`.
pub(super) fn path_base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Go's `path.Dir`.
pub(super) fn path_dir(p: &str) -> String {
    let dir = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    clean_path(dir)
}

/// Go's `path.Clean`.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

pub(super) fn urlencode(x: &str) -> String {
    let mut out = String::new();
    for byte in x.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

pub(super) fn regex(p: &str) -> Result<regex::Regex, EvalError> {
    regex::Regex::new(p).map_err(|x| e(format!("invalid regular expression pattern: {x}")))
}

pub(super) fn captures_value(re: &regex::Regex, caps: &regex::Captures<'_>) -> Value {
    let names: Vec<Option<&str>> = re.capture_names().collect();
    if names.len() == 1 {
        return Value::String(caps.get(0).map(|x| x.as_str().to_string()).unwrap_or_default());
    }
    if names.iter().skip(1).all(|n| n.is_some()) {
        let mut o = BTreeMap::new();
        for name in names.iter().skip(1).flatten() {
            o.insert(
                name.to_string(),
                caps.name(name).map(|x| Value::String(x.as_str().into())).unwrap_or(Value::Null),
            );
        }
        return Value::Map(o);
    }
    Value::List(
        (1..names.len())
            .map(|i| caps.get(i).map(|x| Value::String(x.as_str().into())).unwrap_or(Value::Null))
            .collect(),
    )
}

/// One CSV record (RFC 4180 quoting), as Go's `encoding/csv` reads it.
pub fn csv_fields(line: &str) -> Result<Vec<String>, EvalError> {
    // One parser for every CSV value rbuild reads (flags and bake alike);
    // bake treats an empty value as one empty field, as its callers expect.
    if line.is_empty() {
        return Ok(vec![String::new()]);
    }
    crate::csv::fields(line).map_err(|err| e(format!("{err}: {line:?}")))
}

/// cty's `format`: Go-style verbs `%s %d %f %e %g %t %q %v %x %X %o %b %%`
/// with flags, width and precision.
pub(super) fn format_go(fmt: &str, args: &[Value]) -> Result<String, EvalError> {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    let mut argi = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = chars.peek() {
            if "-+ 0#".contains(f) {
                flags.push(f);
                chars.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(if p.is_empty() { 0 } else { p.parse().unwrap_or(usize::MAX) });
        }
        let verb = chars.next().ok_or_else(|| e("unterminated format verb"))?;
        let arg = args.get(argi).ok_or_else(|| e(format!("not enough arguments for `%{verb}` in format string")))?;
        argi += 1;
        let num = || match value::convert(arg, &Type::Number) {
            Ok(Value::Number(x)) => Ok(x),
            _ => Err(e(format!("unsupported value for `%{verb}`: a number is required"))),
        };
        let text = match verb {
            's' => {
                let t = arg.as_string().ok_or_else(|| e("unsupported value for `%s`: a string is required"))?;
                match prec {
                    Some(p) => t.chars().take(p).collect(),
                    None => t,
                }
            }
            'q' => serde_json::to_string(&arg.as_string().ok_or_else(|| e("unsupported value for `%q`"))?)
                .unwrap_or_default(),
            'v' => match arg {
                Value::String(x) => x.clone(),
                Value::Null => "null".into(),
                other => {
                    other.as_string().unwrap_or_else(|| serde_json::to_string(&other.to_json()).unwrap_or_default())
                }
            },
            't' => match value::convert(arg, &Type::Bool) {
                Ok(Value::Bool(x)) => x.to_string(),
                _ => return Err(e("unsupported value for `%t`: a bool is required")),
            },
            'd' => {
                let x = num()?;
                if x.fract() != 0.0 {
                    return Err(e("unsupported value for `%d`: a whole number is required"));
                }
                let s = format!("{}", x as i128);
                if flags.contains('+') && x >= 0.0 { format!("+{s}") } else { s }
            }
            'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), num()?),
            'e' => format!("{:.*e}", prec.unwrap_or(6), num()?),
            'g' => format_number(num()?),
            'x' => format!("{:x}", num()? as i128),
            'X' => format!("{:X}", num()? as i128),
            'o' => format!("{:o}", num()? as i128),
            'b' => format!("{:b}", num()? as i128),
            other => return Err(e(format!("unsupported format verb `%{other}`"))),
        };
        let w: usize = if width.is_empty() { 0 } else { width.parse().unwrap_or(usize::MAX) };
        if w as f64 > MAX_PAD || prec.is_some_and(|p| p as f64 > MAX_PAD) {
            return Err(e(format!("format width and precision must be at most {MAX_PAD}")));
        }
        let len = text.chars().count();
        if len < w {
            let pad = w - len;
            if flags.contains('-') {
                out.push_str(&text);
                out.push_str(&" ".repeat(pad));
            } else if flags.contains('0') && "dfFeg".contains(verb) {
                let (sign, digits) = match text.strip_prefix('-') {
                    Some(d) => ("-", d.to_string()),
                    None => ("", text.clone()),
                };
                out.push_str(sign);
                out.push_str(&"0".repeat(pad));
                out.push_str(&digits);
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(&text);
            }
        } else {
            out.push_str(&text);
        }
    }
    if argi < args.len() {
        return Err(e(format!("too many arguments; only {argi} used by format string")));
    }
    Ok(out)
}
