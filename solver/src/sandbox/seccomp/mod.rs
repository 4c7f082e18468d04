//! Docker's default seccomp profile for `RUN`, as our own Rust data, compiled
//! to a BPF program in pure Rust (no libseccomp).
//!
//! - [`PROFILE`] is the profile: the entries of moby's `default.json`
//!   (names, action, argument conditions, capability / architecture /
//!   kernel includes and excludes), written as Rust data.
//! - [`effective`] selects the entries that apply to an architecture, a
//!   capability set and a kernel exactly as moby's `setupSeccomp` does (caps
//!   are the *configured* (bounding) set of the container, not the process's
//!   effective set, so a non-root `USER` gets the same filter as root).
//! - [`RuleSet::compile`] turns the selection into classic BPF (see
//!   [`evaluate`] for running one). The rbuild process builds it once and
//!   sends it to each sandbox init after the spec; `install` loads it right
//!   before the id switch of the `RUN` process.
//!
//! A process can make syscalls through every ABI its kernel supports (i386
//! via `int 0x80` and x32 on x86_64, 32-bit arm on aarch64), so the filter
//! covers each of them with the same entries, as Docker's does (the
//! profile's `archMap`); any other `seccomp_data.arch` kills the process.

mod bpf;
mod profile;
mod tables;

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

pub use bpf::{SeccompData, evaluate};
pub use profile::{Condition, Entry, PROFILE, Profile};
pub use seccompiler::BpfProgram;

/// A CPU architecture (the one `rbuild` runs on), with its syscall ABIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Arch {
    /// x86_64: native 64-bit, plus the i386 and x32 ABIs.
    X86_64,
    /// aarch64 (arm64): native, plus 32-bit arm.
    Aarch64,
}

impl Arch {
    /// Every architecture we have syscall tables for.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture this binary runs on, if we can filter it.
    pub const fn native() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    /// The name the profile's `arches` lists use (moby's libseccomp names of
    /// Go's `GOARCH`): `amd64`, `arm64`. Entries are selected with this name
    /// for every ABI of the architecture, as moby does.
    pub fn profile_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// The syscall ABIs a process on this architecture can use: the native
    /// one first, then the profile's `archMap` sub-architectures.
    pub fn abis(self) -> &'static [Abi] {
        match self {
            Arch::X86_64 => &[Abi::X86_64, Abi::I386, Abi::X32],
            Arch::Aarch64 => &[Abi::Aarch64, Abi::Arm],
        }
    }

    /// The native ABI.
    pub fn native_abi(self) -> Abi {
        self.abis()[0]
    }
}

/// A system-call ABI: how a process names a syscall (its `seccomp_data.arch`
/// and number space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Abi {
    /// x86_64's native 64-bit ABI.
    X86_64,
    /// i386 (`int 0x80`, 32-bit binaries on x86_64).
    I386,
    /// x32: x86_64 registers, 32-bit pointers; `AUDIT_ARCH_X86_64` with
    /// bit 30 set in the syscall number.
    X32,
    /// aarch64's native ABI.
    Aarch64,
    /// 32-bit arm (EABI) on aarch64.
    Arm,
}

impl Abi {
    /// The `AUDIT_ARCH_*` value the kernel puts in `seccomp_data.arch`.
    pub fn audit_arch(self) -> u32 {
        // EM_386 = 3, EM_ARM = 40, EM_X86_64 = 62, EM_AARCH64 = 183;
        // | __AUDIT_ARCH_64BIT (0x8000_0000) | __AUDIT_ARCH_LE (0x4000_0000).
        const LE: u32 = 0x4000_0000;
        const ARCH64: u32 = 0x8000_0000;
        match self {
            Abi::X86_64 | Abi::X32 => 62 | ARCH64 | LE,
            Abi::I386 => 3 | LE,
            Abi::Aarch64 => 183 | ARCH64 | LE,
            Abi::Arm => 40 | LE,
        }
    }

    /// Whether arguments are 32-bit: conditions then compare the low word
    /// only, as libseccomp does for these ABIs (x32 counts as 32-bit there).
    pub fn is_32bit(self) -> bool {
        matches!(self, Abi::I386 | Abi::X32 | Abi::Arm)
    }

    /// All syscalls of this ABI, `(name, number)`, sorted by name (x32
    /// numbers include their bit 30).
    pub fn syscalls(self) -> &'static [(&'static str, u32)] {
        match self {
            Abi::X86_64 => tables::X86_64,
            Abi::I386 => tables::I386,
            Abi::X32 => tables::X32,
            Abi::Aarch64 => tables::AARCH64,
            Abi::Arm => tables::ARM,
        }
    }

    /// The number of a syscall in this ABI; `None` where it does not exist.
    pub fn syscall_number(self, name: &str) -> Option<u32> {
        let table = self.syscalls();
        table.binary_search_by(|(n, _)| (*n).cmp(name)).ok().map(|i| table[i].1)
    }
}

