//! `RUN --mount=...` values, validated as BuildKit's `runmount.go` does.

use super::types::{MountSpec, MountType, Sharing};
use super::values::{ValueError, csv_fields, parse_go_bool, parse_ram_in_bytes};
use crate::diagnostic::closest;

/// Why a `--mount` value is refused (BuildKit's checks, our wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// The value is not CSV.
    #[error("invalid mount `{value}`: {reason}")]
    Csv {
        /// The whole value.
        value: String,
        /// What is wrong.
        reason: ValueError,
    },
    /// `size=` is not a size.
    #[error("invalid value for mount option `size`: {0}")]
    Size(ValueError),
    /// `mode=` is not octal.
    #[error("invalid value `{0}` for mount option `mode`: it must be octal")]
    Mode(String),
    /// `uid=`/`gid=` is not a number.
    #[error("invalid value `{value}` for mount option `{key}`")]
    Id {
        /// `uid` or `gid`.
        key: String,
        /// The value.
        value: String,
    },
    /// Not one of `size`, `mode`, `uid`, `gid`.
    #[error("`{0}` is not a numeric mount option")]
    NotNumeric(String),
    /// A field without `=` that is not a flag.
    #[error("invalid mount field `{0}`: it must be a key=value pair")]
    NotKeyValue(String),
    /// A boolean option with a value that is not a boolean.
    #[error("invalid value for mount option `{key}`: `{value}`")]
    Bool {
        /// The option.
        key: String,
        /// The value.
        value: String,
    },
    /// An unknown `type=`.
    #[error("unsupported mount type `{value}`{}", suggestion.map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    Type {
        /// The value.
        value: String,
        /// The closest known type.
        suggestion: Option<&'static str>,
    },
    /// An unknown `sharing=`.
    #[error("unsupported sharing value `{0}` (use shared, private or locked)")]
    Sharing(String),
    /// An unknown key.
    #[error("unexpected key `{key}` in mount option `{field}`")]
    UnknownKey {
        /// The key.
        key: String,
        /// The whole field.
        field: String,
    },
    /// `mode`/`uid`/`gid` on a mount type without files of its own.
    #[error("`{option}` is not allowed for `{kind}` mounts")]
    FileInfoNotAllowed {
        /// The option.
        option: &'static str,
        /// The mount type.
        kind: &'static str,
    },
    /// An option the mount type does not take.
    #[error("unexpected key `{option}` for mount type `{kind}`")]
    NotForType {
        /// The option.
        option: &'static str,
        /// The mount type.
        kind: &'static str,
    },
    /// `sharing=` on a mount that is not a cache.
    #[error("invalid cache sharing set for `{0}` mount")]
    SharingNotCache(&'static str),
    /// `from=` on a secret.
    #[error("secret mount should not have a `from`")]
    SecretFrom,
    /// A secret with nothing to name it.
    #[error("invalid secret mount: one of `id`, `source` or `target` is required")]
    SecretUnnamed,
    /// A secret with both `source` and `id`.
    #[error("secret mount: `source` and `id` can't both be set")]
    SecretSourceAndId,
    /// A mount without `target`.
    #[error("`{0}` mount requires a `target`")]
    NoTarget(&'static str),
}

const MOUNT_TYPES: [&str; 5] = ["bind", "cache", "tmpfs", "secret", "ssh"];

fn type_name(kind: MountType) -> &'static str {
    match kind {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
        MountType::Ssh => "ssh",
    }
}

/// Sets a numeric mount option (`size`, `mode`, `uid`, `gid`) from its
/// (expanded) text. Shared with lowering, which applies the options that
/// were written with variables.
pub fn set_numeric_option(m: &mut MountSpec, key: &str, val: &str) -> Result<(), MountError> {
    match key {
        "size" => {
            m.size = Some(parse_ram_in_bytes(val).map_err(MountError::Size)?);
        }
        "mode" => {
            m.mode = Some(u32::from_str_radix(val, 8).map_err(|_| MountError::Mode(val.to_string()))?);
        }
        "uid" | "gid" => {
            let id: u32 = val.parse().map_err(|_| MountError::Id { key: key.to_string(), value: val.to_string() })?;
            if key == "uid" {
                m.uid = Some(id);
            } else {
                m.gid = Some(id);
            }
        }
        other => return Err(MountError::NotNumeric(other.to_string())),
    }
    Ok(())
}

