//! Seccomp: OCI `linux.seccomp` profiles compiled to classic BPF, paddock's default profile,
//! and the installation of the filter right before the workload's `execve`.
//!
//! libcontainer is built without libseccomp and ignores `linux.seccomp`; this module is what
//! enforces it. The policy step compiles at create ([`compile`] of the spec's profile, or of
//! [`default_profile`] when there is none), so that a bad profile is an error before anything
//! exists; the sandbox's executor installs the program ([`apply`]) as the last step before exec.
//!
//! How a profile is read (the OCI runtime spec leaves most of this to libseccomp and runc):
//!
//! - **Names** resolve through paddock's own tables for x86_64 and aarch64. A name that exists
//!   on some Linux architecture but not on the one being compiled for (`arch_prctl` on aarch64,
//!   `_llseek` or `socketcall` anywhere here) is skipped, as runc and crun do: Docker's and
//!   containerd's default profiles name the calls of every architecture. A name that exists on
//!   no architecture is an error (`linux.seccomp: unknown syscall "foo" for x86_64`).
//! - **Actions**: `SCMP_ACT_ALLOW`, `SCMP_ACT_ERRNO` (`errnoRet`, default EPERM, at most 4095),
//!   `SCMP_ACT_KILL` (= `SCMP_ACT_KILL_THREAD`, as in libseccomp), `SCMP_ACT_KILL_PROCESS`,
//!   `SCMP_ACT_TRAP`, `SCMP_ACT_LOG`. `SCMP_ACT_TRACE` and `SCMP_ACT_NOTIFY` are refused:
//!   paddock attaches no tracer and runs no seccomp agent, and a filter that hands calls to
//!   nobody would hang or fail them. Unknown action, operator or flag strings never get here:
//!   they fail to parse with the spec, and serde's message names them.
//! - **Arguments**: `SCMP_CMP_EQ`/`NE`/`LT`/`LE`/`GT`/`GE` on the full 64-bit value;
//!   `SCMP_CMP_MASKED_EQ` is `arg & value == valueTwo`. Conditions of one entry are ANDed, except
//!   that when one argument index appears more than once each condition becomes its own rule
//!   (ORed), which is what runc does and what profiles written for it expect.
//! - **Order**: for a given syscall, the first entry (in profile order) whose conditions match
//!   decides; no match means `defaultAction`. This is what lets a table say "these values,
//!   then refuse the rest". libseccomp merges such overlaps its own way (an unconditional entry
//!   wins over conditional ones wherever it stands); Docker's and containerd's profiles have
//!   none, so they mean the same under both.
//! - **Architectures**: paddock filters the native 64-bit ABI only. Whatever `architectures`
//!   lists, a syscall made through another ABI (x86 `int 0x80`, x32, arm32 compat) kills the
//!   process: those entry points are a classic source of kernel bugs, and app instances are
//!   64-bit. A 32-bit binary in a filtered sandbox dies on its first syscall.
//! - **New syscalls**: when `defaultAction` refuses, a syscall number above every number in the
//!   table answers ENOSYS, as runc does, so that libc falls back to an older call instead of
//!   failing on a kernel newer than the table.
//! - **Flags** (`SECCOMP_FILTER_FLAG_*`) are accepted and not applied: TSYNC is moot for the
//!   single-threaded process about to exec, LOG only changes auditing, SPEC_ALLOW would turn a
//!   mitigation off, WAIT_KILLABLE_RECV concerns notify only.
//!
//! The program: seccompiler's architecture check; on x86_64, x32 numbers killed; the ENOSYS
//! rule; then one group per action, each returning its action on a match and falling through
//! to the next otherwise (syscalls with several entries first, in entry order), then
//! `defaultAction`. Unconditional syscalls are checked as ranges of numbers; the conditional
//! ones are compiled by seccompiler (`SeccompFilter` per action, its architecture check
//! stripped, its "no match" returns turned into jumps to the next group). Docker's default
//! comes out at about 160 instructions instead of seccompiler's 1600: the kernel's cost of
//! installing a filter grows with its length (about 0.5 µs an instruction here).

