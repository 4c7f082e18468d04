//! Resource limits of a `RUN`: `--ulimit` rlimits, set by pid 1 before it
//! switches user (raising a hard limit needs `CAP_SYS_RESOURCE`).
//!
//! Names and value syntax follow Docker's `--ulimit` (go-units):
//! `NAME=SOFT[:HARD]`, `-1` meaning unlimited.

use serde::{Deserialize, Serialize};

/// One rlimit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Which resource.
    pub resource: Resource,
    /// Soft limit; `None` is unlimited.
    pub soft: Option<u64>,
    /// Hard limit; `None` is unlimited.
    pub hard: Option<u64>,
}

/// An rlimit resource, by Docker's `--ulimit` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Resource {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

const NAMES: [(&str, Resource); 16] = [
    ("as", Resource::As),
    ("core", Resource::Core),
    ("cpu", Resource::Cpu),
    ("data", Resource::Data),
    ("fsize", Resource::Fsize),
    ("locks", Resource::Locks),
    ("memlock", Resource::Memlock),
    ("msgqueue", Resource::Msgqueue),
    ("nice", Resource::Nice),
    ("nofile", Resource::Nofile),
    ("nproc", Resource::Nproc),
    ("rss", Resource::Rss),
    ("rtprio", Resource::Rtprio),
    ("rttime", Resource::Rttime),
    ("sigpending", Resource::Sigpending),
    ("stack", Resource::Stack),
];

/// A malformed `--ulimit` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    /// No `=`.
    #[error("invalid ulimit `{0}`: expected `NAME=SOFT[:HARD]`")]
    Syntax(String),
    /// Unknown resource name.
    #[error("invalid ulimit `{name}`: unknown resource (one of {})", NAMES.map(|(n, _)| n).join(", "))]
    Name {
        /// The name given.
        name: String,
    },
    /// A limit that is not a number.
    #[error("invalid ulimit value `{0}`: expected a number or -1 (unlimited)")]
    Value(String),
    /// Soft above hard.
    #[error("invalid ulimit `{0}`: the soft limit must not exceed the hard limit")]
    SoftAboveHard(String),
}

impl Resource {
    /// The `--ulimit` name.
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, r)| *r == self).map(|(n, _)| *n).unwrap_or("?")
    }

    fn raw(self) -> rustix::process::Resource {
        use rustix::process::Resource as R;
        match self {
            Resource::As => R::As,
            Resource::Core => R::Core,
            Resource::Cpu => R::Cpu,
            Resource::Data => R::Data,
            Resource::Fsize => R::Fsize,
            Resource::Locks => R::Locks,
            Resource::Memlock => R::Memlock,
            Resource::Msgqueue => R::Msgqueue,
            Resource::Nice => R::Nice,
            Resource::Nofile => R::Nofile,
            Resource::Nproc => R::Nproc,
            Resource::Rss => R::Rss,
            Resource::Rtprio => R::Rtprio,
            Resource::Rttime => R::Rttime,
            Resource::Sigpending => R::Sigpending,
            Resource::Stack => R::Stack,
        }
    }
}

impl std::str::FromStr for Rlimit {
    type Err = UlimitError;

    /// `NAME=SOFT[:HARD]`; a missing hard limit equals the soft one.
    fn from_str(s: &str) -> Result<Rlimit, UlimitError> {
        let (name, value) = s.split_once('=').ok_or_else(|| UlimitError::Syntax(s.to_string()))?;
        let resource = NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .ok_or_else(|| UlimitError::Name { name: name.to_string() })?;
        let (soft, hard) = value.split_once(':').unwrap_or((value, value));
        let parse = |v: &str| -> Result<Option<u64>, UlimitError> {
            match v.parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if n >= 0 => Ok(Some(n as u64)),
                _ => Err(UlimitError::Value(v.to_string())),
            }
        };
        let (soft, hard) = (parse(soft)?, parse(hard)?);
        let above = match (soft, hard) {
            (None, Some(_)) => true,
            (Some(s), Some(h)) => s > h,
            _ => false,
        };
        if above {
            return Err(UlimitError::SoftAboveHard(s.to_string()));
        }
        Ok(Rlimit { resource, soft, hard })
    }
}

