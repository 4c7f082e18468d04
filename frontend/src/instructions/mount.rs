//! `RUN --mount=...` values, validated as BuildKit's `runmount.go` does.

use super::types::{MountSpec, MountType, Sharing};
use super::values::{csv_fields, parse_go_bool, parse_ram_in_bytes};
use crate::diagnostic::closest;

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
pub fn set_numeric_option(m: &mut MountSpec, key: &str, val: &str) -> Result<(), String> {
    match key {
        "size" => {
            m.size = Some(parse_ram_in_bytes(val).map_err(|e| format!("invalid value for mount option `size`: {e}"))?);
        }
        "mode" => {
            m.mode = Some(
                u32::from_str_radix(val, 8)
                    .map_err(|_| format!("invalid value `{val}` for mount option `mode`: it must be octal"))?,
            );
        }
        "uid" | "gid" => {
            let id: u32 = val.parse().map_err(|_| format!("invalid value `{val}` for mount option `{key}`"))?;
            if key == "uid" {
                m.uid = Some(id);
            } else {
                m.gid = Some(id);
            }
        }
        other => return Err(format!("`{other}` is not a numeric mount option")),
    }
    Ok(())
}

/// Parses one `--mount` value (`type=cache,target=/root/.cache,id=x`).
/// Errors are messages; the caller adds the location.
pub fn parse_mount(value: &str) -> Result<MountSpec, String> {
    let fields = csv_fields(value).map_err(|e| format!("invalid mount `{value}`: {e}"))?;
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
                _ => return Err(format!("invalid mount field `{field}`: it must be a key=value pair")),
            }
            continue;
        };
        let bool_value =
            || parse_go_bool(&val).ok_or_else(|| format!("invalid value for mount option `{key}`: `{val}`"));
        match key.as_str() {
            "type" => {
                m.kind = match val.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let mut msg = format!("unsupported mount type `{val}`");
                        if let Some(s) = closest(&val, &MOUNT_TYPES) {
                            msg.push_str(&format!(" (did you mean `{s}`?)"));
                        }
                        return Err(msg);
                    }
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
                    _ => return Err(format!("unsupported sharing value `{val}` (use shared, private or locked)")),
                };
                sharing_set = !val.is_empty();
            }
            "mode" | "uid" | "gid" => set_numeric_option(&mut m, &key, &val)?,
            "env" => m.env = Some(val),
            _ => return Err(format!("unexpected key `{key}` in mount option `{field}`")),
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
                return Err(format!("`{name}` is not allowed for `{kind}` mounts"));
            }
        }
    }
    if required_set && !matches!(m.kind, MountType::Secret | MountType::Ssh) {
        return Err(format!("unexpected key `required` for mount type `{kind}`"));
    }
    if m.size.is_some() && m.kind != MountType::Tmpfs {
        return Err(format!("unexpected key `size` for mount type `{kind}`"));
    }
    if sharing_set && m.kind != MountType::Cache {
        return Err(format!("invalid cache sharing set for `{kind}` mount"));
    }
    match m.kind {
        MountType::Secret => {
            if m.from.is_some() {
                return Err("secret mount should not have a `from`".into());
            }
            if m.source.is_none() && m.target.is_none() && m.id.is_none() {
                return Err("invalid secret mount: one of `id`, `source` or `target` is required".into());
            }
            if m.source.is_some() && m.id.is_some() {
                return Err("secret mount: `source` and `id` can't both be set".into());
            }
        }
        MountType::Ssh => {}
        MountType::Bind | MountType::Cache | MountType::Tmpfs => {
            if m.target.as_deref().is_none_or(str::is_empty) {
                return Err(format!("`{kind}` mount requires a `target`"));
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
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