macro_rules! caps {
    ($($(#[$doc:meta])* $variant:ident = $num:literal, $name:literal;)*) => {
        /// A Linux capability (numbered as in `linux/capability.h`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum Cap {
            $($(#[$doc])* #[doc = $name] $variant = $num,)*
        }

        impl Cap {
            /// Every capability the kernel defines (as of 6.18).
            pub const ALL: &'static [Cap] = &[$(Cap::$variant,)*];

            /// `CAP_...` name, as Docker and the profile spell it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Cap::$variant => $name,)*
                }
            }

            /// The capability called `name` (`CAP_SYS_ADMIN`).
            pub fn from_name(name: &str) -> Option<Cap> {
                match name {
                    $($name => Some(Cap::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

caps! {
    Chown = 0, "CAP_CHOWN";
    DacOverride = 1, "CAP_DAC_OVERRIDE";
    DacReadSearch = 2, "CAP_DAC_READ_SEARCH";
    Fowner = 3, "CAP_FOWNER";
    Fsetid = 4, "CAP_FSETID";
    Kill = 5, "CAP_KILL";
    Setgid = 6, "CAP_SETGID";
    Setuid = 7, "CAP_SETUID";
    Setpcap = 8, "CAP_SETPCAP";
    LinuxImmutable = 9, "CAP_LINUX_IMMUTABLE";
    NetBindService = 10, "CAP_NET_BIND_SERVICE";
    NetBroadcast = 11, "CAP_NET_BROADCAST";
    NetAdmin = 12, "CAP_NET_ADMIN";
    NetRaw = 13, "CAP_NET_RAW";
    IpcLock = 14, "CAP_IPC_LOCK";
    IpcOwner = 15, "CAP_IPC_OWNER";
    SysModule = 16, "CAP_SYS_MODULE";
    SysRawio = 17, "CAP_SYS_RAWIO";
    SysChroot = 18, "CAP_SYS_CHROOT";
    SysPtrace = 19, "CAP_SYS_PTRACE";
    SysPacct = 20, "CAP_SYS_PACCT";
    SysAdmin = 21, "CAP_SYS_ADMIN";
    SysBoot = 22, "CAP_SYS_BOOT";
    SysNice = 23, "CAP_SYS_NICE";
    SysResource = 24, "CAP_SYS_RESOURCE";
    SysTime = 25, "CAP_SYS_TIME";
    SysTtyConfig = 26, "CAP_SYS_TTY_CONFIG";
    Mknod = 27, "CAP_MKNOD";
    Lease = 28, "CAP_LEASE";
    AuditWrite = 29, "CAP_AUDIT_WRITE";
    AuditControl = 30, "CAP_AUDIT_CONTROL";
    Setfcap = 31, "CAP_SETFCAP";
    MacOverride = 32, "CAP_MAC_OVERRIDE";
    MacAdmin = 33, "CAP_MAC_ADMIN";
    Syslog = 34, "CAP_SYSLOG";
    WakeAlarm = 35, "CAP_WAKE_ALARM";
    BlockSuspend = 36, "CAP_BLOCK_SUSPEND";
    AuditRead = 37, "CAP_AUDIT_READ";
    Perfmon = 38, "CAP_PERFMON";
    Bpf = 39, "CAP_BPF";
    CheckpointRestore = 40, "CAP_CHECKPOINT_RESTORE";
}

/// A set of capabilities (bit `n` = capability number `n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CapSet(u64);

impl CapSet {
    /// No capability.
    pub const EMPTY: CapSet = CapSet(0);

    /// Docker's default set: what a `RUN` holds as root, and the bounding
    /// set of a non-root `USER` (moby `oci/caps/defaults.go`).
    pub const DOCKER_DEFAULT: CapSet = CapSet::of(&[
        Cap::Chown,
        Cap::DacOverride,
        Cap::Fsetid,
        Cap::Fowner,
        Cap::Mknod,
        Cap::NetRaw,
        Cap::Setgid,
        Cap::Setuid,
        Cap::Setfcap,
        Cap::Setpcap,
        Cap::NetBindService,
        Cap::SysChroot,
        Cap::Kill,
        Cap::AuditWrite,
    ]);

    /// The set with bit mask `bits` (bit `n` = capability number `n`).
    pub const fn from_bits(bits: u64) -> CapSet {
        CapSet(bits)
    }

    /// The set holding `caps`.
    pub const fn of(caps: &[Cap]) -> CapSet {
        let mut bits = 0u64;
        let mut i = 0;
        while i < caps.len() {
            bits |= 1 << caps[i] as u8;
            i += 1;
        }
        CapSet(bits)
    }

    /// Every capability ([`Cap::ALL`]).
    pub fn all() -> CapSet {
        CapSet::of(Cap::ALL)
    }

    /// Whether `cap` is in the set.
    pub fn contains(self, cap: Cap) -> bool {
        self.0 & (1 << cap as u8) != 0
    }

    /// The set as a bit mask (bit `n` = capability number `n`).
    pub fn bits(self) -> u64 {
        self.0
    }
}

/// A kernel release, `major.minor` (what `minKernel` compares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl KernelVersion {
    /// Parses `6.18`, `6.18.0-1-amd64`, ... (the leading `major.minor`).
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion { major, minor })
    }

    /// The running kernel (`uname -r`).
    pub fn running() -> Result<KernelVersion, SeccompError> {
        let uname = rustix::system::uname();
        let release = uname.release().to_string_lossy().into_owned();
        KernelVersion::parse(&release).ok_or(SeccompError::KernelVersion(release))
    }
}

/// What the filter does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Let it run (`SCMP_ACT_ALLOW`).
    Allow,
    /// Fail it with this errno, without running it (`SCMP_ACT_ERRNO`).
    Errno(u16),
    /// Kill the whole process (`SCMP_ACT_KILL_PROCESS`): used for foreign ABIs.
    KillProcess,
}

impl Action {
    /// The `SECCOMP_RET_*` value a filter returns for this action.
    pub fn ret(self) -> u32 {
        seccompiler::SeccompAction::from(self).into()
    }
}

impl From<Action> for seccompiler::SeccompAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Allow => seccompiler::SeccompAction::Allow,
            Action::Errno(e) => seccompiler::SeccompAction::Errno(u32::from(e)),
            Action::KillProcess => seccompiler::SeccompAction::KillProcess,
        }
    }
}

/// A comparison of a syscall argument (libseccomp's `SCMP_CMP_*`). All
/// comparisons are unsigned and on the full 64-bit argument, as libseccomp
/// does on 64-bit architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CmpOp {
    /// `arg != value`.
    Ne,
    /// `arg < value`.
    Lt,
    /// `arg <= value`.
    Le,
    /// `arg == value`.
    Eq,
    /// `arg >= value`.
    Ge,
    /// `arg > value`.
    Gt,
    /// `arg & value == value_two`.
    MaskedEq,
}

