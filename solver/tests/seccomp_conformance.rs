//! Our seccomp profile against moby's `default.json`
//! (`shared/conformance/moby-seccomp`, format in `SOURCES.md`).
//!
//! The JSON is read here, with moby's `setupSeccomp` selection written out
//! again independently of `rbuild_solver::sandbox::seccomp::applies`, and
//! compared three ways:
//! 1. entry by entry with our Rust profile (names, action, conditions,
//!    includes/excludes);
//! 2. per syscall number, for x86_64 (and its i386 and x32 ABIs) and
//!    aarch64 (and 32-bit arm), for the default, the
//!    empty and the full capability set and for an old and the running
//!    kernel: the same rules (action + argument conditions);
//! 3. the compiled BPF program's decision for every syscall number and for
//!    arguments on both sides of every condition's operand.
//!
//! Run with `--nocapture` to see the agreement lines the README reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rbuild_solver::sandbox::seccomp::{
    Abi, Action, Arch, ArgCmp, Cap, CapSet, CmpOp, Condition, KernelVersion, PROFILE, RuleSet, SeccompData,
    UNKNOWN_SYSCALL, effective, evaluate,
};
use serde_json::Value;

fn default_json() -> Value {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = crate_dir
        .ancestors()
        .map(|d| d.join("shared/conformance/moby-seccomp/default.json"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("moby-seccomp/default.json not found above {}", crate_dir.display()));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

fn action(entry: &Value) -> Action {
    match entry["action"].as_str().unwrap() {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(entry["errnoRet"].as_u64().unwrap_or(1) as u16),
        other => panic!("action {other} not expected in the default profile"),
    }
}

fn args(entry: &Value) -> Vec<ArgCmp> {
    entry["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|c| ArgCmp {
                    index: c["index"].as_u64().unwrap() as u8,
                    op: match c["op"].as_str().unwrap() {
                        "SCMP_CMP_NE" => CmpOp::Ne,
                        "SCMP_CMP_LT" => CmpOp::Lt,
                        "SCMP_CMP_LE" => CmpOp::Le,
                        "SCMP_CMP_EQ" => CmpOp::Eq,
                        "SCMP_CMP_GE" => CmpOp::Ge,
                        "SCMP_CMP_GT" => CmpOp::Gt,
                        "SCMP_CMP_MASKED_EQ" => CmpOp::MaskedEq,
                        op => panic!("unknown op {op}"),
                    },
                    value: c["value"].as_u64().unwrap(),
                    value_two: c["valueTwo"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn kernel(v: &Value) -> Option<KernelVersion> {
    v.as_str().map(|s| KernelVersion::parse(s).unwrap())
}

fn caps_named(set: CapSet) -> BTreeSet<String> {
    Cap::ALL.iter().filter(|c| set.contains(**c)).map(|c| c.name().to_string()).collect()
}

/// moby `setupSeccomp`, on the JSON.
fn json_applies(entry: &Value, arch: &str, caps: &BTreeSet<String>, running: KernelVersion) -> bool {
    let ex = &entry["excludes"];
    if strs(&ex["arches"]).iter().any(|a| a == arch)
        || strs(&ex["caps"]).iter().any(|c| caps.contains(c))
        || kernel(&ex["minKernel"]).is_some_and(|k| running >= k)
    {
        return false;
    }
    let inc = &entry["includes"];
    let arches = strs(&inc["arches"]);
    (arches.is_empty() || arches.iter().any(|a| a == arch))
        && strs(&inc["caps"]).iter().all(|c| caps.contains(c))
        && kernel(&inc["minKernel"]).is_none_or(|k| running >= k)
}

type Rules = BTreeSet<(Action, Vec<ArgCmp>)>;

/// The JSON's rules: entries selected for the architecture, names resolved
/// in one of its ABIs.
fn json_rules(json: &Value, arch: Arch, abi: Abi, caps: CapSet, running: KernelVersion) -> BTreeMap<u32, Rules> {
    let names = caps_named(caps);
    let mut out: BTreeMap<u32, Rules> = BTreeMap::new();
    for entry in json["syscalls"].as_array().unwrap() {
        if !json_applies(entry, arch.profile_name(), &names, running) {
            continue;
        }
        for name in strs(&entry["names"]) {
            if let Some(nr) = abi.syscall_number(&name) {
                out.entry(nr).or_default().insert((action(entry), args(entry)));
            }
        }
    }
    out
}

/// The first JSON rule whose conditions hold decides; on 32-bit ABIs
/// libseccomp compares the low 32 bits of argument and operand.
fn json_decides(rules: Option<&Rules>, default: Action, a: &[u64; 6], abi: Abi) -> Action {
    let holds = |c: &ArgCmp| {
        let arg = a[usize::from(c.index)];
        if abi.is_32bit() {
            let (v, w) = (c.value & 0xffff_ffff, c.value_two & 0xffff_ffff);
            ArgCmp { value: v, value_two: w, ..*c }.matches(arg & 0xffff_ffff)
        } else {
            c.matches(arg)
        }
    };
    rules.and_then(|rs| rs.iter().find(|(_, conds)| conds.iter().all(holds))).map_or(default, |(act, _)| *act)
}

fn ours(set: &RuleSet, abi: Abi) -> BTreeMap<u32, Rules> {
    let rules = &set.abi(abi).expect("every ABI of the arch has rules").syscalls;
    rules.iter().map(|(nr, rules)| (*nr, rules.iter().map(|r| (r.action, r.args.to_vec())).collect())).collect()
}

fn condition_eq(json: &Value, ours: &Condition) -> bool {
    let caps: Vec<String> = ours.caps.iter().map(|c| c.name().to_string()).collect();
    let arches: Vec<String> = ours.arches.iter().map(|a| a.to_string()).collect();
    strs(&json["caps"]) == caps && strs(&json["arches"]) == arches && kernel(&json["minKernel"]) == ours.min_kernel
}

#[test]
fn profile_entries_are_moby_default_json() {
    let json = default_json();
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(PROFILE.default_action, Action::Errno(json["defaultErrnoRet"].as_u64().unwrap() as u16));
    let entries = json["syscalls"].as_array().unwrap();
    assert_eq!(PROFILE.syscalls.len(), entries.len(), "number of entries");
    for (i, (ours, theirs)) in PROFILE.syscalls.iter().zip(entries).enumerate() {
        assert_eq!(ours.names, strs(&theirs["names"]).as_slice(), "entry {i}: names");
        assert_eq!(ours.action, action(theirs), "entry {i}: action");
        assert_eq!(ours.args, args(theirs).as_slice(), "entry {i}: args");
        assert!(condition_eq(&theirs["includes"], &ours.includes), "entry {i}: includes");
        assert!(condition_eq(&theirs["excludes"], &ours.excludes), "entry {i}: excludes");
    }
    println!("profile: {}/{} entries of default.json agree", entries.len(), entries.len());
}

/// Argument values on both sides of every operand the rules use.
fn probes(rules: &Rules) -> Vec<[u64; 6]> {
    let mut out = vec![[0; 6], [u64::MAX; 6]];
    for (_, conds) in rules {
        for c in conds {
            for v in [c.value, c.value_two, c.value.wrapping_sub(1), c.value.wrapping_add(1), c.value | 1 << 40] {
                let mut a = [0u64; 6];
                a[usize::from(c.index)] = v;
                out.push(a);
            }
            // Every single bit of a mask, set alone.
            if c.op == CmpOp::MaskedEq {
                for bit in 0..64 {
                    let mut a = [0u64; 6];
                    a[usize::from(c.index)] = 1 << bit;
                    out.push(a);
                }
            }
        }
    }
    out
}

#[test]
fn effective_rules_and_bpf_agree_with_default_json() {
    let json = default_json();
    let running = KernelVersion::running().unwrap();
    let old = KernelVersion { major: 4, minor: 4 };
    let capsets = [("default caps", CapSet::DOCKER_DEFAULT), ("no caps", CapSet::EMPTY), ("all caps", CapSet::all())];
    let mut deviations = Vec::new();
    for arch in Arch::ALL {
        for (caps_label, caps) in capsets {
            for k in [running, old] {
                let set = effective(&PROFILE, arch, caps, k);
                let prog = set.compile().unwrap_or_else(|e| panic!("{arch:?} {caps_label}: {e}"));
                for &abi in arch.abis() {
                    let label = format!("{arch:?}/{abi:?}, {caps_label}, kernel {}.{}", k.major, k.minor);
                    let theirs = json_rules(&json, arch, abi, caps, k);
                    let mine = ours(&set, abi);
                    let mut agree = 0;
                    for (name, nr) in abi.syscalls() {
                        let (t, m) = (theirs.get(nr), mine.get(nr));
                        let mut ok = t == m;
                        if !ok {
                            deviations.push(format!("{label}: {name} ({nr}): json {t:?}, ours {m:?}"));
                        }
                        // The compiled program decides as the JSON's rules do.
                        for a in probes(t.unwrap_or(&Rules::new())) {
                            let data = SeccompData { nr: *nr, arch: abi.audit_arch(), instruction_pointer: 0, args: a };
                            let want = json_decides(t, set.default, &a, abi).ret();
                            let got = evaluate(&prog, &data);
                            if got != Some(want) {
                                ok = false;
                                deviations.push(format!("{label}: {name} {a:x?}: bpf {got:x?}, json {want:#x}"));
                            }
                        }
                        agree += usize::from(ok);
                    }
                    // Numbers no name has: gaps get the default; numbers above
                    // the newest syscall we know get ENOSYS, as under runc.
                    let named: BTreeSet<u32> = abi.syscalls().iter().map(|(_, nr)| *nr).collect();
                    let newest = *named.last().unwrap();
                    assert_eq!(set.abi(abi).unwrap().first_unknown, newest + 1, "{label}");
                    // x32 numbers carry bit 30; on x86_64 those are x32's, not ours.
                    let (base, top) = match abi {
                        Abi::X32 => (0x4000_0000, u32::MAX),
                        Abi::X86_64 => (0, 0x3fff_ffff),
                        _ => (0, u32::MAX),
                    };
                    let unnamed = (base..base + 1024).filter(|n| !named.contains(n)).chain([top]);
                    for nr in unnamed {
                        let data = SeccompData { nr, arch: abi.audit_arch(), instruction_pointer: 0, args: [0; 6] };
                        let want = if nr > newest { UNKNOWN_SYSCALL } else { set.default };
                        assert_eq!(evaluate(&prog, &data), Some(want.ret()), "{label}: unknown syscall {nr:#x}");
                    }
                    let total = abi.syscalls().len();
                    println!("{label}: {agree}/{total} syscalls agree ({} instructions)", prog.len());
                }
                // Any other ABI (here ppc64le's) is refused outright.
                let foreign = SeccompData { nr: 3, arch: 0xc000_0015, instruction_pointer: 0, args: [0; 6] };
                assert_eq!(evaluate(&prog, &foreign), Some(Action::KillProcess.ret()), "{arch:?}: foreign arch");
            }
        }
    }
    assert!(deviations.is_empty(), "deviations from default.json:\n{}", deviations.join("\n"));
}

/// What the default capability set means in practice (the list).
#[test]
fn default_caps_deny_the_dangerous_calls() {
    let k = KernelVersion::running().unwrap();
    for arch in Arch::ALL {
        let set = effective(&PROFILE, arch, CapSet::DOCKER_DEFAULT, k);
        let abi = arch.native_abi();
        let nr = |n: &str| abi.syscall_number(n).unwrap();
        let decide = |n: &str, a: [u64; 6]| set.decide(abi, nr(n), &a);
        for denied in
            ["mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key", "bpf", "perf_event_open"]
        {
            assert_eq!(decide(denied, [0; 6]), Action::Errno(1), "{arch:?} {denied}");
        }
        assert_eq!(decide("clone3", [0; 6]), Action::Errno(38), "{arch:?} clone3 → ENOSYS");
        let clone_newuser = libc::CLONE_NEWUSER as u64;
        assert_eq!(decide("clone", [clone_newuser, 0, 0, 0, 0, 0]), Action::Errno(1), "{arch:?} clone(NEWUSER)");
        assert_eq!(decide("clone", [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]), Action::Allow, "{arch:?} fork-like clone");
        assert_eq!(decide("socket", [40, 1, 0, 0, 0, 0]), Action::Errno(1), "{arch:?} AF_VSOCK");
        assert_eq!(decide("socket", [2, 1, 0, 0, 0, 0]), Action::Allow, "{arch:?} AF_INET");
        assert_eq!(decide("personality", [0xffff_ffff, 0, 0, 0, 0, 0]), Action::Allow, "{arch:?} query");
        assert_eq!(decide("personality", [0x0040_0000, 0, 0, 0, 0, 0]), Action::Errno(1), "{arch:?} READ_IMPLIES_EXEC");
        assert_eq!(decide("chroot", [0; 6]), Action::Allow, "{arch:?} chroot with CAP_SYS_CHROOT");
        assert_eq!(decide("ptrace", [0; 6]), Action::Allow, "{arch:?} ptrace on kernel >= 4.8");
        let all = effective(&PROFILE, arch, CapSet::all(), k);
        assert_eq!(all.decide(abi, nr("mount"), &[0; 6]), Action::Allow, "{arch:?} mount with CAP_SYS_ADMIN");
        assert_eq!(all.decide(abi, nr("clone"), &[clone_newuser, 0, 0, 0, 0, 0]), Action::Allow);
    }
}
