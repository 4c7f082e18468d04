//! How BuildKit spells history entries (`created_by`), so `docker history`
//! of an rbuild image reads like one built by BuildKit.

use rbuild_cache::oci::HealthConfig;
use rbuild_solver::graph::Chown;

use crate::parser::go_quote;

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub(crate) fn go_quote_slice(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(" "))
}

/// `RUN` history text: `|N K=V ... argv` when build args are set (as
/// BuildKit's `runCommandString`), then `# buildkit` is appended by the caller.
pub(crate) fn run_command_string(argv: &[String], args: &[(String, String)]) -> String {
    let mut out = String::new();
    if !args.is_empty() {
        out.push_str(&format!("|{} ", args.len()));
        for (k, v) in args {
            out.push_str(&format!("{k}={v} "));
        }
    }
    out.push_str(&argv.join(" "));
    out
}

/// `HEALTHCHECK` history text as BuildKit prints its struct.
pub(crate) fn healthcheck(h: &HealthConfig) -> String {
    let dur = |ns: i64| {
        if ns == 0 {
            "0s".to_string()
        } else if ns % 1_000_000_000 == 0 {
            format!("{}s", ns / 1_000_000_000)
        } else {
            format!("{}ms", ns / 1_000_000)
        }
    };
    format!(
        "HEALTHCHECK &{{{} {:?} {:?} {:?} {:?} '\\x{:02x}'}}",
        go_quote_slice(&h.test),
        dur(h.interval),
        dur(h.timeout),
        dur(h.start_period),
        dur(h.start_interval),
        h.retries
    )
}

/// The owner BuildKit gives directories created by WORKDIR: the stage's
/// USER, when set.
pub(crate) fn chown_for_user(user: &str) -> Option<Chown> {
    if user.is_empty() {
        return None;
    }
    Some(parse_chown(user))
}

/// Splits `user[:group]`.
pub(crate) fn parse_chown(s: &str) -> Chown {
    match s.split_once(':') {
        Some((u, g)) => Chown { user: u.to_string(), group: Some(g.to_string()) },
        None => Chown { user: s.to_string(), group: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(
            go_quote_slice(&["/bin/sh".into(), "-c".into(), "echo \"hi\"\n".into()]),
            r#"["/bin/sh" "-c" "echo \"hi\"\n"]"#
        );
    }

    #[test]
    fn run_string_lists_args() {
        assert_eq!(
            run_command_string(&["/bin/sh".into(), "-c".into(), "make".into()], &[("V".into(), "1".into())]),
            "|1 V=1 /bin/sh -c make"
        );
    }
}
