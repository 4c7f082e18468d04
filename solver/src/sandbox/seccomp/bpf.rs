//! Classic BPF for seccomp: code generation for a [`RuleSet`], and an
//! evaluator of such programs (for tests and for checking a program
//! against its rule set).
//!
//! Why our own code generator rather than `seccompiler::SeccompFilter`: that
//! compiler gives every rule of a filter one match action, while the profile
//! needs several (allow, the default `EPERM`, `ENOSYS` for `clone3`). Stacked
//! filters would work (the kernel runs all of them and keeps the
//! highest-precedence action, the newest filter winning ties), but every
//! syscall would then run each filter, seccompiler's filters test syscalls
//! one after the other (~370 comparisons for a late one), and `Seccomp_filters`
//! would say 2. One program with a binary search over the syscall numbers
//! needs about 2·log2(runs) ≈ 15 instructions per syscall, and has room for
//! per-syscall argument checks with their own action. We keep seccompiler's
//! instruction type ([`seccompiler::sock_filter`]) and action encoding.
//!
//! Layout of a program:
//! ```text
//!   ld arch; for each ABI: jeq AUDIT_ARCH_<abi> ? next : +1; ja <abi block>
//!   ret KILL_PROCESS                       (any other ABI)
//!   <abi block>: ld nr; (x86_64: jge 0x40000000 ? next : +1; ja <x32 tree>)
//!                <search tree over runs of syscall numbers>:
//!                jge start ? next : +1; ja right; <left subtree>; right: <right subtree>
//!   leaf:        ret <action of the run>   or, for a syscall with argument rules:
//!                <conditions of rule 1, failing to rule 2>; ret <action>; ...; ret default
//! ```
//! Arguments are compared as 64-bit values on the 64-bit ABIs and on their
//! low word on the 32-bit ones (i386, x32, arm), as libseccomp does.
//! Conditional jumps only ever skip a few instructions (their offsets are 8
//! bits); the tree's long jumps are `ja`, whose offset is 32 bits.

use seccompiler::sock_filter;

use super::{Abi, AbiRules, Action, ArgCmp, CmpOp, Rule, RuleSet, SeccompError, UNKNOWN_SYSCALL};

/// `BPF_MAXINSNS`: the longest program the kernel accepts.
pub(super) const MAX_INSNS: usize = 4096;
/// Syscall numbers with this bit set are the x32 ABI on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const ARGS_OFFSET: u32 = 16;

/// What a seccomp filter sees of a syscall (`struct seccomp_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeccompData {
    /// Syscall number.
    pub nr: u32,
    /// `AUDIT_ARCH_*` of the calling ABI.
    pub arch: u32,
    /// Instruction pointer.
    pub instruction_pointer: u64,
    /// Arguments.
    pub args: [u64; 6],
}

impl SeccompData {
    /// The 32-bit word at byte offset `off` (little-endian, as on both
    /// architectures we support), or `None` outside the struct or unaligned.
    fn word(&self, off: u32) -> Option<u32> {
        let lo = |v: u64| v as u32;
        let hi = |v: u64| (v >> 32) as u32;
        match off {
            NR_OFFSET => Some(self.nr),
            ARCH_OFFSET => Some(self.arch),
            8 => Some(lo(self.instruction_pointer)),
            12 => Some(hi(self.instruction_pointer)),
            o if (ARGS_OFFSET..ARGS_OFFSET + 48).contains(&o) && o.is_multiple_of(4) => {
                let arg = self.args[((o - ARGS_OFFSET) / 8) as usize];
                Some(if (o - ARGS_OFFSET).is_multiple_of(8) { lo(arg) } else { hi(arg) })
            }
            _ => None,
        }
    }
}

/// Runs a seccomp program (the subset of classic BPF seccomp accepts that
/// uses constants: `ld [abs]`, `and #k`, `ja`, `jeq`/`jgt`/`jge`/`jset #k`,
/// `ret #k`) on `data` and returns the `SECCOMP_RET_*` value, or `None` for
/// a program that runs off its end or uses another instruction.
pub fn evaluate(program: &[sock_filter], data: &SeccompData) -> Option<u32> {
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = program.get(pc)?;
        pc += 1;
        let jump = |cond: bool| usize::from(if cond { ins.jt } else { ins.jf });
        match ins.code {
            LD_ABS => a = data.word(ins.k)?,
            AND_K => a &= ins.k,
            JA => pc += ins.k as usize,
            JEQ => pc += jump(a == ins.k),
            JGT => pc += jump(a > ins.k),
            JGE => pc += jump(a >= ins.k),
            JSET => pc += jump(a & ins.k != 0),
            RET_K => return Some(ins.k),
            _ => return None,
        }
    }
}

