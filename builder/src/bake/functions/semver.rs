//! `semvercmp`: Masterminds/semver constraint checks.

use super::e;
use crate::bake::eval::EvalError;

/// A semantic version (`v1.2.3-rc.1`); missing minor/patch count as 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Version {
    nums: [u64; 3],
    pre: String,
}

impl Version {
    fn parse(x: &str) -> Option<Version> {
        let x = x.trim().trim_start_matches(['v', 'V']);
        let x = x.split('+').next()?;
        let (core, pre) = x.split_once('-').unwrap_or((x, ""));
        let mut nums = [0u64; 3];
        let parts: Vec<&str> = core.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        for (i, p) in parts.iter().enumerate() {
            nums[i] = p.parse().ok()?;
        }
        Some(Version { nums, pre: pre.to_string() })
    }
    fn cmp(&self, o: &Version) -> std::cmp::Ordering {
        self.nums.cmp(&o.nums).then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
            (true, true) => std::cmp::Ordering::Equal,
            (true, false) => std::cmp::Ordering::Greater,
            (false, true) => std::cmp::Ordering::Less,
            (false, false) => self.pre.cmp(&o.pre),
        })
    }
}

/// Masterminds/semver constraint check: `||` of comma/space-separated
/// comparisons (`=`, `!=`, `>`, `>=`, `<`, `<=`, `~`, `^`, wildcards).
pub(super) fn semver_check(version: &str, constraint: &str) -> Result<bool, EvalError> {
    let v = Version::parse(version).ok_or_else(|| e(format!("invalid semantic version {version:?}")))?;
    for alt in constraint.split("||") {
        let mut ok = true;
        // `>= 1.2` may have a space after the operator: glue it back on.
        let mut parts: Vec<String> = Vec::new();
        let mut pending = String::new();
        for tok in alt.split([',', ' ', '\t']).map(str::trim).filter(|c| !c.is_empty()) {
            if tok.chars().all(|c| "=<>!~^".contains(c)) {
                pending.push_str(tok);
            } else {
                parts.push(format!("{pending}{tok}"));
                pending.clear();
            }
        }
        for c in &parts {
            if !semver_one(&v, c)? {
                ok = false;
            }
        }
        if ok {
            return Ok(true);
        }
    }
    Ok(false)
}

pub(super) fn semver_one(v: &Version, c: &str) -> Result<bool, EvalError> {
    let op_end =
        c.find(|ch: char| ch.is_ascii_digit() || ch == 'v' || ch == 'x' || ch == 'X' || ch == '*').unwrap_or(c.len());
    let (op, rest) = c.split_at(op_end);
    let op = op.trim();
    let parts: Vec<&str> = rest.trim_start_matches('v').split('-').next().unwrap_or("").split('.').collect();
    let wild = |p: Option<&&str>| p.is_none_or(|p| matches!(*p, "x" | "X" | "*"));
    let digits = parts.iter().take_while(|p| !matches!(**p, "x" | "X" | "*")).count();
    if rest == "*" || rest.is_empty() {
        return Ok(true);
    }
    let bound =
        Version::parse(&parts.iter().map(|p| if wild(Some(p)) { "0" } else { p }).collect::<Vec<_>>().join("."))
            .ok_or_else(|| e(format!("improper constraint: {c}")))?;
    let bound = Version { pre: rest.split_once('-').map(|x| x.1.to_string()).unwrap_or_default(), ..bound };
    let upper = |level: usize| {
        let mut n = bound.nums;
        n[level] += 1;
        for x in n.iter_mut().skip(level + 1) {
            *x = 0;
        }
        Version { nums: n, pre: String::new() }
    };
    use std::cmp::Ordering::*;
    let ge = |b: &Version| v.cmp(b) != Less;
    let lt = |b: &Version| v.cmp(b) == Less;
    Ok(match op {
        "" | "=" if digits < 3 => ge(&bound) && (digits == 0 || lt(&upper(digits - 1))),
        "" | "=" => v.cmp(&bound) == Equal,
        "!=" => v.cmp(&bound) != Equal,
        ">" => v.cmp(&bound) == Greater,
        ">=" | "=>" => ge(&bound),
        "<" => lt(&bound),
        "<=" | "=<" => v.cmp(&bound) != Greater,
        "~" | "~>" => ge(&bound) && lt(&upper(if digits >= 2 { 1 } else { 0 })),
        "^" => {
            let level = if bound.nums[0] > 0 || digits == 1 {
                0
            } else if bound.nums[1] > 0 || digits == 2 {
                1
            } else {
                2
            };
            ge(&bound) && lt(&upper(level))
        }
        _ => return Err(e(format!("improper constraint: {c}"))),
    })
}
