//! Can this host run a RUN built for another architecture? The kernel
//! executes foreign binaries only through a binfmt_misc handler (qemu-user);
//! without one the command fails with a bare "exec format error" (exit code
//! 126 or worse, a shell that never starts). Checked before the sandbox
//! starts, so the error names the architecture and the host command that
//! registers an emulator.

use std::path::Path;

/// Where the kernel shows binfmt_misc registrations.
pub(crate) const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// No emulator for `architecture` is registered on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "RUN for `{architecture}` on this `{host}` host needs an emulator, and no binfmt_misc handler for `{qemu}` is \
     registered (none enabled in {dir}); register one once on the host: `sudo apt-get install qemu-user-static` \
     (or `cat /usr/lib/binfmt.d/qemu-{qemu}.conf > {BINFMT_DIR}/register` as root), or \
     `docker run --privileged --rm tonistiigi/binfmt --install {architecture}`"
)]
pub struct NoEmulator {
    /// The RUN's architecture (GOARCH spelling).
    pub architecture: String,
    /// The host's architecture (GOARCH spelling).
    pub host: String,
    /// qemu's name for the architecture (`aarch64`, `s390x`...).
    pub qemu: String,
    /// The binfmt_misc directory looked at.
    pub dir: String,
}

/// qemu-user's name for a GOARCH architecture (binfmt entries are named
/// `qemu-<name>` by Debian's qemu-user-static and tonistiigi/binfmt alike).
fn qemu_name(architecture: &str) -> &str {
    match architecture {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    }
}

/// Architectures `host` executes without emulation: its own, and the 32-bit
/// one its CPUs run natively.
fn runs_natively(host: &str, architecture: &str) -> bool {
    host == architecture || matches!((host, architecture), ("amd64", "386") | ("arm64", "arm"))
}

/// What [`check`] found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Emulation {
    /// The host runs the architecture itself, or an enabled handler is
    /// registered.
    Ready,
    /// binfmt_misc is not mounted at the directory looked at (a container
    /// that does not show it, or a host that never mounted it): no way to
    /// tell. The RUN still starts — a handler registered with the `F` flag
    /// works without the mount — but the user is told, with this text.
    Unverifiable(String),
}