mod default_profile;
mod syscall_table;

use std::collections::BTreeMap;
use std::io;

use oci_spec::runtime::{
    Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator, Process,
};
use seccompiler::{
    sock_filter, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

pub use default_profile::{default_profile, default_profile_for};
pub use seccompiler::{BpfProgram, TargetArch};

/// Errors of compiling or installing a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp: unknown syscall {name:?} for {arch}")]
    UnknownSyscall { name: String, arch: &'static str },
    #[error("linux.seccomp: {place}: action {action} is not supported ({reason})")]
    UnsupportedAction {
        place: String,
        action: LinuxSeccompAction,
        reason: &'static str,
    },
    #[error("linux.seccomp: {place}: errnoRet {errno} is out of range (0 to 4095)")]
    ErrnoOutOfRange { place: String, errno: u32 },
    #[error("linux.seccomp: {place}: argument index {index} is out of range (0 to 5)")]
    ArgumentIndex { place: String, index: usize },
    #[error(
        "linux.seccomp: {place}: SCMP_CMP_MASKED_EQ valueTwo {value:#x} has bits outside \
         the mask {mask:#x} and can never match"
    )]
    MaskedValue {
        place: String,
        mask: u64,
        value: u64,
    },
    #[error("linux.seccomp: architecture {0} is not supported (x86_64 and aarch64 are)")]
    UnsupportedArch(String),
    #[error("linux.seccomp: the filter needs {0} BPF instructions, the kernel takes at most 4096")]
    TooLarge(usize),
    #[error("linux.seccomp: compiling the filter: {0}")]
    Compile(String),
    #[error(
        "seccomp: installing the filter needs no_new_privs or CAP_SYS_ADMIN, and the process \
         has neither: set process.noNewPrivileges"
    )]
    NeedsNoNewPrivs,
    #[error("seccomp: refusing to install an empty filter")]
    EmptyProgram,
    #[error("seccomp: installing the filter: {0}")]
    Install(#[source] io::Error),
}

type Result<T> = std::result::Result<T, SeccompError>;

/// The largest errno the kernel returns from `SECCOMP_RET_ERRNO`.
const MAX_ERRNO: u32 = 4095;
/// The kernel's limit on a filter's length (BPF_MAXINSNS).
const MAX_INSTRUCTIONS: usize = 4096;
/// x86_64 marks x32 syscalls with this bit of the number.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x05 | 0x10;
const JMP_JGT_K: u16 = 0x05 | 0x20;
const JMP_JGE_K: u16 = 0x05 | 0x30;
const RET_K: u16 = 0x06;
/// `offsetof(struct seccomp_data, nr)`.
const NR_OFFSET: u32 = 0;

/// The action seccompiler is told to take when a segment's rules do not match; each such
/// return is rewritten into a jump to the next segment. TRACE never appears in a compiled
/// profile, so no real return can be mistaken for it.
const FALL_THROUGH: SeccompAction = SeccompAction::Trace(0xfa11);

/// The architecture paddock runs on, as seccompiler names it.
pub fn native_arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::UnsupportedArch(std::env::consts::ARCH.to_string()))
}

/// The number of syscall `name` on `arch`, from paddock's tables (x86_64 and aarch64).
pub fn syscall_number(name: &str, arch: TargetArch) -> Option<u32> {
    lookup(table(arch)?, name)
}

fn table(arch: TargetArch) -> Option<&'static [(&'static str, u32)]> {
    match arch {
        TargetArch::x86_64 => Some(syscall_table::X86_64),
        TargetArch::aarch64 => Some(syscall_table::AARCH64),
        TargetArch::riscv64 => None,
    }
}

fn lookup(table: &[(&str, u32)], name: &str) -> Option<u32> {
    table
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .and_then(|i| table.get(i))
        .map(|(_, nr)| *nr)
}