/// Parses one `--mount` value (`type=cache,target=/root/.cache,id=x`).
/// The caller adds the location to errors.
pub fn parse_mount(value: &str) -> Result<MountSpec, MountError> {
    let fields = csv_fields(value).map_err(|reason| MountError::Csv { value: value.to_string(), reason })?;
    let mut m = MountSpec {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        readonly: None,
        id: None,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        env: None,
        size: None,
        deferred: Vec::new(),
    };
    let mut sharing_set = false;
    let mut required_set = false;
    for field in fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => m.readonly = Some(true),
                "readwrite" | "rw" => m.readonly = Some(false),
                "required" => {
                    m.required = true;
                    required_set = true;
                }
                _ => return Err(MountError::NotKeyValue(field.clone())),
            }
            continue;
        };
        let bool_value =
            || parse_go_bool(&val).ok_or_else(|| MountError::Bool { key: key.clone(), value: val.clone() });
        match key.as_str() {
            "type" => {
                m.kind = match val.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => return Err(MountError::Type { suggestion: closest(&val, &MOUNT_TYPES), value: val }),
                }
            }
            "from" => m.from = Some(val),
            "source" | "src" => m.source = Some(val),
            "target" | "dst" | "destination" => m.target = Some(val),
            "readonly" | "ro" => m.readonly = Some(bool_value()?),
            "readwrite" | "rw" => m.readonly = Some(!bool_value()?),
            "required" => {
                m.required = bool_value()?;
                required_set = true;
            }
            "size" | "mode" | "uid" | "gid" if val.contains('$') => m.deferred.push((key.clone(), val)),
            "size" => set_numeric_option(&mut m, &key, &val)?,
            "id" => m.id = Some(val),
            "sharing" => {
                m.sharing = match val.to_ascii_lowercase().as_str() {
                    "" | "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ => return Err(MountError::Sharing(val)),
                };
                sharing_set = !val.is_empty();
            }
            "mode" | "uid" | "gid" => set_numeric_option(&mut m, &key, &val)?,
            "env" => m.env = Some(val),
            _ => return Err(MountError::UnknownKey { key, field: field.clone() }),
        }
    }

    let kind = type_name(m.kind);
    let file_info_allowed = matches!(m.kind, MountType::Secret | MountType::Ssh | MountType::Cache);
    if !file_info_allowed {
        let deferred = |name: &str| m.deferred.iter().any(|(k, _)| k == name);
        for (name, set) in [
            ("mode", m.mode.is_some() || deferred("mode")),
            ("uid", m.uid.is_some() || deferred("uid")),
            ("gid", m.gid.is_some() || deferred("gid")),
        ] {
            if set {
                return Err(MountError::FileInfoNotAllowed { option: name, kind });
            }
        }
    }
    if required_set && !matches!(m.kind, MountType::Secret | MountType::Ssh) {
        return Err(MountError::NotForType { option: "required", kind });
    }
    if m.size.is_some() && m.kind != MountType::Tmpfs {
        return Err(MountError::NotForType { option: "size", kind });
    }
    if sharing_set && m.kind != MountType::Cache {
        return Err(MountError::SharingNotCache(kind));
    }
    match m.kind {
        MountType::Secret => {
            if m.from.is_some() {
                return Err(MountError::SecretFrom);
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                return Err(MountError::SecretUnnamed);
            }
            if m.source.is_some() && m.id.is_some() {
                return Err(MountError::SecretSourceAndId);
            }
        }
        MountType::Ssh => {}
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if m.target.as_deref().is_none_or(str::is_empty) {
                return Err(MountError::NoTarget(kind));
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_mount_with_all_options() {
        let m = parse_mount(
            "type=cache,target=/root/.cache,id=go,sharing=locked,mode=0755,uid=1000,gid=1000,from=b,source=/s,rw",
        )
        .unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache"));
        assert_eq!(m.id.as_deref(), Some("go"));
        assert_eq!(m.sharing, Sharing::Locked);
        assert_eq!(m.mode, Some(0o755));
        assert_eq!((m.uid, m.gid), (Some(1000), Some(1000)));
        assert_eq!(m.readonly, Some(false));
    }

    #[test]
    fn defaults_and_aliases() {
        let m = parse_mount("dst=/x,src=y,ro=false").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert_eq!(m.readonly, Some(false));
        let m = parse_mount("type=secret,id=tok,required,env=TOKEN").unwrap();
        assert!(m.required);
        assert_eq!(m.env.as_deref(), Some("TOKEN"));
        let m = parse_mount("type=ssh").unwrap();
        assert_eq!(m.readonly, None);
        let m = parse_mount("type=tmpfs,destination=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = parse_mount("type=bind,target=/a,readonly").unwrap();
        assert_eq!(m.readonly, Some(true));
    }

    #[test]
    fn rejects_bad_mounts() {
        for (bad, needle) in [
            ("type=bnd,target=/a", "did you mean `bind`"),
            ("type=cache", "requires a `target`"),
            ("type=bind,target=/a,mode=0644", "not allowed"),
            ("type=cache,target=/a,mode=9", "octal"),
            ("type=cache,target=/a,sharing=odd", "sharing"),
            ("type=bind,target=/a,sharing=locked", "sharing"),
            ("type=bind,target=/a,required", "required"),
            ("type=cache,target=/a,size=1m", "size"),
            ("type=secret", "one of"),
            ("type=secret,id=a,from=b", "from"),
            ("type=secret,id=a,source=b", "both"),
            ("target=/a,bogus=1", "unexpected key"),
            ("target=/a,bogus", "key=value"),
            ("target=/a,ro=maybe", "invalid value"),
            ("type=cache,target=/a,uid=x", "uid"),
        ] {
            let err = parse_mount(bad).unwrap_err();
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }
}