/// A jump target while assembling.
#[derive(Clone, Copy)]
enum Target {
    /// The next instruction.
    Next,
    /// Skip this many instructions.
    Skip(u8),
    /// A label.
    Label(usize),
}

enum Item {
    Stmt { code: u16, k: u32 },
    Jump { code: u16, k: u32, jt: Target, jf: Target },
    Ja(usize),
    Label(usize),
}

/// A tiny assembler: instructions with symbolic targets, resolved at the end.
#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels += 1;
        self.labels - 1
    }
    fn place(&mut self, l: usize) {
        self.items.push(Item::Label(l));
    }
    fn ld(&mut self, off: u32) {
        self.items.push(Item::Stmt { code: LD_ABS, k: off });
    }
    fn and(&mut self, k: u32) {
        self.items.push(Item::Stmt { code: AND_K, k });
    }
    fn ret(&mut self, action: Action) {
        self.items.push(Item::Stmt { code: RET_K, k: action.ret() });
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) {
        self.items.push(Item::Jump { code, k, jt, jf });
    }
    fn ja(&mut self, l: usize) {
        self.items.push(Item::Ja(l));
    }

    fn finish(self) -> Result<Vec<sock_filter>, SeccompError> {
        let mut at = vec![usize::MAX; self.labels];
        let mut pc = 0;
        for item in &self.items {
            match item {
                Item::Label(l) => at[*l] = pc,
                _ => pc += 1,
            }
        }
        let mut out = Vec::with_capacity(pc);
        for item in &self.items {
            let here = out.len() + 1;
            let offset = |t: Target| -> Result<u8, SeccompError> {
                let d = match t {
                    Target::Next => 0,
                    Target::Skip(n) => usize::from(n),
                    Target::Label(l) => at[l] - here,
                };
                u8::try_from(d).map_err(|_| SeccompError::JumpTooFar(d))
            };
            match *item {
                Item::Label(_) => continue,
                Item::Stmt { code, k } => out.push(sock_filter { code, jt: 0, jf: 0, k }),
                Item::Jump { code, k, jt, jf } => out.push(sock_filter { code, jt: offset(jt)?, jf: offset(jf)?, k }),
                Item::Ja(l) => {
                    let d = at[l] - here;
                    out.push(sock_filter {
                        code: JA,
                        jt: 0,
                        jf: 0,
                        k: u32::try_from(d).map_err(|_| SeccompError::JumpTooFar(d))?,
                    })
                }
            }
        }
        if out.len() > MAX_INSNS {
            return Err(SeccompError::TooLong(out.len()));
        }
        Ok(out)
    }
}

/// A run of syscall numbers, from `start` up to the next segment's start.
enum Segment<'a> {
    /// Every number of the run gets this action, whatever the arguments.
    Uniform(Action),
    /// One syscall whose rules check arguments.
    Rules(&'a [Rule]),
}

/// Compiles `set` (see the module comment for the layout).
pub(super) fn compile(set: &RuleSet) -> Result<Vec<sock_filter>, SeccompError> {
    let mut asm = Asm::default();
    // Dispatch on the ABI's audit arch; x32 shares x86_64's and is told
    // apart by the number.
    asm.ld(ARCH_OFFSET);
    let mut blocks = Vec::new();
    for rules in set.abis.iter().filter(|r| r.abi != Abi::X32) {
        let block = asm.label();
        asm.jump(JEQ, rules.abi.audit_arch(), Target::Next, Target::Skip(1));
        asm.ja(block);
        blocks.push((block, rules));
    }
    asm.ret(Action::KillProcess);
    for (block, rules) in blocks {
        asm.place(block);
        asm.ld(NR_OFFSET);
        if rules.abi == Abi::X86_64 {
            // An x32 call; refused outright if the set has no x32 rules.
            let x32 = asm.label();
            asm.jump(JGE, X32_SYSCALL_BIT, Target::Next, Target::Skip(1));
            asm.ja(x32);
            tree(&mut asm, &segments(set, rules)?, set.default, true);
            asm.place(x32);
            match set.abi(Abi::X32) {
                Some(x32_rules) => tree(&mut asm, &segments(set, x32_rules)?, set.default, false),
                None => asm.ret(Action::KillProcess),
            }
        } else {
            tree(&mut asm, &segments(set, rules)?, set.default, !rules.abi.is_32bit());
        }
    }
    asm.finish()
}