/// One argument condition of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArgCmp {
    /// Argument index, 0..=5.
    pub index: u8,
    /// The comparison.
    pub op: CmpOp,
    /// The operand (the mask for [`CmpOp::MaskedEq`]).
    pub value: u64,
    /// The masked value [`CmpOp::MaskedEq`] compares with; 0 otherwise.
    pub value_two: u64,
}

impl ArgCmp {
    /// The condition on the low 32 bits only (how 32-bit ABIs compare).
    pub fn low_word(&self) -> ArgCmp {
        ArgCmp { value: self.value & 0xffff_ffff, value_two: self.value_two & 0xffff_ffff, ..*self }
    }

    /// Whether `arg` satisfies the condition.
    pub fn matches(&self, arg: u64) -> bool {
        match self.op {
            CmpOp::Ne => arg != self.value,
            CmpOp::Lt => arg < self.value,
            CmpOp::Le => arg <= self.value,
            CmpOp::Eq => arg == self.value,
            CmpOp::Ge => arg >= self.value,
            CmpOp::Gt => arg > self.value,
            CmpOp::MaskedEq => arg & self.value == self.value_two,
        }
    }
}

/// A rule of the effective profile: the syscall is given `action` when all
/// of `args` hold (always, if `args` is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rule {
    /// What happens.
    pub action: Action,
    /// When (all must hold).
    pub args: &'static [ArgCmp],
}

/// The profile as it applies to one architecture, capability set and
/// kernel: what moby's `setupSeccomp` hands to runc, resolved to numbers
/// for each ABI of the architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// The architecture.
    pub arch: Arch,
    /// Action for syscalls no rule matches.
    pub default: Action,
    /// The rules of each ABI, native first.
    pub abis: Vec<AbiRules>,
}

/// The rules of one ABI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiRules {
    /// The ABI.
    pub abi: Abi,
    /// Rules by syscall number, in profile order. Several rules of one
    /// syscall are alternatives (any may match).
    pub syscalls: BTreeMap<u32, Vec<Rule>>,
    /// Numbers from here on name no syscall we know of (they are newer
    /// than our table) and get [`UNKNOWN_SYSCALL`] rather than the default.
    pub first_unknown: u32,
}

/// What syscalls newer than our table get: `ENOSYS`, as runc answers for
/// numbers above the newest syscall libseccomp knows, so that a program
/// built for a newer kernel falls back to an older call instead of failing
/// on `EPERM` (what glibc's `faccessat2` and `clone3` fallbacks expect).
pub const UNKNOWN_SYSCALL: Action = Action::Errno(38);

impl RuleSet {
    /// The rules of `abi`, if it is one of the architecture's.
    pub fn abi(&self, abi: Abi) -> Option<&AbiRules> {
        self.abis.iter().find(|a| a.abi == abi)
    }

    /// What the profile does with syscall `nr` of `abi` called with `args`
    /// (a foreign ABI is killed).
    pub fn decide(&self, abi: Abi, nr: u32, args: &[u64; 6]) -> Action {
        let Some(rules) = self.abi(abi) else { return Action::KillProcess };
        if nr >= rules.first_unknown {
            return UNKNOWN_SYSCALL;
        }
        let holds = |c: &ArgCmp| {
            let arg = args[usize::from(c.index)];
            if abi.is_32bit() { c.low_word().matches(arg & 0xffff_ffff) } else { c.matches(arg) }
        };
        rules
            .syscalls
            .get(&nr)
            .and_then(|rs| rs.iter().find(|r| r.args.iter().all(holds)))
            .map_or(self.default, |r| r.action)
    }

    /// Compiles the rule set to a seccomp BPF program.
    pub fn compile(&self) -> Result<BpfProgram, SeccompError> {
        bpf::compile(self)
    }
}

/// Whether `entry` applies to `arch`, `caps` and `kernel` (moby's
/// `setupSeccomp`: an exclude of any held cap, or of the arch, or of an
/// older-or-equal kernel drops the entry; an include needs the arch, all
/// its caps and at least its kernel).
pub fn applies(entry: &Entry, arch: Arch, caps: CapSet, kernel: KernelVersion) -> bool {
    let ex = &entry.excludes;
    if ex.arches.contains(&arch.profile_name())
        || ex.caps.iter().any(|c| caps.contains(*c))
        || ex.min_kernel.is_some_and(|k| kernel >= k)
    {
        return false;
    }
    let inc = &entry.includes;
    (inc.arches.is_empty() || inc.arches.contains(&arch.profile_name()))
        && inc.caps.iter().all(|c| caps.contains(*c))
        && inc.min_kernel.is_none_or(|k| kernel >= k)
}

