//! Resolving `USER` strings (`user[:group]`) against the rootfs's `/etc/passwd` and `/etc/group`.
//!
//! Follows runc's `GetExecUser`: numeric ids need no entry; names must
//! exist; supplementary groups are the groups listing the user's name (none
//! when a group is given); the
//! home directory comes from the passwd entry (default `/`).

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].trim().parse().ok()?,
            gid: f[3].trim().parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn group_entries(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || l.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].trim().parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').map(str::trim).filter(|m| !m.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Why a `user[:group]` cannot be resolved in the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A user name the image's `/etc/passwd` does not have.
    #[error("no user `{0}` in the image's /etc/passwd")]
    NoUser(String),
    /// Neither a name nor a number.
    #[error("invalid user `{0}`")]
    InvalidUser(String),
    /// `user:` with nothing after the colon.
    #[error("empty group")]
    EmptyGroup,
    /// A group name the image's `/etc/group` does not have.
    #[error("no group `{0}` in the image's /etc/group")]
    NoGroup(String),
}

/// Resolves `spec` with the contents of `/etc/passwd` and `/etc/group` (empty if absent).
pub(crate) fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => {
            Some(passwd_entries(passwd).find(|e| e.name == user).ok_or_else(|| UserError::NoUser(user.to_string()))?)
        }
    };
    let uid = match &entry {
        Some(e) => e.uid,
        None => user.parse::<u32>().map_err(|_| UserError::InvalidUser(user.to_string()))?,
    };
    let name = entry.as_ref().map(|e| e.name).unwrap_or("");
    let mut gid = entry.as_ref().map(|e| e.gid).unwrap_or(0);
    if let Some(g) = grp {
        if g.is_empty() {
            return Err(UserError::EmptyGroup);
        }
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        };
    }
    // runc's `GetExecUser` (what BuildKit hands runc as `AdditionalGids`):
    // supplementary groups are the groups listing the user, and only in
    // the implicit form — `user:group` gets none, not even its own gid.
    let mut groups = Vec::new();
    if grp.is_none() && !name.is_empty() {
        for e in group_entries(group) {
            if e.members.contains(&name) && !groups.contains(&e.gid) {
                groups.push(e.gid);
            }
        }
    }
    let home = entry.map(|e| e.home).filter(|h| !h.is_empty()).unwrap_or("/").to_string();
    Ok(ExecUser { uid, gid, groups, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1001::/home/builder:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:builder,other\nbuilders:x:1001:\nwheel:x:10:builder\n";

    #[test]
    fn root_by_default() {
        let u = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn names_and_supplementary_groups() {
        let u = resolve("builder", PASSWD, GROUP).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1001));
        // The primary group is not listed unless /etc/group names the user.
        assert_eq!(u.groups, vec![50, 10]);
        assert_eq!(u.home, "/home/builder");
        let u = resolve("builder:staff", PASSWD, GROUP).unwrap();
        assert_eq!(u.gid, 50);
        assert_eq!(u.groups, Vec::<u32>::new(), "an explicit group gives no supplementary groups");
    }

    #[test]
    fn numeric_ids_need_no_files() {
        let u = resolve("1000:1000", "", "").unwrap();
        assert_eq!((u.uid, u.gid, u.groups.clone(), u.home.as_str()), (1000, 1000, vec![], "/"));
        let u = resolve("1000", PASSWD, GROUP).unwrap();
        assert_eq!(u.gid, 1001, "gid of a numeric uid comes from passwd");
    }

    #[test]
    fn unknown_names_fail() {
        assert_eq!(resolve("nobody", PASSWD, GROUP).unwrap_err(), UserError::NoUser("nobody".into()));
        assert_eq!(resolve("0:nogroup", PASSWD, GROUP).unwrap_err(), UserError::NoGroup("nogroup".into()));
        assert!(resolve("0:", PASSWD, GROUP).is_err());
    }
}