impl std::fmt::Display for Rlimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: Option<u64>| x.map_or("-1".to_string(), |n| n.to_string());
        write!(f, "{}={}:{}", self.resource.name(), v(self.soft), v(self.hard))
    }
}

/// A limit the kernel refused.
#[derive(Debug, thiserror::Error)]
pub enum RlimitError {
    /// Above the current hard limit: the kernel only lets `CAP_SYS_RESOURCE`
    /// in the initial user namespace raise it, which a process inside
    /// rbuild's user namespace never has, even when rbuild runs as root.
    #[error(
        "cannot set ulimit `{limit}`: the hard limit rbuild started with is {hard}, and inside its user namespace it can only be lowered (raise it where rbuild starts, e.g. `ulimit -H`)"
    )]
    AboveHard {
        /// The limit asked for.
        limit: Rlimit,
        /// The current hard limit (`unlimited` or a number).
        hard: String,
    },
    /// Another refusal.
    #[error("cannot set ulimit `{limit}`")]
    Set {
        /// The limit asked for.
        limit: Rlimit,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Sets `limits` on the calling process (inherited across `execve`).
pub(crate) fn apply(limits: &[Rlimit]) -> Result<(), RlimitError> {
    for l in limits {
        let r = rustix::process::Rlimit { current: l.soft, maximum: l.hard };
        if let Err(e) = rustix::process::setrlimit(l.resource.raw(), r) {
            let hard = rustix::process::getrlimit(l.resource.raw()).maximum;
            let raises = match (l.hard, hard) {
                (_, None) => false,
                (None, Some(_)) => true,
                (Some(want), Some(have)) => want > have,
            };
            return Err(if e == rustix::io::Errno::PERM && raises {
                RlimitError::AboveHard { limit: *l, hard: hard.map_or("unlimited".into(), |h| h.to_string()) }
            } else {
                RlimitError::Set { limit: *l, source: e.into() }
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimit_values_parse_as_docker_does() {
        let l: Rlimit = "nofile=1024:2048".parse().unwrap();
        assert_eq!(l, Rlimit { resource: Resource::Nofile, soft: Some(1024), hard: Some(2048) });
        let l: Rlimit = "nproc=100".parse().unwrap();
        assert_eq!((l.soft, l.hard), (Some(100), Some(100)));
        let l: Rlimit = "core=-1".parse().unwrap();
        assert_eq!((l.soft, l.hard), (None, None));
        let l: Rlimit = "stack=8192:-1".parse().unwrap();
        assert_eq!((l.soft, l.hard), (Some(8192), None));
        assert_eq!(l.to_string(), "stack=8192:-1");
    }

    #[test]
    fn bad_ulimits_are_refused() {
        assert!(matches!("nofiles=1".parse::<Rlimit>(), Err(UlimitError::Name { name }) if name == "nofiles"));
        assert!(matches!("nofile".parse::<Rlimit>(), Err(UlimitError::Syntax(_))));
        assert!(matches!("nofile=ten".parse::<Rlimit>(), Err(UlimitError::Value(v)) if v == "ten"));
        assert!(matches!("nofile=-2".parse::<Rlimit>(), Err(UlimitError::Value(_))));
        assert!(matches!("nofile=2048:1024".parse::<Rlimit>(), Err(UlimitError::SoftAboveHard(_))));
        assert!(matches!("nofile=-1:1024".parse::<Rlimit>(), Err(UlimitError::SoftAboveHard(_))));
        let msg = "x=1".parse::<Rlimit>().unwrap_err().to_string();
        assert!(msg.contains("nofile") && msg.contains("`x`"), "{msg}");
    }
}
