//! Path resolution confined to a root directory.
//!
//! Every path a file action names is resolved *inside* a root: `..` stops at
//! the root and a symlink is read and re-resolved relative to the root (an
//! absolute target restarts at the root), so no path ever leads outside it.
//! This is what containerd's `fs.RootPath` (used by BuildKit's file backend)
//! does, and what `openat2(RESOLVE_IN_ROOT)` does in the kernel. We resolve in
//! user space because the result must be a plain path the copy engine can
//! hand to rayon workers; the roots are private to one build step, so nothing
//! changes them while we resolve.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Linux's limit on symlinks followed during one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Splits a slash path into its normal components (drops empty and `.`).
fn components(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|b| *b == b'/').filter(|c| !c.is_empty() && *c != b".")
}

/// Lexically cleans `p` as a path relative to a root: removes `.` and empty
/// components and clamps `..` at the root. Returns `""` for the root itself.
pub fn clean_rel(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

/// Resolves `rel` (relative or absolute, both meaning "from the root") inside
/// `root`, following symlinks without ever leaving `root`.
///
/// With `follow_final == false` the last component is not followed when it
/// is a symlink (an `lstat` view), as needed to remove or replace a link.
/// Components that do not exist are appended lexically, so the result names
/// where such a path would be created. Returns the resolved path relative to
/// the root, as components.
pub fn resolve_in_root(root: &Path, rel: &str, follow_final: bool) -> io::Result<Vec<OsString>> {
    resolve_bytes_in_root(root, rel.as_bytes(), follow_final)
}

/// [`resolve_in_root`] for a path given as bytes: file names need not be
/// UTF-8 (a context file or tar entry named `\xff`), and are never altered.
pub fn resolve_bytes_in_root(root: &Path, rel: &[u8], follow_final: bool) -> io::Result<Vec<OsString>> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<Vec<u8>> = components(rel).map(<[u8]>::to_vec).collect();
    let mut links = 0usize;
    // Index of the first component known not to exist: below it nothing
    // can be a symlink, so resolution is lexical until `..` climbs back out.
    let mut missing_at: Option<usize> = None;
    while let Some(c) = pending.pop_front() {
        if c == b".." {
            resolved.pop();
            if missing_at.is_some_and(|m| resolved.len() <= m) {
                missing_at = None;
            }
            continue;
        }
        let name = OsStr::from_bytes(&c).to_os_string();
        if missing_at.is_some() || (pending.is_empty() && !follow_final) {
            resolved.push(name);
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(resolved.iter());
        candidate.push(&name);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.starts_with(b"/") {
                    resolved.clear();
                }
                let mut parts: Vec<Vec<u8>> = components(bytes).map(<[u8]>::to_vec).collect();
                while let Some(p) = parts.pop() {
                    pending.push_front(p);
                }
            }
            Ok(_) => resolved.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                missing_at = Some(resolved.len());
                resolved.push(name);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(resolved)
}

/// [`resolve_in_root`] joined onto `root`.
pub fn root_path(root: &Path, rel: &str, follow_final: bool) -> io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    p.extend(resolve_in_root(root, rel, follow_final)?);
    Ok(p)
}

/// [`resolve_bytes_in_root`] joined onto `root`.
pub fn root_path_bytes(root: &Path, rel: &[u8], follow_final: bool) -> io::Result<PathBuf> {
    let mut p = root.to_path_buf();
    p.extend(resolve_bytes_in_root(root, rel, follow_final)?);
    Ok(p)
}

/// The components joined with `/`, byte-exact.
pub fn join_slash(parts: &[OsString]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p.as_bytes());
    }
    out
}

/// `a/b` of two byte paths (`b` alone when `a` is empty).
pub fn join_bytes(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + 1 + b.len());
    if !a.is_empty() {
        out.extend_from_slice(a);
        out.push(b'/');
    }
    out.extend_from_slice(b);
    out
}

/// A path as the string moby's pattern matcher sees it. Go strings are
/// bytes and its regexp engine reads each byte of an invalid UTF-8
/// sequence as one U+FFFD, so a name that is not UTF-8 becomes one U+FFFD
/// per invalid byte: `?` matches one such byte, `*` any run of them, as in
/// `.dockerignore` handling by BuildKit. Valid UTF-8 is borrowed unchanged.
pub fn go_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                for _ in chunk.invalid() {
                    out.push(char::REPLACEMENT_CHARACTER);
                }
            }
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn non_utf8_names_resolve_byte_exact_and_match_as_go_does() {
        let t = tempfile::tempdir().unwrap();
        let name = OsStr::from_bytes(b"caf\xe9\xff");
        std::fs::create_dir(t.path().join(name)).unwrap();
        let parts = resolve_bytes_in_root(t.path(), b"/caf\xe9\xff/x", true).unwrap();
        assert_eq!(join_slash(&parts), b"caf\xe9\xff/x");
        // One U+FFFD per invalid byte, as Go's regexp decodes them.
        assert_eq!(go_lossy(b"caf\xe9\xff"), "caf\u{fffd}\u{fffd}");
        assert_eq!(go_lossy(b"\xe2\x82a"), "\u{fffd}\u{fffd}a");
        assert!(matches!(go_lossy("ünï".as_bytes()), Cow::Borrowed("ünï")));
        assert_eq!(join_bytes(b"", b"a"), b"a");
        assert_eq!(join_bytes(b"a", b"\xff"), b"a/\xff");
    }

    #[test]
    fn clean_clamps_dotdot() {
        assert_eq!(clean_rel("/a/./b/../../../c/"), "c");
        assert_eq!(clean_rel("../.."), "");
        assert_eq!(clean_rel("a//b"), "a/b");
    }

    #[test]
    fn symlinks_stay_inside_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("real/sub")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(root_path(root, "abs/passwd", true).unwrap(), root.join("etc/passwd"));
        assert_eq!(root_path(root, "up/sub", true).unwrap(), root.join("real/sub"));
        assert_eq!(root_path(root, "/../../real/../abs", false).unwrap(), root.join("abs"));
        assert_eq!(root_path(root, "missing/../../x", true).unwrap(), root.join("x"));
        let e = root_path(root, "loop", true).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
    }
}