fn exists_elsewhere(name: &str) -> bool {
    lookup(syscall_table::X86_64, name).is_some()
        || lookup(syscall_table::AARCH64, name).is_some()
        || syscall_table::OTHER_ARCHES.binary_search(&name).is_ok()
}

fn arch_name(arch: TargetArch) -> &'static str {
    match arch {
        TargetArch::x86_64 => "x86_64",
        TargetArch::aarch64 => "aarch64",
        TargetArch::riscv64 => "riscv64",
    }
}

/// Compiles an OCI seccomp profile to a BPF program for `arch`. See the module documentation
/// for how the profile is read.
///
/// Fast enough for every create: the default profile (about 300 syscalls) compiles in about
/// 0.15 ms (release build) to about 160 instructions, which the kernel installs in about 0.1 ms.
///
/// ```
/// use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSyscall};
/// use paddock_runtime::seccomp::{self, TargetArch};
///
/// let mut mount = LinuxSyscall::default();
/// mount.set_names(vec!["mount".into(), "umount2".into()]);
/// mount.set_action(LinuxSeccompAction::ScmpActErrno);
/// let mut profile = LinuxSeccomp::default();
/// profile.set_default_action(LinuxSeccompAction::ScmpActAllow);
/// profile.set_syscalls(Some(vec![mount]));
/// let program = seccomp::compile(&profile, TargetArch::x86_64)?;
/// # let _ = program;
/// # Ok::<(), seccomp::SeccompError>(())
/// ```
pub fn compile(profile: &LinuxSeccomp, arch: TargetArch) -> Result<BpfProgram> {
    let table = table(arch).ok_or_else(|| SeccompError::UnsupportedArch(arch_name(arch).into()))?;
    let default = action(
        profile.default_action(),
        profile.default_errno_ret(),
        || "defaultAction".to_string(),
    )?;

    // Per syscall number, its entries in profile order; consecutive entries with the same
    // action merged (their rules ORed; an unconditional one absorbs the rest).
    let mut chains: BTreeMap<u32, Vec<Run>> = BTreeMap::new();
    for (i, entry) in profile.syscalls().iter().flatten().enumerate() {
        let place = || place(i, entry.names());
        let run_action = action(entry.action(), entry.errno_ret(), place)?;
        let rules = rules(entry.args().as_deref().unwrap_or_default(), place)?;
        for name in entry.names() {
            let Some(nr) = lookup(table, name) else {
                if exists_elsewhere(name) {
                    continue;
                }
                return Err(SeccompError::UnknownSyscall {
                    name: name.clone(),
                    arch: arch_name(arch),
                });
            };
            let chain = chains.entry(nr).or_default();
            match chain.last_mut() {
                // Nothing after an unconditional entry is ever reached.
                Some(last) if last.rules.is_none() => {}
                Some(last) if last.action == run_action => match (&mut last.rules, &rules) {
                    (Some(merged), Some(more)) => merged.extend(more.iter().cloned()),
                    (merged, _) => *merged = None,
                },
                _ => chain.push(Run {
                    action: run_action.clone(),
                    rules: rules.clone(),
                }),
            }
        }
    }

    // Entries that end a chain with the default action change nothing. The few syscalls left
    // with several entries come first, level k holding their k-th entries; then all the
    // others, in one group per action. One seccompiler filter per group.
    let mut multi_levels: Vec<Vec<Segment>> = Vec::new();
    let mut single_level: Vec<Segment> = Vec::new();
    for (nr, mut chain) in chains {
        while chain.last().is_some_and(|run| run.action == default) {
            chain.pop();
        }
        let multi = chain.len() > 1;
        for (depth, run) in chain.into_iter().enumerate() {
            let groups = if multi {
                if multi_levels.len() <= depth {
                    multi_levels.push(Vec::new());
                }
                match multi_levels.get_mut(depth) {
                    Some(groups) => groups,
                    None => continue,
                }
            } else {
                &mut single_level
            };
            let rules = run.rules.unwrap_or_default();
            match groups.iter_mut().find(|(action, _)| *action == run.action) {
                Some((_, group)) => {
                    group.insert(nr, rules);
                }
                None => groups.push((run.action, BTreeMap::from([(nr, rules)]))),
            }
        }
    }

    let arch_check = arch_check(arch)?;
    let mut program = arch_check.clone();
    if arch == TargetArch::x86_64 {
        // x32 calls come with the x86_64 audit arch and bit 30 set in the number; -1 is not one.
        program.extend([
            stmt(LD_W_ABS, NR_OFFSET),
            jump(JMP_JGE_K, X32_SYSCALL_BIT, 0, 2),
            jump(JMP_JEQ_K, u32::MAX, 1, 0),
            stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        ]);
    }
    if !matches!(default, SeccompAction::Allow | SeccompAction::Log) {
        let newest = table.iter().map(|(_, nr)| *nr).max().unwrap_or(0);
        program.extend([
            stmt(LD_W_ABS, NR_OFFSET),
            jump(JMP_JGT_K, newest, 0, 1),
            stmt(RET_K, u32::from(SeccompAction::Errno(libc::ENOSYS as u32))),
        ]);
    }
    for (action, rules) in multi_levels.into_iter().flatten().chain(single_level) {
        append_segment(&mut program, &arch_check, rules, action, arch)?;
    }
    program.push(stmt(RET_K, u32::from(default)));
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SeccompError::TooLarge(program.len()));
    }
    Ok(program)
}

