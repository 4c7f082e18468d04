//! Whether an entry may be given an owner: the one check that `ADD`'s
//! archive extraction, layer unpacking with explicit owners and the
//! solver's `COPY --chown`/`WORKDIR`/stage copies all make before writing
//! anything, so a file never silently keeps the builder's ids (which would
//! turn a setuid file of an unmapped user into a setuid-root one).

/// An owner an entry cannot be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// An id of 4294967295, which `chown(2)` reads as "leave unchanged"
    /// (or an archive id beyond 32 bits, which would be truncated).
    #[error("cannot give `{path}` the owner {uid}:{gid}: ids must be below 4294967295")]
    Invalid {
        /// The entry (as written in the action or the archive).
        path: String,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
    /// The owner is not mapped in this user namespace.
    #[error(
        "cannot give `{path}` the owner {uid}:{gid}: that id is not mapped in this rootless user namespace; try increasing the number of subordinate IDs in /etc/subuid and /etc/subgid, or build as root"
    )]
    Unmapped {
        /// The entry (as written in the action or the archive).
        path: String,
        /// Owner uid.
        uid: u32,
        /// Owner gid.
        gid: u32,
    },
}

/// Fails unless `uid:gid` is a real owner (not `4294967295`) that
/// `representable` says this user namespace can represent. `path` names
/// the entry in the error only.
pub fn check_owner(
    path: impl FnOnce() -> String,
    uid: u32,
    gid: u32,
    representable: &dyn Fn(u32, u32) -> bool,
) -> Result<(), OwnerError> {
    if uid == u32::MAX || gid == u32::MAX {
        return Err(OwnerError::Invalid { path: path(), uid, gid });
    }
    if representable(uid, gid) { Ok(()) } else { Err(OwnerError::Unmapped { path: path(), uid, gid }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_and_unmapped_owners() {
        let small = |u: u32, g: u32| u < 65536 && g < 65536;
        assert_eq!(check_owner(|| "a".into(), 1000, 1000, &small), Ok(()));
        let e = check_owner(|| "a".into(), 70000, 1, &small).unwrap_err();
        assert_eq!(e, OwnerError::Unmapped { path: "a".into(), uid: 70000, gid: 1 });
        assert!(e.to_string().contains("try increasing the number of subordinate IDs in /etc/subuid and /etc/subgid"));
        let all = |_: u32, _: u32| true;
        assert!(matches!(check_owner(|| "b".into(), u32::MAX, 0, &all), Err(OwnerError::Invalid { .. })));
        assert!(matches!(check_owner(|| "b".into(), 0, u32::MAX, &all), Err(OwnerError::Invalid { .. })));
    }
}