/// The profile's rules for `arch`, `caps` (the container's configured
/// capability set) and `kernel`. Entries are selected once for the
/// architecture, then their names are resolved in each of its ABIs; names an
/// ABI does not have are skipped, as runc does.
pub fn effective(profile: &Profile, arch: Arch, caps: CapSet, kernel: KernelVersion) -> RuleSet {
    // Every (name, entry) pair, sorted by name, so that each ABI's table
    // (sorted by name too) resolves them in one merge pass (a binary search
    // per name and ABI took three times as long).
    let mut names: Vec<(&str, usize)> = Vec::with_capacity(512);
    for (i, entry) in profile.syscalls.iter().enumerate() {
        if applies(entry, arch, caps, kernel) {
            names.extend(entry.names.iter().map(|n| (*n, i)));
        }
    }
    names.sort_unstable();
    let abis = arch
        .abis()
        .iter()
        .map(|&abi| {
            let table = abi.syscalls();
            let mut resolved: Vec<(u32, usize)> = Vec::with_capacity(names.len());
            let mut t = table.iter().peekable();
            for &(name, entry) in &names {
                while t.next_if(|(n, _)| *n < name).is_some() {}
                if let Some((n, nr)) = t.peek()
                    && *n == name
                {
                    resolved.push((*nr, entry));
                }
            }
            // By number, then in profile order.
            resolved.sort_unstable();
            let mut grouped: Vec<(u32, Vec<Rule>)> = Vec::with_capacity(resolved.len());
            for (nr, entry) in resolved {
                let e = &profile.syscalls[entry];
                let rule = Rule { action: e.action, args: e.args };
                match grouped.last_mut() {
                    Some((last, rules)) if *last == nr => {
                        if !rules.contains(&rule) {
                            rules.push(rule);
                        }
                    }
                    _ => grouped.push((nr, vec![rule])),
                }
            }
            // Sorted input: the map is bulk-built.
            let syscalls: BTreeMap<u32, Vec<Rule>> = grouped.into_iter().collect();
            let first_unknown = table.iter().map(|(_, nr)| nr + 1).max().unwrap_or(0);
            AbiRules { abi, syscalls, first_unknown }
        })
        .collect();
    RuleSet { arch, default: profile.default_action, abis }
}

/// Compiles Docker's default profile for the native architecture, `caps`
/// and the running kernel.
pub fn default_filter(caps: CapSet) -> Result<BpfProgram, SeccompError> {
    let arch = Arch::native().ok_or(SeccompError::UnsupportedArch(std::env::consts::ARCH))?;
    effective(&PROFILE, arch, caps, KernelVersion::running()?).compile()
}

/// The filter a sandboxed `RUN` with the configured capability set `caps`
/// gets: Docker's default profile evaluated against that set (for root and
/// non-root users alike, as Docker does). `caps` is Docker's default set, or
/// that set less `CAP_NET_RAW` on the private network (`caps::configured`).
fn run_filter(caps: CapSet) -> Result<BpfProgram, SeccompError> {
    default_filter(caps)
}

/// A filter as bytes (`None`: it could not be built), kept for the process's life.
type Encoded = Option<&'static [u8]>;

/// [`run_filter`] as bytes for the sandbox init, built once per process and
/// capability set.
///
/// Why in the parent: building the program in each freshly executed init
/// cost ~0.3 ms of CPU per `RUN` (cold caches and page faults, ten times
/// the warm cost); the parent builds it once per build and the init only
/// reads ~8 KB. `None` if it cannot be built: the init then builds it
/// itself and reports the error.
pub(crate) fn encoded_filter(caps: CapSet) -> Option<&'static [u8]> {
    // One entry per configured set in use: two at most (see `run_filter`),
    // each built once and kept for the process's life.
    static ENCODED: Mutex<Vec<(CapSet, Encoded)>> = Mutex::new(Vec::new());
    let mut cache = ENCODED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, bytes)) = cache.iter().find(|(c, _)| *c == caps) {
        return *bytes;
    }
    let bytes = run_filter(caps).ok().map(|p| &*Box::leak(encode(&p).into_boxed_slice()));
    cache.push((caps, bytes));
    bytes
}

/// The filter received from the parent ([`encoded_default_filter`]), if any.
static RECEIVED: OnceLock<BpfProgram> = OnceLock::new();

/// Takes the filter bytes the parent sent; empty or malformed bytes are
/// ignored (the filter is then built here).
pub(crate) fn receive(bytes: &[u8]) {
    if let Some(program) = decode(bytes) {
        let _ = RECEIVED.set(program);
    }
}

fn encode(program: &[seccompiler::sock_filter]) -> Vec<u8> {
    program.iter().flat_map(|i| [&i.code.to_ne_bytes()[..], &[i.jt, i.jf], &i.k.to_ne_bytes()].concat()).collect()
}