/// Installs `program` on the calling thread; it stays across `execve` and is inherited by
/// every child. Only async-signal-safe work: callable between fork and exec.
///
/// Unlike seccompiler's `apply_filter`, this does not set `no_new_privs` itself: whether a
/// sandbox may gain privileges through setuid binaries is the spec's (and the policy's)
/// decision, made before the executor runs. Without `no_new_privs` the kernel requires
/// `CAP_SYS_ADMIN`, which [`SeccompError::NeedsNoNewPrivs`] reports;
/// [`requires_no_new_privs`] tells the policy step in advance.
pub fn apply(program: &[sock_filter]) -> Result<()> {
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const sock_filter,
    }
    if program.is_empty() {
        return Err(SeccompError::EmptyProgram);
    }
    let len = u16::try_from(program.len()).map_err(|_| SeccompError::TooLarge(program.len()))?;
    let fprog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    let flags: libc::c_uint = 0;
    // SAFETY: `fprog` describes `program` (same layout as the kernel's sock_fprog and
    // sock_filter), which outlives the call; the kernel copies the instructions and keeps no
    // pointer to them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const SockFprog,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // SAFETY: PR_GET_NO_NEW_PRIVS takes no pointer and only reads the calling thread's flag.
    let no_new_privs = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    if err.raw_os_error() == Some(libc::EACCES) && no_new_privs == 0 {
        return Err(SeccompError::NeedsNoNewPrivs);
    }
    Err(SeccompError::Install(err))
}

/// Whether installing a filter in `process` would fail for want of `no_new_privs`: the spec
/// does not set `noNewPrivileges` and its effective set lacks `CAP_SYS_ADMIN` (by the time the
/// executor runs, libcontainer has already reduced the capabilities to the spec's). The policy
/// step either turns `noNewPrivileges` on or refuses the spec.
pub fn requires_no_new_privs(process: &Process) -> bool {
    if process.no_new_privileges() == Some(true) {
        return false;
    }
    let has_sys_admin = process
        .capabilities()
        .as_ref()
        .and_then(|caps| caps.effective().as_ref())
        .is_some_and(|effective| effective.contains(&Capability::SysAdmin));
    !has_sys_admin
}