/// Whether a RUN for `architecture` can execute on `host` with the
/// binfmt_misc registrations in `dir`: an error when it surely cannot,
/// [`Emulation::Unverifiable`] when `dir` is not a mounted binfmt_misc (no
/// `status` file).
pub(crate) fn check(host: &str, architecture: &str, dir: &Path) -> Result<Emulation, NoEmulator> {
    if runs_natively(host, architecture) {
        return Ok(Emulation::Ready);
    }
    let enabled = |p: &Path| std::fs::read_to_string(p).is_ok_and(|s| s.lines().next() == Some("enabled"));
    if !dir.join("status").exists() {
        return Ok(Emulation::Unverifiable(format!(
            "warning: cannot verify that this `{host}` host runs `{architecture}` binaries: binfmt_misc is not \
             mounted at {dir} (mount it with `sudo mount -t binfmt_misc binfmt_misc {BINFMT_DIR}` so rbuild can \
             check for an emulator); starting the RUN anyway, it fails with `exec format error` unless a \
             `qemu-{qemu}` handler is registered",
            dir = dir.display(),
            qemu = qemu_name(architecture),
        )));
    }
    let qemu = qemu_name(architecture);
    let registered = || -> Option<bool> {
        let wanted = format!("qemu-{qemu}");
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // `qemu-aarch64`, or another name whose interpreter is qemu's.
            let by_name = name == wanted || name.strip_prefix(&wanted).is_some_and(|rest| rest.starts_with('-'));
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let by_interpreter = text.lines().any(|l| {
                l.strip_prefix("interpreter ")
                    .and_then(|i| Path::new(i.trim()).file_name())
                    .is_some_and(|f| f.to_string_lossy().trim_end_matches("-static") == wanted)
            });
            if (by_name || by_interpreter) && text.lines().next() == Some("enabled") {
                return Some(true);
            }
        }
        Some(false)
    };
    if enabled(&dir.join("status")) && registered() == Some(true) {
        return Ok(Emulation::Ready);
    }
    Err(NoEmulator {
        architecture: architecture.to_string(),
        host: host.to_string(),
        qemu: qemu.to_string(),
        dir: dir.display().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binfmt(entries: &[(&str, &str)], status: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("status"), format!("{status}\n")).unwrap();
        std::fs::write(dir.path().join("register"), "").unwrap();
        for (name, text) in entries {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n";

    #[test]
    fn native_architectures_need_nothing() {
        let none = binfmt(&[], "enabled");
        assert_eq!(check("amd64", "amd64", none.path()), Ok(Emulation::Ready));
        assert_eq!(check("amd64", "386", none.path()), Ok(Emulation::Ready));
        assert_eq!(check("arm64", "arm", none.path()), Ok(Emulation::Ready));
    }

    #[test]
    fn a_foreign_architecture_needs_an_enabled_handler() {
        let dir = binfmt(&[("qemu-aarch64", AARCH64)], "enabled");
        assert_eq!(check("amd64", "arm64", dir.path()), Ok(Emulation::Ready));
        let err = check("amd64", "s390x", dir.path()).unwrap_err();
        assert_eq!(err.qemu, "s390x");
        let text = err.to_string();
        assert!(text.contains("RUN for `s390x`"), "{text}");
        assert!(text.contains("sudo apt-get install qemu-user-static"), "{text}");
        assert!(text.contains("cat /usr/lib/binfmt.d/qemu-s390x.conf > /proc/sys/fs/binfmt_misc/register"), "{text}");
        assert!(text.contains("tonistiigi/binfmt --install s390x"), "{text}");

        let disabled = binfmt(&[("qemu-aarch64", &AARCH64.replace("enabled", "disabled"))], "enabled");
        assert!(check("amd64", "arm64", disabled.path()).is_err());
        // binfmt_misc switched off as a whole.
        let off = binfmt(&[("qemu-aarch64", AARCH64)], "disabled");
        assert!(check("amd64", "arm64", off.path()).is_err());
        // Another architecture's handler does not count.
        let arm = binfmt(&[("qemu-arm", "enabled\ninterpreter /usr/bin/qemu-arm-static\n")], "enabled");
        let err = check("amd64", "arm64", arm.path()).unwrap_err();
        assert!(err.to_string().contains("tonistiigi/binfmt --install arm64"), "{err}");
        assert!(err.to_string().contains("qemu-aarch64.conf"), "{err}");
    }

    #[test]
    fn handlers_are_found_by_interpreter_too() {
        let dir = binfmt(&[("aarch64", "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\n")], "enabled");
        assert_eq!(check("amd64", "arm64", dir.path()), Ok(Emulation::Ready));
        let riscv =
            binfmt(&[("qemu-riscv64-static", "enabled\ninterpreter /usr/bin/qemu-riscv64-static\n")], "enabled");
        assert_eq!(check("amd64", "riscv64", riscv.path()), Ok(Emulation::Ready));
        assert!(check("amd64", "riscv32", riscv.path()).is_err(), "riscv32 is not riscv64");
    }

    #[test]
    fn an_unmounted_binfmt_misc_cannot_tell_and_says_so() {
        let empty = tempfile::tempdir().unwrap();
        let Ok(Emulation::Unverifiable(text)) = check("amd64", "arm64", empty.path()) else {
            panic!("an unmounted binfmt_misc must be reported");
        };
        assert!(text.contains("cannot verify that this `amd64` host runs `arm64` binaries"), "{text}");
        assert!(text.contains("sudo mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"), "{text}");
        assert!(text.contains("qemu-aarch64"), "{text}");
        // Native work needs no binfmt_misc at all.
        assert_eq!(check("amd64", "amd64", empty.path()), Ok(Emulation::Ready));
    }
}