/// Splits the syscall numbers 0..=u32::MAX into runs: neighbouring numbers
/// with the same unconditional action (most allowed syscalls, the gaps
/// between them) share one run, so the search tree has a few dozen leaves
/// rather than one per syscall.
fn segments<'a>(set: &RuleSet, abi: &'a AbiRules) -> Result<Vec<(u32, Segment<'a>)>, SeccompError> {
    let mut out: Vec<(u32, Segment<'a>)> = Vec::new();
    let mut push = |start: u32, seg: Segment<'a>| {
        if let (Segment::Uniform(a), Some((_, Segment::Uniform(last)))) = (&seg, out.last())
            && a == last
        {
            return;
        }
        out.push((start, seg));
    };
    let mut next = 0u32;
    for (&nr, rules) in abi.syscalls.range(..abi.first_unknown) {
        let Some(first) = rules.first() else { continue };
        if let Some(other) = rules.iter().find(|r| r.action != first.action) {
            return Err(SeccompError::ConflictingActions { nr, first: first.action, second: other.action });
        }
        if nr > next {
            push(next, Segment::Uniform(set.default));
        }
        // Rules are alternatives: one without conditions always matches.
        let seg = if rules.iter().any(|r| r.args.is_empty()) {
            Segment::Uniform(first.action)
        } else {
            Segment::Rules(rules)
        };
        push(nr, seg);
        next = nr + 1;
    }
    if abi.first_unknown > next {
        push(next, Segment::Uniform(set.default));
    }
    push(abi.first_unknown, Segment::Uniform(UNKNOWN_SYSCALL));
    Ok(out)
}