/// The syscalls (by number) one action applies to, with their rules; an empty list of rules
/// means unconditional.
type Segment = (SeccompAction, BTreeMap<u32, Vec<SeccompRule>>);

/// A syscall's entries with one action, consecutive in the profile.
struct Run {
    action: SeccompAction,
    /// `None`: unconditional.
    rules: Option<Vec<SeccompRule>>,
}

fn place(index: usize, names: &[String]) -> String {
    match names {
        [] => format!("syscalls[{index}]"),
        [one] => format!("syscall {one:?}"),
        [first, ..] => format!("syscalls[{index}] ({first:?}, ...)"),
    }
}

fn action(
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    place: impl Fn() -> String,
) -> Result<SeccompAction> {
    use LinuxSeccompAction as A;
    Ok(match action {
        A::ScmpActAllow => SeccompAction::Allow,
        A::ScmpActErrno => {
            let errno = errno_ret.unwrap_or(libc::EPERM as u32);
            if errno > MAX_ERRNO {
                return Err(SeccompError::ErrnoOutOfRange {
                    place: place(),
                    errno,
                });
            }
            SeccompAction::Errno(errno)
        }
        A::ScmpActKill | A::ScmpActKillThread => SeccompAction::KillThread,
        A::ScmpActKillProcess => SeccompAction::KillProcess,
        A::ScmpActTrap => SeccompAction::Trap,
        A::ScmpActLog => SeccompAction::Log,
        A::ScmpActTrace => {
            return Err(SeccompError::UnsupportedAction {
                place: place(),
                action,
                reason: "paddock attaches no tracer",
            })
        }
        A::ScmpActNotify => {
            return Err(SeccompError::UnsupportedAction {
                place: place(),
                action,
                reason: "paddock runs no seccomp agent",
            })
        }
    })
}

