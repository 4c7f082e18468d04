//! Unpacker tests with real archives built by the `tar` crate, including
//! hostile ones written with raw headers (the builder refuses `..`).

use super::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use tar::{EntryType, Header};

const T0: u64 = 1_600_000_000;

/// Archive builder that writes names and link targets verbatim.
struct Tb(tar::Builder<Vec<u8>>);

impl Tb {
    fn new() -> Tb {
        Tb(tar::Builder::new(Vec::new()))
    }

    fn header(name: &[u8], kind: EntryType, size: u64, mode: u32) -> Header {
        let mut h = Header::new_gnu();
        assert!(name.len() < 100, "use long() for long names");
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(T0);
        h
    }

    fn add(&mut self, name: &str, kind: EntryType, data: &[u8], mode: u32) -> &mut Tb {
        let mut h = Self::header(name.as_bytes(), kind, data.len() as u64, mode);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Tb {
        self.add(name, EntryType::Regular, data, 0o644)
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Tb {
        self.add(name, EntryType::Directory, b"", mode)
    }

    fn owned(&mut self, name: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> &mut Tb {
        let mut h = Self::header(name.as_bytes(), EntryType::Regular, data.len() as u64, mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn link(&mut self, name: &str, kind: EntryType, target: &str) -> &mut Tb {
        let mut h = Self::header(name.as_bytes(), kind, 0, 0o777);
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        self.0.append(&h, io::empty()).unwrap();
        self
    }

    fn dev(&mut self, name: &str, kind: EntryType, major: u32, minor: u32) -> &mut Tb {
        let mut h = Self::header(name.as_bytes(), kind, 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.0.append(&h, io::empty()).unwrap();
        self
    }

    /// A PAX extended header applying to the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tb {
        let mut data = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n" where len counts itself.
            let body = 1 + k.len() + 1 + v.len() + 1;
            let mut len = body + 1;
            while len != body + len.to_string().len() {
                len = body + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.add("PaxHeaders/x", EntryType::XHeader, &data, 0o644)
    }

    /// A long name through the builder's GNU long-name support.
    fn long(&mut self, name: &str, data: &[u8]) -> &mut Tb {
        let mut h = Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(T0);
        h.set_entry_type(EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        self.0.append_data(&mut h, name, data).unwrap();
        self
    }

    fn bytes(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.0, tar::Builder::new(Vec::new())).into_inner().unwrap()
    }
}

struct Fixture {
    _t: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

/// `dest` plus a sibling `outside/secret` that no archive may touch.
fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    let outside = t.path().join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    Fixture { _t: t, dest, outside }
}

impl Fixture {
    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, UnpackError> {
        unpack_layer(tar, &self.dest, &UnpackOptions { chown: true })
    }

    fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.outside).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, vec![OsString::from("secret")], "outside gained entries");
        let m = fs::symlink_metadata(self.outside.join("secret")).unwrap();
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"secret");
        assert_eq!(m.nlink(), 1, "no hardlink to the outside file");
        assert!(!is_opaque_dir(&self.outside));
        let parent = self.outside.parent().unwrap();
        let mut top: Vec<_> = fs::read_dir(parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        top.sort();
        assert_eq!(top, vec![OsString::from("dest"), OsString::from("outside")]);
    }
}

fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            // Implicitly created directories get the current time.
            let mtime = if m.is_dir() { 0 } else { m.mtime() };
            out.push(format!("{rel} {:o} {} {mtime}", m.mode(), m.size()));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn all_kinds() -> Vec<u8> {
    let long_name = format!("deep/{}/file", "x".repeat(120));
    let pax_name = format!("pax/{}", "p".repeat(200));
    let mut tb = Tb::new();
    tb.dir("./", 0o755)
        .dir("etc/", 0o751)
        .owned("etc/passwd", b"root:x:0:0\n", 0o640, 1000, 1001)
        .owned("usr/bin/su", b"#!su", 0o4755, 0, 0)
        .dir("ro/", 0o555)
        .file("ro/inside", b"written into a read-only dir")
        .link("etc/link", EntryType::Symlink, "passwd")
        .link("etc/hard", EntryType::Link, "etc/passwd")
        .add("run/fifo", EntryType::Fifo, b"", 0o620)
        .dev("dev/null", EntryType::Char, 1, 3)
        .dev("dev/sda", EntryType::Block, 8, 0)
        .dev("dev/wh", EntryType::Char, 0, 0)
        .file("etc/.wh.gone", b"")
        .file("opq/.wh..wh..opq", b"")
        .dir("opq/", 0o700)
        .file(".wh..wh.plnk", b"")
        .long(&long_name, b"long")
        .pax(&[
            ("path", pax_name.as_bytes()),
            ("mtime", b"1600000000.123456789"),
            ("SCHILY.xattr.user.test", b"hello"),
            ("SCHILY.xattr.user.overlay.opaque", b"y"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
            ("uid", b"70000"),
        ])
        .file("ignored-name", b"pax content");
    tb.bytes()
}

#[test]
fn unpacks_every_entry_kind() {
    let f = fixture();
    let d = &f.dest;
    let stats = f.unpack(&all_kinds()).unwrap();
    assert_eq!(fs::read(d.join("etc/passwd")).unwrap(), b"root:x:0:0\n");
    let passwd = fs::symlink_metadata(d.join("etc/passwd")).unwrap();
    assert_eq!((passwd.uid(), passwd.gid(), passwd.mode() & 0o7777), (1000, 1001, 0o640));
    assert_eq!(passwd.mtime(), T0 as i64);
    assert_eq!(fs::metadata(d.join("usr/bin/su")).unwrap().mode() & 0o7777, 0o4755);
    let ro = fs::metadata(d.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_eq!(fs::read(d.join("ro/inside")).unwrap(), b"written into a read-only dir");
    let etc = fs::metadata(d.join("etc")).unwrap();
    assert_eq!((etc.mode() & 0o7777, etc.mtime()), (0o751, T0 as i64), "dir metadata applied last");
    assert_eq!(fs::read_link(d.join("etc/link")).unwrap(), Path::new("passwd"));
    assert_eq!(fs::symlink_metadata(d.join("etc/hard")).unwrap().ino(), passwd.ino());
    let fifo = fs::symlink_metadata(d.join("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    assert!(!d.join("dev/null").exists() && !d.join("dev/sda").exists());
    assert!(is_overlay_whiteout(&fs::symlink_metadata(d.join("dev/wh")).unwrap()));
    let gone = fs::symlink_metadata(d.join("etc/gone")).unwrap();
    assert!(is_overlay_whiteout(&gone));
    assert_eq!(gone.mtime(), T0 as i64, "whiteouts carry the entry's mtime");
    assert!(!is_overlay_whiteout(&passwd));
    assert!(is_opaque_dir(&d.join("opq")));
    assert!(!is_opaque_dir(&d.join("etc")));
    assert!(!d.join(".wh..wh.plnk").exists());
    assert_eq!(fs::read(d.join(format!("deep/{}/file", "x".repeat(120)))).unwrap(), b"long");

    let pax = d.join(format!("pax/{}", "p".repeat(200)));
    assert_eq!(fs::read(&pax).unwrap(), b"pax content");
    let pm = fs::symlink_metadata(&pax).unwrap();
    assert_eq!((pm.mtime(), pm.mtime_nsec(), pm.uid()), (T0 as i64, 123_456_789, 70000));
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(&pax, "user.test", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    assert!(!is_opaque_dir(&pax), "forged overlay xattr dropped");
    assert!(rustix::fs::lgetxattr(&pax, "trusted.overlay.redirect", &mut buf).is_err());

    assert_eq!(stats.files, 5);
    assert_eq!(stats.dirs, 3, "`./` is not counted");
    assert_eq!((stats.symlinks, stats.hardlinks, stats.fifos), (1, 1, 1));
    assert_eq!((stats.whiteouts, stats.opaque_dirs, stats.devices_skipped), (2, 1, 2));
    assert_eq!(stats.xattrs_skipped, 2);
    assert_eq!(stats.other_skipped, 1);
    assert_eq!(stats.ownership_not_applied, 0);
    assert_eq!(stats.bytes, 11 + 4 + 28 + 4 + 11);
}

#[test]
fn gzip_zstd_and_plain_give_the_same_tree() {
    let tar = all_kinds();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let mut trees = Vec::new();
    for bytes in [&tar, &gz, &zst] {
        let f = fixture();
        f.unpack(bytes).unwrap();
        trees.push(tree(&f.dest));
    }
    assert!(trees[0].len() > 15);
    assert_eq!(trees[0], trees[1]);
    assert_eq!(trees[0], trees[2]);
}

#[test]
fn truncated_or_garbage_input_is_an_error() {
    let tar = all_kinds();
    let f = fixture();
    assert!(f.unpack(&tar[..1000]).is_err());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let f = fixture();
    assert!(matches!(f.unpack(&gz[..gz.len() / 2]), Err(UnpackError::Read(_))));
}

#[test]
fn replaces_entries_of_a_different_kind() {
    let f = fixture();
    let mut tb = Tb::new();
    tb.dir("x/", 0o755).file("x/y", b"y").file("x", b"now a file");
    tb.file("z", b"file").dir("z/", 0o700).file("z/in", b"in");
    tb.link("w", EntryType::Symlink, "z").dir("w/", 0o755);
    let s = f.unpack(&tb.bytes()).unwrap();
    assert_eq!(fs::read(f.dest.join("x")).unwrap(), b"now a file");
    assert_eq!(fs::read(f.dest.join("z/in")).unwrap(), b"in");
    assert!(fs::symlink_metadata(f.dest.join("w")).unwrap().is_dir());
    assert_eq!(s.dirs, 3);
}

#[test]
fn hostile_dotdot_names_stay_inside() {
    let f = fixture();
    let mut tb = Tb::new();
    tb.file("../outside/secret", b"pwned").file("a/../../../escape", b"e").file("../../..", b"root?");
    f.unpack(&tb.bytes()).unwrap();
    f.assert_outside_untouched();
    assert_eq!(fs::read(f.dest.join("outside/secret")).unwrap(), b"pwned");
    assert_eq!(fs::read(f.dest.join("escape")).unwrap(), b"e");
}

#[test]
fn hostile_absolute_names_stay_inside() {
    let f = fixture();
    let abs = f.outside.join("secret").display().to_string();
    let mut tb = Tb::new();
    tb.file(&abs, b"pwned").file("/abs-file", b"a");
    f.unpack(&tb.bytes()).unwrap();
    f.assert_outside_untouched();
    assert_eq!(fs::read(f.dest.join(abs.trim_start_matches('/'))).unwrap(), b"pwned");
    assert_eq!(fs::read(f.dest.join("abs-file")).unwrap(), b"a");
}

#[test]
fn hostile_symlinked_parents_cannot_escape() {
    let f = fixture();
    let mut tb = Tb::new();
    tb.link("up", EntryType::Symlink, "../../..").file("up/pwned", b"p");
    tb.link("loop", EntryType::Symlink, "up/../up/..").file("loop/pwned2", b"p2");
    f.unpack(&tb.bytes()).unwrap();
    f.assert_outside_untouched();
    // `..` through the symlink is clamped at the destination root.
    assert_eq!(fs::read(f.dest.join("pwned")).unwrap(), b"p");
    assert_eq!(fs::read(f.dest.join("pwned2")).unwrap(), b"p2");

    // An absolute symlink to the real outside directory resolves inside.
    let f = fixture();
    let mut tb = Tb::new();
    tb.link("abs", EntryType::Symlink, &f.outside.display().to_string()).file("abs/pwned", b"p");
    let r = f.unpack(&tb.bytes());
    f.assert_outside_untouched();
    assert!(matches!(r, Err(UnpackError::Parent { .. })), "dangling in-root target: {r:?}");

    // A directory entry replaces a symlink instead of following it.
    let f = fixture();
    let mut tb = Tb::new();
    tb.link("d", EntryType::Symlink, &f.outside.display().to_string()).dir("d/", 0o755).file("d/f", b"f");
    f.unpack(&tb.bytes()).unwrap();
    f.assert_outside_untouched();
    assert_eq!(fs::read(f.dest.join("d/f")).unwrap(), b"f");
}

#[test]
fn hostile_symlink_final_component_is_replaced_not_followed() {
    let f = fixture();
    let secret = f.outside.join("secret").display().to_string();
    let mut tb = Tb::new();
    tb.link("s", EntryType::Symlink, &secret).file("s", b"pwned");
    tb.link("fifo", EntryType::Symlink, &secret).add("fifo", EntryType::Fifo, b"", 0o777);
    tb.link("sd", EntryType::Symlink, &secret).link("sd", EntryType::Symlink, "harmless");
    f.unpack(&tb.bytes()).unwrap();
    f.assert_outside_untouched();
    assert!(fs::symlink_metadata(f.dest.join("s")).unwrap().is_file());
    assert!(fs::symlink_metadata(f.dest.join("fifo")).unwrap().file_type().is_fifo());
}

#[test]
fn hostile_hardlinks_cannot_reach_outside() {
    let f = fixture();
    let mut tb = Tb::new();
    tb.link("h", EntryType::Link, "../outside/secret");
    let r = f.unpack(&tb.bytes());
    assert!(matches!(r, Err(UnpackError::Hardlink { .. })), "{r:?}");
    f.assert_outside_untouched();

    let f = fixture();
    let abs = f.outside.join("secret").display().to_string();
    let mut tb = Tb::new();
    tb.link("h", EntryType::Link, &abs);
    assert!(matches!(f.unpack(&tb.bytes()), Err(UnpackError::Hardlink { .. })));
    f.assert_outside_untouched();

    // Linking a symlink links the symlink itself; writing the link name
    // afterwards replaces it.
    let f = fixture();
    let abs = f.outside.join("secret").display().to_string();
    let mut tb = Tb::new();
    tb.link("sl", EntryType::Symlink, &abs)
        .link("h", EntryType::Link, "sl")
        .file("h", b"pwned")
        .link("up", EntryType::Symlink, "../..")
        .link("h2", EntryType::Link, "up/outside/secret");
    let r = f.unpack(&tb.bytes());
    assert!(matches!(r, Err(UnpackError::Hardlink { .. })), "{r:?}");
    f.assert_outside_untouched();
    assert_eq!(fs::read(f.dest.join("h")).unwrap(), b"pwned");
    assert!(fs::symlink_metadata(f.dest.join("sl")).unwrap().file_type().is_symlink());
}

#[test]
fn hostile_whiteouts_and_opaque_markers_stay_inside() {
    let f = fixture();
    let abs = f.outside.display().to_string();
    let mut tb = Tb::new();
    tb.file("../outside/.wh.secret", b"")
        .file(&format!("{abs}/.wh.secret"), b"")
        .link("o", EntryType::Symlink, "../outside")
        .file("o/.wh..wh..opq", b"")
        .file("../../.wh..wh..opq", b"");
    f.unpack(&tb.bytes()).unwrap();
    f.assert_outside_untouched();
    assert!(is_overlay_whiteout(&fs::symlink_metadata(f.dest.join("outside/secret")).unwrap()));
    assert!(is_opaque_dir(&f.dest), "`o/..` and `../..` are the root");
}

#[test]
fn whiteout_does_not_remove_an_entry_of_the_same_layer() {
    let f = fixture();
    let mut tb = Tb::new();
    tb.file("keep", b"k").file(".wh.keep", b"");
    f.unpack(&tb.bytes()).unwrap();
    assert_eq!(fs::read(f.dest.join("keep")).unwrap(), b"k");
}

#[test]
fn chown_off_counts_instead_of_failing() {
    let f = fixture();
    let mut tb = Tb::new();
    tb.owned("a", b"a", 0o644, 1000, 1000).owned("b", b"b", 0o644, 0, 0).owned("c", b"c", 0o644, 0, 5);
    let s = unpack_layer(&tb.bytes()[..], &f.dest, &UnpackOptions { chown: false }).unwrap();
    assert_eq!(s.ownership_not_applied, 2);
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(fs::metadata(f.dest.join("a")).unwrap().uid(), me);
}

#[test]
#[ignore = "helper: re-executed in a user namespace by whiteouts_work_in_a_user_namespace"]
fn userns_child_unpacks_whiteouts() {
    let dest = PathBuf::from(std::env::var_os("RBUILD_UNPACK_DEST").expect("run by parent test"));
    let map = fs::read_to_string("/proc/self/uid_map").unwrap();
    assert!(!map.contains("4294967295"), "not in a user namespace: {map}");
    let mut tb = Tb::new();
    tb.dir("d/", 0o755).file("d/.wh.gone", b"").file("d/.wh..wh..opq", b"").owned("d/f", b"f", 0o600, 0, 0);
    let s = unpack_layer(&tb.bytes()[..], &dest, &UnpackOptions { chown: false }).unwrap();
    assert_eq!((s.whiteouts, s.opaque_dirs), (1, 1));
    println!("USERNS-UNPACK-OK");
}

#[test]
fn whiteouts_work_in_a_user_namespace() {
    let f = fixture();
    // Writable by the namespace's root whatever host uid it maps to.
    fs::set_permissions(&f.dest, fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["layer::unpack::tests::userns_child_unpacks_whiteouts", "--exact", "--ignored", "--nocapture"])
        .env("RBUILD_UNPACK_DEST", &f.dest)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("USERNS-UNPACK-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(is_overlay_whiteout(&fs::symlink_metadata(f.dest.join("d/gone")).unwrap()));
    assert!(is_opaque_dir(&f.dest.join("d")));
}

fn extract_archive(f: &Fixture, tar: &[u8], owners: Owners<'_>) -> Result<UnpackStats, UnpackError> {
    extract(tar, &f.dest, &ExtractOptions { kind: ExtractKind::Archive, owners })
}

#[test]
fn archives_take_whiteout_names_literally() {
    // An ADDed archive written straight into a snapshot must not be able to
    // delete lower-layer files or hide directories.
    let f = fixture();
    let all = |_: u32, _: u32| true;
    let mut tb = Tb::new();
    tb.dir("etc/", 0o755)
        .file("etc/.wh.passwd", b"w")
        .file("etc/.wh..wh..opq", b"o")
        .dev("etc/shadow", EntryType::Char, 0, 0)
        .pax(&[("SCHILY.xattr.user.overlay.opaque", b"y"), ("SCHILY.xattr.security.capability", b"\x01")])
        .dir("opq/", 0o755);
    let s = extract_archive(&f, &tb.bytes(), Owners::Archive { representable: &all }).unwrap();
    assert_eq!((s.whiteouts, s.opaque_dirs), (0, 0));
    assert_eq!(fs::read(f.dest.join("etc/.wh.passwd")).unwrap(), b"w");
    assert_eq!(fs::read(f.dest.join("etc/.wh..wh..opq")).unwrap(), b"o");
    assert!(fs::symlink_metadata(f.dest.join("etc/shadow")).is_err(), "0:0 device skipped, not a whiteout");
    assert_eq!(s.devices_skipped, 1);
    assert!(!is_opaque_dir(&f.dest.join("etc")) && !is_opaque_dir(&f.dest.join("opq")), "no forged opaque marker");
    let mut buf = [0u8; 8];
    assert!(rustix::fs::lgetxattr(f.dest.join("opq"), "security.capability", &mut buf).is_err());
    assert_eq!(s.xattrs_skipped, 2);
    // The same bytes as a layer are whiteouts.
    let g = fixture();
    let mut tb = Tb::new();
    tb.dir("etc/", 0o755).file("etc/.wh.passwd", b"");
    assert_eq!(g.unpack(&tb.bytes()).unwrap().whiteouts, 1);
}

#[test]
fn archive_owners_are_kept_forced_or_refused() {
    let f = fixture();
    let all = |_: u32, _: u32| true;
    let only_root = |u: u32, g: u32| u == 0 && g == 0;
    let mut tb = Tb::new();
    tb.owned("a", b"a", 0o640, 1000, 1001);
    let tar = tb.bytes();
    match extract_archive(&f, &tar, Owners::Archive { representable: &only_root }) {
        Err(UnpackError::Owner(OwnerError::Unmapped { path, uid: 1000, gid: 1001 })) => assert_eq!(path, "a"),
        other => panic!("expected UnmappedOwner, got {other:?}"),
    }
    extract_archive(&f, &tar, Owners::Force { uid: 0, gid: 0, representable: &only_root }).unwrap();
    let me = rustix::process::geteuid().as_raw();
    assert_eq!(
        (fs::metadata(f.dest.join("a")).unwrap().uid(), fs::metadata(f.dest.join("a")).unwrap().mode() & 0o7777),
        (me, 0o640)
    );
    if me == 0 {
        extract_archive(&f, &tar, Owners::Archive { representable: &all }).unwrap();
        let m = fs::metadata(f.dest.join("a")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
    }
}

#[test]
fn archives_stay_inside_dest() {
    let f = fixture();
    let all = |_: u32, _: u32| true;
    let outside = f.outside.to_str().unwrap().to_string();
    let mut tb = Tb::new();
    tb.file("../../escape", b"x").link("esc", EntryType::Symlink, &outside).file("esc/through", b"x").link(
        "hl",
        EntryType::Link,
        "../outside/secret",
    );
    let res = extract_archive(&f, &tb.bytes(), Owners::Archive { representable: &all });
    assert!(matches!(res, Err(UnpackError::Hardlink { .. })), "{res:?}");
    f.assert_outside_untouched();
    assert!(f.dest.join("escape").is_file());
    assert!(f.dest.join(outside.trim_start_matches('/')).join("through").is_file());
}

/// `cap_net_raw+ep` as `security.capability` (revision 2).
const CAP_NET_RAW_EP: &[u8] = &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Regression: the unpacker set xattrs before its chown, and the kernel
/// removes `security.capability` on every chown of a regular file, so a base
/// image's file capabilities (bookworm's `/bin/ping`) vanished on pull. An
/// ADDed archive's capabilities are restored too (as BuildKit's ADD does),
/// its other `security.*` attributes not.
#[test]
fn file_capabilities_survive_the_chown() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("not root: cannot set security.capability here; skipped");
        return;
    }
    let all = |_: u32, _: u32| true;
    let build = || {
        let mut tb = Tb::new();
        tb.pax(&[("SCHILY.xattr.security.capability", CAP_NET_RAW_EP)]).owned("ping", b"\x7fELF", 0o755, 0, 0);
        tb.pax(&[("SCHILY.xattr.security.capability", CAP_NET_RAW_EP), ("SCHILY.xattr.security.ima", b"x")])
            .owned("ping2", b"\x7fELF", 0o755, 1000, 1000);
        tb.bytes()
    };
    let cap = |p: &Path| {
        let mut buf = [0u8; 64];
        rustix::fs::lgetxattr(p, "security.capability", &mut buf).map(|n| buf[..n].to_vec()).ok()
    };
    let f = fixture();
    f.unpack(&build()).unwrap();
    assert_eq!(cap(&f.dest.join("ping")).as_deref(), Some(CAP_NET_RAW_EP), "layer: capability lost");
    assert_eq!(cap(&f.dest.join("ping2")).as_deref(), Some(CAP_NET_RAW_EP), "layer: capability lost");
    let g = fixture();
    extract_archive(&g, &build(), Owners::Archive { representable: &all }).unwrap();
    assert_eq!(cap(&g.dest.join("ping")).as_deref(), Some(CAP_NET_RAW_EP), "ADD: capability lost");
    let m = fs::metadata(g.dest.join("ping2")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (1000, 0o755));
    assert_eq!(cap(&g.dest.join("ping2")).as_deref(), Some(CAP_NET_RAW_EP), "ADD: capability lost");
    let mut buf = [0u8; 8];
    assert!(rustix::fs::lgetxattr(g.dest.join("ping2"), "security.ima", &mut buf).is_err(), "ADD: security.ima kept");
}