fn decode(bytes: &[u8]) -> Option<BpfProgram> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(8) || bytes.len() / 8 > bpf::MAX_INSNS {
        return None;
    }
    let program = bytes
        .chunks_exact(8)
        .map(|c| seccompiler::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    Some(program)
}

/// Loads the filter of a `RUN` configured with `caps` (received from the
/// parent, which built it for the same set, or built here); see [`install`].
pub(crate) fn install_default(caps: CapSet) -> Result<(), SeccompError> {
    match RECEIVED.get() {
        Some(program) => install(program),
        None => install(&run_filter(caps)?),
    }
}

/// Loads `program` as the calling thread's seccomp filter, without setting
/// `no_new_privs`.
///
/// Why not `seccompiler::apply_filter`: it always sets `PR_SET_NO_NEW_PRIVS`,
/// and with it set a `RUN` could no longer gain privileges through setuid
/// binaries (`su`, `ping`, `newgrp`...), which Docker keeps working. Without
/// `no_new_privs` the kernel requires `CAP_SYS_ADMIN` in the caller's user
/// namespace, so the caller must still hold it: this is why the sandbox
/// installs the filter before the id switch and the capability drop, as
/// runc does when `noNewPrivileges` is off. The filter is inherited across
/// `execve` and `fork` and can never be removed.
pub(crate) fn install(program: &BpfProgram) -> Result<(), SeccompError> {
    let len = u16::try_from(program.len()).map_err(|_| SeccompError::TooLong(program.len()))?;
    let fprog = libc::sock_fprog { len, filter: program.as_ptr() as *mut libc::sock_filter };
    // SAFETY: `seccompiler::sock_filter` is `#[repr(C)]` with the same
    // fields as the kernel's `struct sock_filter`; `fprog` points at
    // `program`, which outlives the call (the kernel copies it).
    let rc = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0u32, &fprog as *const libc::sock_fprog)
    };
    if rc != 0 {
        return Err(SeccompError::Install(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Failures of building or loading the seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// No syscall table for this architecture.
    #[error("seccomp: no syscall table for architecture `{0}`; use `--security=insecure` to run without a filter")]
    UnsupportedArch(&'static str),
    /// `uname` gave a release we cannot read.
    #[error("seccomp: cannot read the kernel version from `{0}`")]
    KernelVersion(String),
    /// One syscall got rules with different actions.
    #[error("seccomp: syscall {nr} has rules with different actions ({first:?}, {second:?})")]
    ConflictingActions {
        /// Syscall number.
        nr: u32,
        /// One action.
        first: Action,
        /// Another.
        second: Action,
    },
    /// The program does not fit the kernel's limit.
    #[error("seccomp: the filter has {0} instructions, more than the kernel's 4096")]
    TooLong(usize),
    /// A jump of the generated program is out of range (a compiler bug).
    #[error("seccomp: jump of {0} instructions does not fit a conditional jump")]
    JumpTooFar(usize),
    /// The kernel refused the filter.
    #[error("seccomp: cannot install the filter")]
    Install(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_survives_the_trip_to_the_init() {
        let program = run_filter(CapSet::DOCKER_DEFAULT).unwrap();
        assert_eq!(encoded_filter(CapSet::DOCKER_DEFAULT).map(|b| b.len()), Some(program.len() * 8));
        assert_eq!(decode(encoded_filter(CapSet::DOCKER_DEFAULT).unwrap()), Some(program));
        // Each configured set gets its own program.
        let all = run_filter(CapSet::all()).unwrap();
        assert_ne!(
            decode(encoded_filter(CapSet::all()).unwrap()).as_ref(),
            decode(encoded_filter(CapSet::DOCKER_DEFAULT).unwrap()).as_ref()
        );
        assert_eq!(decode(encoded_filter(CapSet::all()).unwrap()), Some(all));
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0; 12]), None, "not whole instructions");
    }

    #[test]
    fn the_private_network_set_gets_the_same_rules() {
        // No entry of Docker's profile names CAP_NET_RAW, so dropping it for
        // the private network (`caps::PRIVATE_NETWORK_DEFAULT`) changes no
        // syscall's action: the same program, evaluated for the set held.
        let private = CapSet::from_bits(CapSet::DOCKER_DEFAULT.bits() & !(1 << Cap::NetRaw as u8));
        assert!(!private.contains(Cap::NetRaw) && CapSet::DOCKER_DEFAULT.contains(Cap::NetRaw));
        assert_eq!(run_filter(private).unwrap(), run_filter(CapSet::DOCKER_DEFAULT).unwrap());
    }

    #[test]
    fn tables_are_sorted_and_unique() {
        for abi in Arch::ALL.iter().flat_map(|a| a.abis()) {
            let t = abi.syscalls();
            assert!(t.windows(2).all(|w| w[0].0 < w[1].0), "{abi:?} table not sorted by name");
            let mut nrs: Vec<u32> = t.iter().map(|(_, n)| *n).collect();
            nrs.sort_unstable();
            nrs.dedup();
            assert_eq!(nrs.len(), t.len(), "{abi:?} table has duplicate numbers");
        }
    }

    /// The native table against the `libc` crate's `SYS_*` constants (every
    /// name `libc` has; it lacks the newest syscalls, 451 and up).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn native_table_agrees_with_libc() {
        macro_rules! sys {
            ($($name:ident),* $(,)?) => {
                $(assert_eq!(
                    Abi::X86_64.syscall_number(&stringify!($name)[4..]),
                    Some(libc::$name as u32),
                    stringify!($name)
                );)*
            };
        }
        sys!(
            SYS__sysctl,
            SYS_accept,
            SYS_accept4,
            SYS_access,
            SYS_acct,
            SYS_add_key,
            SYS_adjtimex,
            SYS_afs_syscall,
            SYS_alarm,
            SYS_arch_prctl,
            SYS_bind,
            SYS_bpf,
            SYS_brk,
            SYS_capget,
            SYS_capset,
            SYS_chdir,
            SYS_chmod,
            SYS_chown,
            SYS_chroot,
            SYS_clock_adjtime,
            SYS_clock_getres,
            SYS_clock_gettime,
            SYS_clock_nanosleep,
            SYS_clock_settime,
            SYS_clone,
            SYS_clone3,
            SYS_close,
            SYS_close_range,
            SYS_connect,
            SYS_copy_file_range,
            SYS_creat,
            SYS_delete_module,
            SYS_dup,
            SYS_dup2,
            SYS_dup3,
            SYS_epoll_create,
            SYS_epoll_create1,
            SYS_epoll_ctl,
            SYS_epoll_ctl_old,
            SYS_epoll_pwait,
            SYS_epoll_pwait2,
            SYS_epoll_wait,
            SYS_epoll_wait_old,
            SYS_eventfd,
            SYS_eventfd2,
            SYS_execve,
            SYS_execveat,
            SYS_exit,
            SYS_exit_group,
            SYS_faccessat,
            SYS_faccessat2,
            SYS_fadvise64,
            SYS_fallocate,
            SYS_fanotify_init,
            SYS_fanotify_mark,
            SYS_fchdir,
            SYS_fchmod,
            SYS_fchmodat,
            SYS_fchmodat2,
            SYS_fchown,
            SYS_fchownat,
            SYS_fcntl,
            SYS_fdatasync,
            SYS_fgetxattr,
            SYS_finit_module,
            SYS_flistxattr,
            SYS_flock,
            SYS_fork,
            SYS_fremovexattr,
            SYS_fsconfig,
            SYS_fsetxattr,
            SYS_fsmount,
            SYS_fsopen,
            SYS_fspick,
            SYS_fstat,
            SYS_fstatfs,
            SYS_fsync,
            SYS_ftruncate,
            SYS_futex,
            SYS_futex_waitv,
            SYS_futimesat,
            SYS_get_mempolicy,
            SYS_get_robust_list,
            SYS_get_thread_area,
            SYS_getcpu,
            SYS_getcwd,
            SYS_getdents,
            SYS_getdents64,
            SYS_getegid,
            SYS_geteuid,
            SYS_getgid,
            SYS_getgroups,
            SYS_getitimer,
            SYS_getpeername,
            SYS_getpgid,
            SYS_getpgrp,
            SYS_getpid,
            SYS_getpmsg,
            SYS_getppid,
            SYS_getpriority,
            SYS_getrandom,
            SYS_getresgid,
            SYS_getresuid,
            SYS_getrlimit,
            SYS_getrusage,
            SYS_getsid,
            SYS_getsockname,
            SYS_getsockopt,
            SYS_gettid,
            SYS_gettimeofday,
            SYS_getuid,
            SYS_getxattr,
            SYS_init_module,
            SYS_inotify_add_watch,
            SYS_inotify_init,
            SYS_inotify_init1,
            SYS_inotify_rm_watch,
            SYS_io_cancel,
            SYS_io_destroy,
            SYS_io_getevents,
            SYS_io_setup,
            SYS_io_submit,
            SYS_io_uring_enter,
            SYS_io_uring_register,
            SYS_io_uring_setup,
            SYS_ioctl,
            SYS_ioperm,
            SYS_iopl,
            SYS_ioprio_get,
            SYS_ioprio_set,
            SYS_kcmp,
            SYS_kexec_file_load,
            SYS_kexec_load,
            SYS_keyctl,
            SYS_kill,
            SYS_landlock_add_rule,
            SYS_landlock_create_ruleset,
            SYS_landlock_restrict_self,
            SYS_lchown,
            SYS_lgetxattr,
            SYS_link,
            SYS_linkat,
            SYS_listen,
            SYS_listxattr,
            SYS_llistxattr,
            SYS_lookup_dcookie,
            SYS_lremovexattr,
            SYS_lseek,
            SYS_lsetxattr,
            SYS_lstat,
            SYS_madvise,
            SYS_mbind,
            SYS_membarrier,
            SYS_memfd_create,
            SYS_memfd_secret,
            SYS_migrate_pages,
            SYS_mincore,
            SYS_mkdir,
            SYS_mkdirat,
            SYS_mknod,
            SYS_mknodat,
            SYS_mlock,
            SYS_mlock2,
            SYS_mlockall,
            SYS_mmap,
            SYS_modify_ldt,
            SYS_mount,
            SYS_mount_setattr,
            SYS_move_mount,
            SYS_move_pages,
            SYS_mprotect,
            SYS_mq_getsetattr,
            SYS_mq_notify,
            SYS_mq_open,
            SYS_mq_timedreceive,
            SYS_mq_timedsend,
            SYS_mq_unlink,
            SYS_mremap,
            SYS_mseal,
            SYS_msgctl,
            SYS_msgget,
            SYS_msgrcv,
            SYS_msgsnd,
            SYS_msync,
            SYS_munlock,
            SYS_munlockall,
            SYS_munmap,
            SYS_name_to_handle_at,
            SYS_nanosleep,
            SYS_newfstatat,
            SYS_nfsservctl,
            SYS_open,
            SYS_open_by_handle_at,
            SYS_open_tree,
            SYS_openat,
            SYS_openat2,
            SYS_pause,
            SYS_perf_event_open,
            SYS_personality,
            SYS_pidfd_getfd,
            SYS_pidfd_open,
            SYS_pidfd_send_signal,
            SYS_pipe,
            SYS_pipe2,
            SYS_pivot_root,
            SYS_pkey_alloc,
            SYS_pkey_free,
            SYS_pkey_mprotect,
            SYS_poll,
            SYS_ppoll,
            SYS_prctl,
            SYS_pread64,
            SYS_preadv,
            SYS_preadv2,
            SYS_prlimit64,
            SYS_process_madvise,
            SYS_process_mrelease,
            SYS_process_vm_readv,
            SYS_process_vm_writev,
            SYS_pselect6,
            SYS_ptrace,
            SYS_putpmsg,
            SYS_pwrite64,
            SYS_pwritev,
            SYS_pwritev2,
            SYS_quotactl,
            SYS_quotactl_fd,
            SYS_read,
            SYS_readahead,
            SYS_readlink,
            SYS_readlinkat,
            SYS_readv,
            SYS_reboot,
            SYS_recvfrom,
            SYS_recvmmsg,
            SYS_recvmsg,
            SYS_remap_file_pages,
            SYS_removexattr,
            SYS_rename,
            SYS_renameat,
            SYS_renameat2,
            SYS_request_key,
            SYS_restart_syscall,
            SYS_rmdir,
            SYS_rseq,
            SYS_rt_sigaction,
            SYS_rt_sigpending,
            SYS_rt_sigprocmask,
            SYS_rt_sigqueueinfo,
            SYS_rt_sigreturn,
            SYS_rt_sigsuspend,
            SYS_rt_sigtimedwait,
            SYS_rt_tgsigqueueinfo,
            SYS_sched_get_priority_max,
            SYS_sched_get_priority_min,
            SYS_sched_getaffinity,
            SYS_sched_getattr,
            SYS_sched_getparam,
            SYS_sched_getscheduler,
            SYS_sched_rr_get_interval,
            SYS_sched_setaffinity,
            SYS_sched_setattr,
            SYS_sched_setparam,
            SYS_sched_setscheduler,
            SYS_sched_yield,
            SYS_seccomp,
            SYS_security,
            SYS_select,
            SYS_semctl,
            SYS_semget,
            SYS_semop,
            SYS_semtimedop,
            SYS_sendfile,
            SYS_sendmmsg,
            SYS_sendmsg,
            SYS_sendto,
            SYS_set_mempolicy,
            SYS_set_mempolicy_home_node,
            SYS_set_robust_list,
            SYS_set_thread_area,
            SYS_set_tid_address,
            SYS_setdomainname,
            SYS_setfsgid,
            SYS_setfsuid,
            SYS_setgid,
            SYS_setgroups,
            SYS_sethostname,
            SYS_setitimer,
            SYS_setns,
            SYS_setpgid,
            SYS_setpriority,
            SYS_setregid,
            SYS_setresgid,
            SYS_setresuid,
            SYS_setreuid,
            SYS_setrlimit,
            SYS_setsid,
            SYS_setsockopt,
            SYS_settimeofday,
            SYS_setuid,
            SYS_setxattr,
            SYS_shmat,
            SYS_shmctl,
            SYS_shmdt,
            SYS_shmget,
            SYS_shutdown,
            SYS_sigaltstack,
            SYS_signalfd,
            SYS_signalfd4,
            SYS_socket,
            SYS_socketpair,
            SYS_splice,
            SYS_stat,
            SYS_statfs,
            SYS_statx,
            SYS_swapoff,
            SYS_swapon,
            SYS_symlink,
            SYS_symlinkat,
            SYS_sync,
            SYS_sync_file_range,
            SYS_syncfs,
            SYS_sysfs,
            SYS_sysinfo,
            SYS_syslog,
            SYS_tee,
            SYS_tgkill,
            SYS_time,
            SYS_timer_create,
            SYS_timer_delete,
            SYS_timer_getoverrun,
            SYS_timer_gettime,
            SYS_timer_settime,
            SYS_timerfd_create,
            SYS_timerfd_gettime,
            SYS_timerfd_settime,
            SYS_times,
            SYS_tkill,
            SYS_truncate,
            SYS_tuxcall,
            SYS_umask,
            SYS_umount2,
            SYS_uname,
            SYS_unlink,
            SYS_unlinkat,
            SYS_unshare,
            SYS_uselib,
            SYS_userfaultfd,
            SYS_ustat,
            SYS_utime,
            SYS_utimensat,
            SYS_utimes,
            SYS_vfork,
            SYS_vhangup,
            SYS_vmsplice,
            SYS_vserver,
            SYS_wait4,
            SYS_waitid,
            SYS_write,
            SYS_writev,
        );
    }

    /// The compiled default filter, loaded into a forked child: the kernel
    /// gives the profile's answers (errno or success) for calls with
    /// arguments on both sides of the profile's conditions.
    #[test]
    fn kernel_enforces_the_default_filter() {
        let prog = default_filter(CapSet::DOCKER_DEFAULT).unwrap();
        const EPERM: i64 = libc::EPERM as i64;
        const ENOSYS: i64 = libc::ENOSYS as i64;
        // (what, syscall, args, expected: errno or 0 for success)
        let calls: &[(&str, libc::c_long, [u64; 6], i64)] = &[
            ("unshare(CLONE_NEWUSER)", libc::SYS_unshare, [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0], EPERM),
            ("mount", libc::SYS_mount, [0; 6], EPERM),
            ("keyctl", libc::SYS_keyctl, [0; 6], EPERM),
            ("add_key", libc::SYS_add_key, [0; 6], EPERM),
            ("bpf", libc::SYS_bpf, [0; 6], EPERM),
            ("perf_event_open", libc::SYS_perf_event_open, [0; 6], EPERM),
            ("clone3", libc::SYS_clone3, [0; 6], ENOSYS),
            ("socket(AF_VSOCK)", libc::SYS_socket, [40, libc::SOCK_STREAM as u64, 0, 0, 0, 0], EPERM),
            ("socket(AF_UNIX)", libc::SYS_socket, [1, libc::SOCK_STREAM as u64, 0, 0, 0, 0], 0),
            ("personality(query)", libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0], 0),
            ("personality(READ_IMPLIES_EXEC)", libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0], EPERM),
            ("getpid", libc::SYS_getpid, [0; 6], 0),
            ("a syscall newer than the table", 1000, [0; 6], ENOSYS),
            // x32 `mount` (165 | bit 30): refused by the filter whether or not the kernel has x32.
            ("x32 mount", 0x4000_0000 | 165, [0; 6], EPERM),
        ];
        // i386 calls through `int 0x80` (nr, args, expected errno).
        #[cfg(target_arch = "x86_64")]
        let i386: &[(&str, u32, [u32; 3], i64)] = &[
            ("i386 getpid", 20, [0; 3], 0),
            ("i386 unshare(CLONE_NEWUSER)", 310, [libc::CLONE_NEWUSER as u32, 0, 0], EPERM),
            ("i386 mount", 21, [0; 3], EPERM),
            ("i386 socket(AF_VSOCK)", 359, [40, 1, 0], EPERM),
            ("i386 socket(AF_UNIX)", 359, [1, 1, 0], 0),
            ("i386 clone3", 435, [0; 3], ENOSYS),
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let i386: &[(&str, u32, [u32; 3], i64)] = &[];
        let mut fds = [0; 2];
        // SAFETY: pipe with a valid two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes raw syscalls (async-signal-safe) and
        // `_exit`s; `prog` and `calls` were built before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain prctl / syscall / `int 0x80` / write / _exit
            // calls on valid arguments (no pointers but `res`) in the forked
            // child. no_new_privs is set so that the test does not need
            // CAP_SYS_ADMIN; the sandbox does not set it.
            unsafe {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if install(&prog).is_err() {
                    libc::_exit(2);
                }
                for (_, nr, a, _) in calls {
                    let rc = libc::syscall(*nr, a[0], a[1], a[2], a[3], a[4], a[5]);
                    let res: i64 = if rc < 0 { i64::from(*libc::__errno_location()) } else { 0 };
                    libc::write(fds[1], (&res as *const i64).cast(), 8);
                }
                #[cfg(target_arch = "x86_64")]
                for (_, nr, a, _) in i386 {
                    let rc = int80(*nr, *a);
                    let res: i64 = if rc < 0 { -i64::from(rc) } else { 0 };
                    libc::write(fds[1], (&res as *const i64).cast(), 8);
                }
                libc::_exit(0);
            }
        }
        // SAFETY: closing our copy of the write end; reading into a buffer of the given size.
        unsafe { libc::close(fds[1]) };
        let mut got = vec![0i64; calls.len() + i386.len()];
        let want_bytes = got.len() * 8;
        let mut read = 0;
        while read < want_bytes {
            // SAFETY: the destination is `got`'s buffer, `want_bytes - read` bytes remain in it.
            let n = unsafe { libc::read(fds[0], got.as_mut_ptr().cast::<u8>().add(read).cast(), want_bytes - read) };
            if n <= 0 {
                break;
            }
            read += n as usize;
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status:#x}");
        let wants = calls.iter().map(|(w, _, _, e)| (*w, *e)).chain(i386.iter().map(|(w, _, _, e)| (*w, *e)));
        for ((what, want), got) in wants.zip(&got) {
            assert_eq!(*got, want, "{what}: errno {got}, want {want}");
        }
    }

    /// An i386 syscall through `int 0x80`; returns eax (negative errno on failure).
    ///
    /// # Safety
    /// The call must not touch memory of the caller (the tests pass no pointers).
    #[cfg(target_arch = "x86_64")]
    unsafe fn int80(nr: u32, a: [u32; 3]) -> i32 {
        let ret: i32;
        // SAFETY: rbx cannot be an asm operand, so the first argument goes
        // through a scratch register and rbx is restored after the call.
        unsafe {
            std::arch::asm!(
                "xchg {a0:r}, rbx",
                "int 0x80",
                "xchg {a0:r}, rbx",
                a0 = inout(reg) u64::from(a[0]) => _,
                inlateout("eax") nr as i32 => ret,
                in("ecx") a[1],
                in("edx") a[2],
            );
        }
        ret
    }
}