/// Binary search over `segments` (sorted by start, the first one starting
/// at or below the accumulator, which holds the syscall number).
/// `wide`: arguments are 64-bit (else only their low word is compared).
fn tree(asm: &mut Asm, segments: &[(u32, Segment<'_>)], default: Action, wide: bool) {
    match segments {
        [] => asm.ret(default),
        [(_, Segment::Uniform(action))] => asm.ret(*action),
        [(_, Segment::Rules(rules))] => block(asm, rules, default, wide),
        _ => {
            let mid = segments.len() / 2;
            let left = asm.label();
            let right = asm.label();
            asm.jump(JGE, segments[mid].0, Target::Next, Target::Label(left));
            asm.ja(right);
            asm.place(left);
            tree(asm, &segments[..mid], default, wide);
            asm.place(right);
            tree(asm, &segments[mid..], default, wide);
        }
    }
}

/// The rules of one syscall (all with the same action and with
/// conditions): the action if any rule's conditions all hold, else the
/// default.
fn block(asm: &mut Asm, rules: &[Rule], default: Action, wide: bool) {
    for rule in rules {
        let next_rule = asm.label();
        for cond in rule.args {
            if wide {
                condition(asm, cond, next_rule);
            } else {
                condition32(asm, cond, next_rule);
            }
        }
        asm.ret(rule.action);
        asm.place(next_rule);
    }
    asm.ret(default);
}

/// Falls through when `c` holds, jumps to `fail` otherwise. Arguments are
/// 64-bit: the high word decides unless it is equal to the operand's.
fn condition(asm: &mut Asm, c: &ArgCmp, fail: usize) {
    let lo_off = ARGS_OFFSET + 8 * u32::from(c.index);
    let hi_off = lo_off + 4;
    let (vhi, vlo) = ((c.value >> 32) as u32, c.value as u32);
    let fail = Target::Label(fail);
    let ok = asm.label();
    let okt = Target::Label(ok);
    let next = Target::Next;
    match c.op {
        CmpOp::Eq => {
            asm.ld(hi_off);
            asm.jump(JEQ, vhi, next, fail);
            asm.ld(lo_off);
            asm.jump(JEQ, vlo, next, fail);
        }
        CmpOp::Ne => {
            asm.ld(hi_off);
            asm.jump(JEQ, vhi, next, okt);
            asm.ld(lo_off);
            asm.jump(JEQ, vlo, fail, next);
        }
        CmpOp::Gt | CmpOp::Ge => {
            asm.ld(hi_off);
            asm.jump(JGT, vhi, okt, next);
            asm.jump(JEQ, vhi, next, fail);
            asm.ld(lo_off);
            asm.jump(if c.op == CmpOp::Gt { JGT } else { JGE }, vlo, next, fail);
        }
        CmpOp::Lt | CmpOp::Le => {
            // arg < v  is  !(arg >= v);  arg <= v  is  !(arg > v).
            asm.ld(hi_off);
            asm.jump(JGT, vhi, fail, next);
            asm.jump(JEQ, vhi, next, okt);
            asm.ld(lo_off);
            asm.jump(if c.op == CmpOp::Lt { JGE } else { JGT }, vlo, fail, next);
        }
        CmpOp::MaskedEq => {
            let (mhi, mlo) = (vhi, vlo);
            let (whi, wlo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            // A zero mask and value in the high word always match (the
            // profile's clone flags are 32-bit).
            if mhi != 0 || whi != 0 {
                asm.ld(hi_off);
                asm.and(mhi);
                asm.jump(JEQ, whi, next, fail);
            }
            asm.ld(lo_off);
            asm.and(mlo);
            asm.jump(JEQ, wlo, next, fail);
        }
    }
    asm.place(ok);
}

/// [`condition`] for 32-bit arguments: the low words of argument and
/// operand only, as libseccomp compares on 32-bit ABIs.
fn condition32(asm: &mut Asm, c: &ArgCmp, fail: usize) {
    let lo_off = ARGS_OFFSET + 8 * u32::from(c.index);
    let (v, w) = (c.value as u32, c.value_two as u32);
    let fail = Target::Label(fail);
    let next = Target::Next;
    asm.ld(lo_off);
    match c.op {
        CmpOp::Eq => asm.jump(JEQ, v, next, fail),
        CmpOp::Ne => asm.jump(JEQ, v, fail, next),
        CmpOp::Gt => asm.jump(JGT, v, next, fail),
        CmpOp::Ge => asm.jump(JGE, v, next, fail),
        CmpOp::Lt => asm.jump(JGE, v, fail, next),
        CmpOp::Le => asm.jump(JGT, v, fail, next),
        CmpOp::MaskedEq => {
            asm.and(v);
            asm.jump(JEQ, w, next, fail);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::Arch;
    use super::*;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn set_with(nr: u32, rules: Vec<Rule>) -> RuleSet {
        RuleSet {
            arch: Arch::X86_64,
            default: Action::Errno(1),
            abis: vec![AbiRules { abi: Abi::X86_64, syscalls: BTreeMap::from([(nr, rules)]), first_unknown: 1000 }],
        }
    }

    fn run(prog: &[sock_filter], nr: u32, args: [u64; 6]) -> u32 {
        let data = SeccompData { nr, arch: Abi::X86_64.audit_arch(), instruction_pointer: 0, args };
        evaluate(prog, &data).expect("program runs to a ret")
    }

    /// Every comparison, on the 64-bit boundaries around its operand,
    /// against [`ArgCmp::matches`].
    #[test]
    fn conditions_compare_all_64_bits() {
        let values = [0u64, 1, 39, 40, 41, 0xffff_ffff, 0x1_0000_0000, 0x1_0000_0027, 0x1_0000_0028, u64::MAX];
        let ops = [CmpOp::Ne, CmpOp::Lt, CmpOp::Le, CmpOp::Eq, CmpOp::Ge, CmpOp::Gt, CmpOp::MaskedEq];
        for op in ops {
            for operand in [40u64, 0x1_0000_0028, 0xffff_ffff, 0] {
                let cond: &'static [ArgCmp] =
                    Box::leak(Box::new([ArgCmp { index: 2, op, value: operand, value_two: operand & 0x28 }]));
                let prog = compile(&set_with(7, vec![Rule { action: Action::Allow, args: cond }])).unwrap();
                for v in values {
                    let got = run(&prog, 7, [0, 0, v, 0, 0, 0]) == ALLOW;
                    assert_eq!(got, cond[0].matches(v), "{op:?} {operand:#x} on {v:#x}");
                }
            }
        }
    }

    #[test]
    fn abis_without_rules_are_killed() {
        let prog = compile(&set_with(0, vec![Rule { action: Action::Allow, args: &[] }])).unwrap();
        let i386 = SeccompData { nr: 0, arch: 3 | 0x4000_0000, instruction_pointer: 0, args: [0; 6] };
        assert_eq!(evaluate(&prog, &i386), Some(libc::SECCOMP_RET_KILL_PROCESS));
        assert_eq!(run(&prog, X32_SYSCALL_BIT, [0; 6]), libc::SECCOMP_RET_KILL_PROCESS);
        assert_eq!(run(&prog, 0, [0; 6]), ALLOW);
        assert_eq!(run(&prog, 1, [0; 6]), libc::SECCOMP_RET_ERRNO | 1);
        assert_eq!(run(&prog, 999, [0; 6]), libc::SECCOMP_RET_ERRNO | 1);
        assert_eq!(run(&prog, 1000, [0; 6]), libc::SECCOMP_RET_ERRNO | 38, "newer than the table: ENOSYS");
    }

    #[test]
    fn mixed_actions_for_one_syscall_are_refused() {
        let set = set_with(
            3,
            vec![
                Rule { action: Action::Allow, args: &[ArgCmp { index: 0, op: CmpOp::Eq, value: 1, value_two: 0 }] },
                Rule { action: Action::Errno(38), args: &[] },
            ],
        );
        assert!(matches!(compile(&set), Err(SeccompError::ConflictingActions { nr: 3, .. })));
    }
}