/// The entry's conditions as seccompiler rules (ORed); `None` when it has none.
fn rules(args: &[LinuxSeccompArg], place: impl Fn() -> String) -> Result<Option<Vec<SeccompRule>>> {
    if args.is_empty() {
        return Ok(None);
    }
    let conditions = args
        .iter()
        .map(|arg| condition(arg, &place))
        .collect::<Result<Vec<_>>>()?;
    let repeated_index = args
        .iter()
        .enumerate()
        .any(|(i, a)| args.iter().skip(i + 1).any(|b| b.index() == a.index()));
    let grouped = if repeated_index {
        conditions.into_iter().map(|c| vec![c]).collect()
    } else {
        vec![conditions]
    };
    grouped
        .into_iter()
        .map(|conditions| SeccompRule::new(conditions).map_err(compile_error))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn condition(arg: &LinuxSeccompArg, place: &impl Fn() -> String) -> Result<SeccompCondition> {
    use LinuxSeccompOperator as Op;
    let index = u8::try_from(arg.index())
        .ok()
        .filter(|index| *index <= 5)
        .ok_or_else(|| SeccompError::ArgumentIndex {
            place: place(),
            index: arg.index(),
        })?;
    let (op, value) = match arg.op() {
        Op::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        Op::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        Op::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
        Op::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
        Op::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
        Op::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
        Op::ScmpCmpMaskedEq => {
            let (mask, value) = (arg.value(), arg.value_two().unwrap_or(0));
            // seccompiler compares against `value & mask`; libseccomp never matches then.
            if value & !mask != 0 {
                return Err(SeccompError::MaskedValue {
                    place: place(),
                    mask,
                    value,
                });
            }
            (SeccompCmpOp::MaskedEq(mask), value)
        }
    };
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(compile_error)
}

fn compile_error(err: impl std::fmt::Display) -> SeccompError {
    SeccompError::Compile(err.to_string())
}

/// seccompiler's architecture check, which starts every program it emits.
fn arch_check(arch: TargetArch) -> Result<BpfProgram> {
    let empty = SeccompFilter::new(BTreeMap::new(), FALL_THROUGH, SeccompAction::Allow, arch)
        .map_err(compile_error)?;
    let mut program = BpfProgram::try_from(empty).map_err(compile_error)?;
    // An empty filter is the check followed by the mismatch return.
    if program.pop() != Some(stmt(RET_K, u32::from(FALL_THROUGH))) {
        return Err(compile_error("unexpected seccompiler output"));
    }
    Ok(program)
}

/// Appends the rules of one action group, which return `action` when they match and otherwise
/// continue with the next instruction after the group.
fn append_segment(
    program: &mut BpfProgram,
    arch_check: &[sock_filter],
    rules: BTreeMap<u32, Vec<SeccompRule>>,
    action: SeccompAction,
    arch: TargetArch,
) -> Result<()> {
    let mut unconditional = Vec::new();
    let mut conditional = BTreeMap::new();
    for (nr, rules) in rules {
        if rules.is_empty() {
            unconditional.push(nr);
        } else {
            conditional.insert(i64::from(nr), rules);
        }
    }
    append_numbers(program, &unconditional, &action)?;
    if conditional.is_empty() {
        return Ok(());
    }
    // seccompiler's program without its architecture check, its "no rule matched" returns
    // turned into jumps past the end.
    let filter =
        SeccompFilter::new(conditional, FALL_THROUGH, action, arch).map_err(compile_error)?;
    let segment = BpfProgram::try_from(filter).map_err(|err| match err {
        seccompiler::BackendError::FilterTooLarge(len) => SeccompError::TooLarge(len),
        err => compile_error(err),
    })?;
    let fall_through = stmt(RET_K, u32::from(FALL_THROUGH));
    let body = match segment.strip_prefix(arch_check) {
        Some([body @ .., last]) if *last == fall_through => body,
        _ => return Err(compile_error("unexpected seccompiler output")),
    };
    for (i, insn) in body.iter().enumerate() {
        program.push(if *insn == fall_through {
            stmt(JMP_JA, offset(body.len() - i - 1)?)
        } else {
            insn.clone()
        });
    }
    Ok(())
}

/// How many ranges of syscall numbers one block checks: two instructions each at most, so
/// that every check reaches the block's return with BPF's 8-bit conditional jump.
const RANGES_PER_BLOCK: usize = 100;

/// `RET action` for the syscall numbers in `numbers` (ascending, distinct), checked as ranges
/// of consecutive numbers: an allow-list of 300 syscalls is some 70 ranges. (seccompiler
/// spends five instructions on each syscall, and the kernel's cost of installing a filter
/// grows with its length.)
fn append_numbers(program: &mut BpfProgram, numbers: &[u32], action: &SeccompAction) -> Result<()> {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &nr in numbers {
        match ranges.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(nr) => *hi = nr,
            _ => ranges.push((nr, nr)),
        }
    }
    if ranges.is_empty() {
        return Ok(());
    }
    program.push(stmt(LD_W_ABS, NR_OFFSET));
    for block in ranges.chunks(RANGES_PER_BLOCK) {
        // The block: its checks, `JA 1` (no match: skip the return), `RET action`.
        let checks: usize = block
            .iter()
            .map(|(lo, hi)| if lo == hi { 1 } else { 2 })
            .sum();
        let mut at = 0;
        for &(lo, hi) in block {
            // From the check at `at`, the return is `checks - at` instructions ahead.
            let to_return = u8::try_from(checks - at).map_err(compile_error)?;
            if lo == hi {
                program.push(jump(JMP_JEQ_K, lo, to_return, 0));
                at += 1;
            } else {
                program.push(jump(JMP_JGE_K, lo, 0, 1));
                program.push(jump(JMP_JGT_K, hi, 0, to_return - 1));
                at += 2;
            }
        }
        program.push(stmt(JMP_JA, 1));
        program.push(stmt(RET_K, u32::from(action.clone())));
    }
    Ok(())
}

fn offset(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(compile_error)
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

#[cfg(test)]
mod tests;
