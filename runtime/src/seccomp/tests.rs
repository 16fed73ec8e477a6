#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use oci_spec::runtime::{Capability, LinuxSeccomp};
use seccompiler::{sock_filter, TargetArch};

use super::*;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL_THREAD: u32 = libc::SECCOMP_RET_KILL_THREAD;
const KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const TRAP: u32 = libc::SECCOMP_RET_TRAP;
const LOG: u32 = libc::SECCOMP_RET_LOG;

const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

const EPERM: u32 = errno(libc::EPERM);
const ENOSYS: u32 = errno(libc::ENOSYS);

fn audit(arch: TargetArch) -> u32 {
    match arch {
        TargetArch::x86_64 => AUDIT_ARCH_X86_64,
        TargetArch::aarch64 => AUDIT_ARCH_AARCH64,
        TargetArch::riscv64 => unreachable!(),
    }
}

fn nr(name: &str, arch: TargetArch) -> u32 {
    syscall_number(name, arch).unwrap_or_else(|| panic!("{name} not in the {arch:?} table"))
}

/// Runs a classic BPF seccomp program the way the kernel does, on a little-endian
/// `struct seccomp_data`.
fn eval(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |offset: u32| -> u32 {
        match offset {
            0 => nr,
            4 => arch,
            16..=63 => {
                let arg = args[(offset as usize - 16) / 8];
                if offset % 8 == 0 {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            _ => panic!("load from offset {offset}"),
        }
    };
    let (mut a, mut pc) = (0_u32, 0_usize);
    loop {
        let insn = &program[pc];
        pc += 1;
        match insn.code {
            0x20 => a = word(insn.k),
            0x54 => a &= insn.k,
            0x05 => pc += insn.k as usize,
            0x15 | 0x25 | 0x35 | 0x45 => {
                let taken = match insn.code {
                    0x15 => a == insn.k,
                    0x25 => a > insn.k,
                    0x35 => a >= insn.k,
                    _ => a & insn.k != 0,
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            0x06 => return insn.k,
            code => panic!("opcode {code:#x}"),
        }
    }
}

/// The checks the kernel makes before it accepts a filter (sk_chk_filter, seccomp_check_filter).
fn assert_kernel_accepts(program: &[sock_filter]) {
    assert!(
        !program.is_empty() && program.len() <= 4096,
        "{}",
        program.len()
    );
    for (pc, insn) in program.iter().enumerate() {
        let targets: Vec<usize> = match insn.code {
            0x20 => {
                assert!(insn.k < 64 && insn.k % 4 == 0, "load at {pc}");
                vec![pc + 1]
            }
            0x54 => vec![pc + 1],
            0x05 => vec![pc + 1 + insn.k as usize],
            0x15 | 0x25 | 0x35 | 0x45 => {
                vec![pc + 1 + usize::from(insn.jt), pc + 1 + usize::from(insn.jf)]
            }
            0x06 => vec![],
            code => panic!("opcode {code:#x} at {pc}"),
        };
        for target in targets {
            assert!(target < program.len(), "jump out of the program at {pc}");
        }
    }
    assert_eq!(program.last().map(|insn| insn.code), Some(0x06));
}

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap()
}

fn run(json: &str, arch: TargetArch, name: &str, args: [u64; 6]) -> u32 {
    let program = compile(&profile(json), arch).unwrap();
    assert_kernel_accepts(&program);
    eval(&program, audit(arch), nr(name, arch), args)
}

const NO_ARGS: [u64; 6] = [0; 6];
const ARCHES: [TargetArch; 2] = [TargetArch::x86_64, TargetArch::aarch64];

#[test]
fn tables_spot_checks() {
    use TargetArch::{aarch64, x86_64};
    assert_eq!(syscall_number("mount", x86_64), Some(165));
    assert_eq!(syscall_number("mount", aarch64), Some(40));
    assert_eq!(syscall_number("unshare", x86_64), Some(272));
    assert_eq!(syscall_number("unshare", aarch64), Some(97));
    assert_eq!(syscall_number("read", x86_64), Some(0));
    assert_eq!(syscall_number("io_setup", aarch64), Some(0));
    assert_eq!(syscall_number("clone3", x86_64), Some(435));
    assert_eq!(syscall_number("clone3", aarch64), Some(435));
    assert_eq!(syscall_number("create_module", x86_64), Some(174));
    assert_eq!(syscall_number("nfsservctl", aarch64), Some(42));
    assert_eq!(syscall_number("open", aarch64), None);
    assert_eq!(syscall_number("arch_prctl", aarch64), None);
    assert_eq!(syscall_number("mount", TargetArch::riscv64), None);
}

#[test]
fn tables_are_sorted_and_numbers_unique() {
    for table in [syscall_table::X86_64, syscall_table::AARCH64] {
        assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
        let numbers: HashSet<u32> = table.iter().map(|(_, nr)| *nr).collect();
        assert_eq!(numbers.len(), table.len());
    }
    let other = syscall_table::OTHER_ARCHES;
    assert!(other.windows(2).all(|w| w[0] < w[1]));
    for name in other {
        assert_eq!(syscall_number(name, TargetArch::x86_64), None, "{name}");
        assert_eq!(syscall_number(name, TargetArch::aarch64), None, "{name}");
    }
}

/// The table of the architecture this test runs on agrees with the C library's numbers.
#[test]
fn table_matches_libc_for_this_target() {
    let arch = native_arch().unwrap();
    let known: &[(&str, libc::c_long)] = &[
        ("read", libc::SYS_read),
        ("write", libc::SYS_write),
        ("openat", libc::SYS_openat),
        ("clone", libc::SYS_clone),
        ("clone3", libc::SYS_clone3),
        ("execve", libc::SYS_execve),
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        ("keyctl", libc::SYS_keyctl),
        ("bpf", libc::SYS_bpf),
        ("ptrace", libc::SYS_ptrace),
        ("personality", libc::SYS_personality),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("futex_waitv", libc::SYS_futex_waitv),
        ("mseal", libc::SYS_mseal),
    ];
    for (name, number) in known {
        assert_eq!(
            syscall_number(name, arch).map(i64::from),
            Some(*number),
            "{name}"
        );
    }
}

#[test]
fn each_action() {
    let cases = [
        (r#""SCMP_ACT_ALLOW""#, ALLOW),
        (r#""SCMP_ACT_ERRNO""#, EPERM),
        (r#""SCMP_ACT_ERRNO", "errnoRet": 13"#, errno(13)),
        (r#""SCMP_ACT_ERRNO", "errnoRet": 0"#, errno(0)),
        (r#""SCMP_ACT_KILL""#, KILL_THREAD),
        (r#""SCMP_ACT_KILL_THREAD""#, KILL_THREAD),
        (r#""SCMP_ACT_KILL_PROCESS""#, KILL_PROCESS),
        (r#""SCMP_ACT_TRAP""#, TRAP),
        (r#""SCMP_ACT_LOG""#, LOG),
    ];
    for arch in ARCHES {
        for (action, expected) in cases {
            for default in ["SCMP_ACT_ALLOW", "SCMP_ACT_KILL_PROCESS"] {
                let json = format!(
                    r#"{{"defaultAction": "{default}",
                        "syscalls": [{{"names": ["mount"], "action": {action}}}]}}"#
                );
                let matched = run(&json, arch, "mount", NO_ARGS);
                assert_eq!(matched, expected, "{action} over {default} on {arch:?}");
                let other = run(&json, arch, "getpid", NO_ARGS);
                let default_ret = if default == "SCMP_ACT_ALLOW" {
                    ALLOW
                } else {
                    KILL_PROCESS
                };
                assert_eq!(other, default_ret);
            }
        }
    }
}

#[test]
fn default_action_and_its_errno() {
    for arch in ARCHES {
        let json = r#"{"defaultAction": "SCMP_ACT_ERRNO",
                       "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}"#;
        assert_eq!(run(json, arch, "mount", NO_ARGS), EPERM);
        assert_eq!(run(json, arch, "getpid", NO_ARGS), ALLOW);
        let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38}"#;
        assert_eq!(run(json, arch, "mount", NO_ARGS), ENOSYS);
        let json = r#"{"defaultAction": "SCMP_ACT_TRAP"}"#;
        assert_eq!(run(json, arch, "mount", NO_ARGS), TRAP);
    }
}

#[test]
fn argument_conditions() {
    let json = |op: &str, value: u64, value_two: u64| {
        format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{{"names": ["personality"],
                 "action": "SCMP_ACT_ERRNO",
                 "args": [{{"index": 0, "value": {value}, "valueTwo": {value_two},
                            "op": "{op}"}}]}}]}}"#
        )
    };
    let with = |arg0: u64| [arg0, 0, 0, 0, 0, 0];
    type Case = (&'static str, u64, u64, &'static [(u64, bool)]);
    let cases: &[Case] = &[
        (
            "SCMP_CMP_EQ",
            8,
            0,
            &[(8, true), (9, false), (8 | 1 << 32, false)],
        ),
        (
            "SCMP_CMP_NE",
            8,
            0,
            &[(8, false), (7, true), (8 | 1 << 32, true)],
        ),
        (
            "SCMP_CMP_LT",
            8,
            0,
            &[(7, true), (8, false), (1 << 40, false)],
        ),
        ("SCMP_CMP_LE", 8, 0, &[(8, true), (9, false), (0, true)]),
        (
            "SCMP_CMP_GT",
            8,
            0,
            &[(9, true), (8, false), (1 << 40, true)],
        ),
        (
            "SCMP_CMP_GE",
            8,
            0,
            &[(8, true), (7, false), (u64::MAX, true)],
        ),
        (
            "SCMP_CMP_MASKED_EQ",
            0x10_0000_00f0,
            0x10_0000_0030,
            &[
                (0x10_0000_0030, true),
                (0x10_0000_ff3f, true),
                (0x0000_0000_0030, false),
                (0x10_0000_0070, false),
            ],
        ),
    ];
    for arch in ARCHES {
        for (op, value, value_two, probes) in cases {
            let json = json(op, *value, *value_two);
            for (arg, refused) in *probes {
                let ret = run(&json, arch, "personality", with(*arg));
                let expected = if *refused { EPERM } else { ALLOW };
                assert_eq!(ret, expected, "{op} {value:#x} on {arg:#x} ({arch:?})");
            }
        }
    }
}

#[test]
fn conditions_on_different_arguments_are_anded_on_one_argument_ored() {
    let anded = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
        "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                 {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}]}"#;
    let ored = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
        "action": "SCMP_ACT_ERRNO",
        "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
                 {"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]}]}"#;
    for arch in ARCHES {
        assert_eq!(run(anded, arch, "kill", [1, 9, 0, 0, 0, 0]), EPERM);
        assert_eq!(run(anded, arch, "kill", [1, 15, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(anded, arch, "kill", [2, 9, 0, 0, 0, 0]), ALLOW);
        assert_eq!(run(ored, arch, "kill", [1, 9, 0, 0, 0, 0]), EPERM);
        assert_eq!(run(ored, arch, "kill", [1, 15, 0, 0, 0, 0]), EPERM);
        assert_eq!(run(ored, arch, "kill", [1, 2, 0, 0, 0, 0]), ALLOW);
    }
}

#[test]
fn first_matching_entry_decides() {
    // The personality pattern: allowed values first, then everything else refused.
    let json = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22},
        {"names": ["personality"], "action": "SCMP_ACT_KILL"},
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 3, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["mount", "umount2"], "action": "SCMP_ACT_TRAP"}]}"#;
    for arch in ARCHES {
        assert_eq!(run(json, arch, "personality", [8, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(
            run(json, arch, "personality", [9, 0, 0, 0, 0, 0]),
            errno(22)
        );
        assert_eq!(run(json, arch, "mount", [0, 0, 0, 1, 0, 0]), EPERM);
        assert_eq!(run(json, arch, "mount", [0, 0, 0, 2, 0, 0]), TRAP);
        assert_eq!(run(json, arch, "umount2", NO_ARGS), TRAP);
        assert_eq!(run(json, arch, "getpid", NO_ARGS), ALLOW);
    }
}

#[test]
fn names_of_other_architectures_are_skipped() {
    // arch_prctl exists on x86_64 only, _llseek and socketcall on neither.
    let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["arch_prctl", "_llseek", "socketcall", "getpid"],
         "action": "SCMP_ACT_ALLOW"}]}"#;
    assert_eq!(run(json, TargetArch::x86_64, "arch_prctl", NO_ARGS), ALLOW);
    for arch in ARCHES {
        assert_eq!(run(json, arch, "getpid", NO_ARGS), ALLOW);
    }
    let json = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["open"], "action": "SCMP_ACT_KILL_PROCESS"}]}"#;
    let aarch64 = compile(&profile(json), TargetArch::aarch64).unwrap();
    let x86_64 = compile(&profile(json), TargetArch::x86_64).unwrap();
    assert!(aarch64.len() < x86_64.len());
}

#[test]
fn unknown_syscall_is_an_error_naming_it() {
    let json = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getpid", "foo"], "action": "SCMP_ACT_ERRNO"}]}"#;
    let err = compile(&profile(json), TargetArch::x86_64).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"linux.seccomp: unknown syscall "foo" for x86_64"#
    );
    let err = compile(&profile(json), TargetArch::aarch64).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"linux.seccomp: unknown syscall "foo" for aarch64"#
    );
}

#[test]
fn unknown_action_operator_or_flag_fails_to_parse_naming_it() {
    for (json, word) in [
        (r#"{"defaultAction": "SCMP_ACT_FOO"}"#, "SCMP_ACT_FOO"),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"],
                "action": "SCMP_ACT_BAR"}]}"#,
            "SCMP_ACT_BAR",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"],
                "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ALMOST"}]}]}"#,
            "SCMP_CMP_ALMOST",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]}"#,
            "SECCOMP_FILTER_FLAG_X",
        ),
    ] {
        let err = serde_json::from_str::<LinuxSeccomp>(json).unwrap_err();
        assert!(err.to_string().contains(word), "{err}");
    }
}

#[test]
fn trace_and_notify_are_refused() {
    for action in ["SCMP_ACT_TRACE", "SCMP_ACT_NOTIFY"] {
        let json = format!(
            r#"{{"defaultAction": "SCMP_ACT_ALLOW",
                 "syscalls": [{{"names": ["mount"], "action": "{action}"}}]}}"#
        );
        let err = compile(&profile(&json), TargetArch::x86_64).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(r#"linux.seccomp: syscall "mount": action "#));
        assert!(message.contains(action) && message.contains("not supported"));
        let json = format!(r#"{{"defaultAction": "{action}"}}"#);
        let err = compile(&profile(&json), TargetArch::x86_64).unwrap_err();
        assert!(err.to_string().contains("defaultAction"), "{err}");
    }
}

#[test]
fn bad_values_are_errors() {
    let cases = [
        (
            r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}"#,
            "linux.seccomp: defaultAction: errnoRet 4096 is out of range (0 to 4095)",
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount", "umount2"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1,
                "op": "SCMP_CMP_EQ"}]}]}"#,
            r#"linux.seccomp: syscalls[0] ("mount", ...): argument index 6 is out of range (0 to 5)"#,
        ),
        (
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mount"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1,
                "valueTwo": 3, "op": "SCMP_CMP_MASKED_EQ"}]}]}"#,
            "linux.seccomp: syscall \"mount\": SCMP_CMP_MASKED_EQ valueTwo 0x3 has bits \
             outside the mask 0x1 and can never match",
        ),
    ];
    for (json, message) in cases {
        let err = compile(&profile(json), TargetArch::x86_64).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
    let err = compile(&default_profile(), TargetArch::riscv64).unwrap_err();
    assert!(matches!(err, SeccompError::UnsupportedArch(_)), "{err}");
}

#[test]
fn other_abis_are_killed() {
    let json = r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#;
    for arch in ARCHES {
        let program = compile(&profile(json), arch).unwrap();
        assert_eq!(eval(&program, AUDIT_ARCH_I386, 20, NO_ARGS), KILL_PROCESS);
        assert_eq!(eval(&program, audit(arch), 20, NO_ARGS), ALLOW);
    }
    let program = compile(&profile(json), TargetArch::x86_64).unwrap();
    // x32 getpid, and -1 (not a syscall, not x32 either).
    assert_eq!(
        eval(&program, AUDIT_ARCH_X86_64, 0x4000_0000 | 39, NO_ARGS),
        KILL_PROCESS
    );
    assert_eq!(eval(&program, AUDIT_ARCH_X86_64, u32::MAX, NO_ARGS), ALLOW);
}

#[test]
fn syscalls_newer_than_the_table_answer_enosys_when_the_default_refuses() {
    let newest = syscall_table::X86_64
        .iter()
        .map(|(_, nr)| *nr)
        .max()
        .unwrap();
    for (default, expected) in [
        ("SCMP_ACT_ERRNO", ENOSYS),
        ("SCMP_ACT_KILL_PROCESS", ENOSYS),
        ("SCMP_ACT_ALLOW", ALLOW),
        ("SCMP_ACT_LOG", LOG),
    ] {
        let json = format!(r#"{{"defaultAction": "{default}"}}"#);
        let program = compile(&profile(&json), TargetArch::x86_64).unwrap();
        assert_eq!(
            eval(&program, AUDIT_ARCH_X86_64, newest + 1, NO_ARGS),
            expected
        );
        assert_eq!(
            eval(&program, AUDIT_ARCH_X86_64, u32::MAX, NO_ARGS),
            expected
        );
    }
}

#[test]
fn entries_ending_with_the_default_action_are_dropped() {
    let json = r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["mount"], "action": "SCMP_ACT_ERRNO"}]}"#;
    let bare = compile(
        &profile(r#"{"defaultAction": "SCMP_ACT_ERRNO"}"#),
        TargetArch::x86_64,
    );
    assert_eq!(
        compile(&profile(json), TargetArch::x86_64).unwrap(),
        bare.unwrap()
    );
}

/// An independent reading of a profile (first matching entry decides, runc's argument rules),
/// to compare the compiled program with on every syscall number.
fn reference(profile: &LinuxSeccomp, arch: TargetArch, nr: u32, args: [u64; 6]) -> u32 {
    use oci_spec::runtime::{LinuxSeccompAction as A, LinuxSeccompOperator as Op};
    let value = |action: A, errno_ret: Option<u32>| match action {
        A::ScmpActAllow => ALLOW,
        A::ScmpActErrno => libc::SECCOMP_RET_ERRNO | errno_ret.unwrap_or(1),
        A::ScmpActKill | A::ScmpActKillThread => KILL_THREAD,
        A::ScmpActKillProcess => KILL_PROCESS,
        A::ScmpActTrap => TRAP,
        A::ScmpActLog => LOG,
        A::ScmpActTrace | A::ScmpActNotify => unreachable!(),
    };
    if arch == TargetArch::x86_64 && nr >= 0x4000_0000 && nr != u32::MAX {
        return KILL_PROCESS;
    }
    let default = value(profile.default_action(), profile.default_errno_ret());
    let table = match arch {
        TargetArch::x86_64 => syscall_table::X86_64,
        _ => syscall_table::AARCH64,
    };
    let newest = table.iter().map(|(_, nr)| *nr).max().unwrap();
    if nr > newest && default != ALLOW && default != LOG {
        return ENOSYS;
    }
    for entry in profile.syscalls().iter().flatten() {
        if !entry
            .names()
            .iter()
            .any(|n| syscall_number(n, arch) == Some(nr))
        {
            continue;
        }
        let conds = entry.args().clone().unwrap_or_default();
        let holds = |c: &LinuxSeccompArg| {
            let (v, x) = (args[c.index()], c.value());
            match c.op() {
                Op::ScmpCmpEq => v == x,
                Op::ScmpCmpNe => v != x,
                Op::ScmpCmpLt => v < x,
                Op::ScmpCmpLe => v <= x,
                Op::ScmpCmpGt => v > x,
                Op::ScmpCmpGe => v >= x,
                Op::ScmpCmpMaskedEq => v & x == c.value_two().unwrap_or(0),
            }
        };
        let repeated = conds
            .iter()
            .any(|a| conds.iter().filter(|b| b.index() == a.index()).count() > 1);
        let matched = if repeated {
            conds.iter().any(holds)
        } else {
            conds.iter().all(holds)
        };
        if matched {
            return value(entry.action(), entry.errno_ret());
        }
    }
    default
}

#[test]
fn compiled_programs_agree_with_the_reference_on_every_syscall() {
    let everything: HashSet<Capability> = [
        Capability::SysAdmin,
        Capability::SysPtrace,
        Capability::SysBoot,
        Capability::SysTime,
        Capability::Bpf,
    ]
    .into();
    let mixed = profile(
        r#"{"defaultAction": "SCMP_ACT_KILL_PROCESS", "defaultErrnoRet": 5, "syscalls": [
        {"names": ["read", "write", "close", "exit_group", "futex", "mmap", "brk"],
         "action": "SCMP_ACT_ALLOW"},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3,
         "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 19, "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_LOG",
         "args": [{"index": 0, "value": 100, "op": "SCMP_CMP_GT"},
                  {"index": 1, "value": 15, "op": "SCMP_CMP_LE"}]},
        {"names": ["kill", "tkill"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["openat", "open"], "action": "SCMP_ACT_TRAP",
         "args": [{"index": 2, "value": 3, "valueTwo": 1, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["openat", "open"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["mount"], "action": "SCMP_ACT_KILL"},
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
        {"names": ["gettid"], "action": "SCMP_ACT_KILL_PROCESS"}]}"#,
    );
    let profiles = [default_profile(), default_profile_for(&everything), mixed];
    let arg_values: [u64; 12] = [
        0,
        1,
        8,
        9,
        15,
        101,
        libc::AF_ALG as u64,
        libc::AF_VSOCK as u64,
        (libc::AF_ALG as u64) | 1 << 32,
        0x2_0008,
        0xffff_ffff,
        (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64,
    ];
    for arch in ARCHES {
        for profile in &profiles {
            let program = compile(profile, arch).unwrap();
            assert_kernel_accepts(&program);
            let numbers = (0..=600).chain([0x4000_0027, u32::MAX]);
            for nr in numbers {
                for (i, a) in arg_values.into_iter().enumerate() {
                    let args = [a, [0, 9, 15, 19][i % 4], a, 0, 0, 0];
                    assert_eq!(
                        eval(&program, audit(arch), nr, args),
                        reference(profile, arch, nr, args),
                        "nr {nr} args {args:x?} on {arch:?}"
                    );
                }
            }
        }
    }
}

/// Hundreds of isolated numbers: several blocks of range checks, each jump within reach.
#[test]
fn long_allow_lists_compile_to_blocks_that_agree_with_the_reference() {
    for arch in ARCHES {
        let table = match arch {
            TargetArch::x86_64 => syscall_table::X86_64,
            _ => syscall_table::AARCH64,
        };
        let even: Vec<String> = table
            .iter()
            .filter(|(_, nr)| nr % 2 == 0)
            .map(|(name, _)| name.to_string())
            .collect();
        let json = serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": even, "action": "SCMP_ACT_ALLOW"}],
        });
        let profile: LinuxSeccomp = serde_json::from_value(json).unwrap();
        let program = compile(&profile, arch).unwrap();
        assert_kernel_accepts(&program);
        for nr in 0..=600 {
            assert_eq!(
                eval(&program, audit(arch), nr, NO_ARGS),
                reference(&profile, arch, nr, NO_ARGS),
                "{nr} on {arch:?}"
            );
        }
    }
}

/// What the default profile answers, for both architectures, as the kernel would evaluate it.
#[test]
fn default_profile_decisions() {
    const CLONE_THREAD_FLAGS: u64 = (libc::CLONE_VM
        | libc::CLONE_FS
        | libc::CLONE_FILES
        | libc::CLONE_SIGHAND
        | libc::CLONE_THREAD
        | libc::CLONE_SYSVSEM
        | libc::CLONE_SETTLS
        | libc::CLONE_PARENT_SETTID
        | libc::CLONE_CHILD_CLEARTID) as u64;
    let refused = [
        "mount",
        "umount2",
        "pivot_root",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "setns",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "open_by_handle_at",
        "userfaultfd",
        "lookup_dcookie",
        "quotactl",
        "quotactl_fd",
        "nfsservctl",
        "settimeofday",
        "clock_settime",
        "syslog",
        "vhangup",
        "mbind",
        "move_pages",
        "set_mempolicy",
        "get_mempolicy",
        "migrate_pages",
        "fsopen",
        "fsmount",
        "fsconfig",
        "fspick",
        "move_mount",
        "open_tree",
        "open_tree_attr",
        "mount_setattr",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "chroot",
        "sethostname",
        "setdomainname",
        "fanotify_init",
        "listns",
    ];
    let x86_only_refused = [
        "iopl",
        "ioperm",
        "create_module",
        "get_kernel_syms",
        "query_module",
        "uselib",
        "_sysctl",
        "sysfs",
        "ustat",
    ];
    let allowed = [
        "read",
        "write",
        "getpid",
        "execve",
        "futex",
        "mmap",
        "rt_sigreturn",
        "exit_group",
        "wait4",
        "ptrace",
        "process_vm_readv",
        "name_to_handle_at",
        "adjtimex",
        "seccomp",
        "prctl",
    ];
    let program_for = |arch| {
        let program = compile(&default_profile(), arch).unwrap();
        assert_kernel_accepts(&program);
        program
    };
    for arch in ARCHES {
        let program = program_for(arch);
        let ask = |name: &str, args: [u64; 6]| eval(&program, audit(arch), nr(name, arch), args);
        for name in refused {
            assert_eq!(ask(name, NO_ARGS), EPERM, "{name} on {arch:?}");
        }
        for name in allowed {
            assert_eq!(ask(name, NO_ARGS), ALLOW, "{name} on {arch:?}");
        }
        let with = |arg0: u64| [arg0, 0, 0, 0, 0, 0];
        let sigchld = libc::SIGCHLD as u64;
        assert_eq!(ask("clone", with(CLONE_THREAD_FLAGS)), ALLOW);
        assert_eq!(ask("clone", with(sigchld)), ALLOW);
        for flag in [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_eq!(
                ask("clone", with(flag as u64 | sigchld)),
                EPERM,
                "{flag:#x}"
            );
        }
        assert_eq!(ask("clone3", NO_ARGS), ENOSYS);
        let af_alg = libc::AF_ALG as u64;
        assert_eq!(ask("socket", with(af_alg)), EPERM);
        assert_eq!(ask("socket", with(af_alg | 1 << 32)), EPERM, "high bits");
        assert_eq!(ask("socket", with(libc::AF_VSOCK as u64)), EPERM);
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            39,
            41,
        ] {
            assert_eq!(ask("socket", with(family as u64)), ALLOW, "family {family}");
        }
        for persona in [0, 8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
            assert_eq!(ask("personality", with(persona)), ALLOW, "{persona:#x}");
        }
        for persona in [0x0040_0000, 0x0004_0000, 0x0100_0000, 0x0000_0001] {
            assert_eq!(ask("personality", with(persona)), EPERM, "{persona:#x}");
        }
    }
    let program = program_for(TargetArch::x86_64);
    for name in x86_only_refused {
        let ret = eval(
            &program,
            AUDIT_ARCH_X86_64,
            nr(name, TargetArch::x86_64),
            NO_ARGS,
        );
        assert_eq!(ret, EPERM, "{name}");
    }
    let arch_prctl = nr("arch_prctl", TargetArch::x86_64);
    assert_eq!(
        eval(&program, AUDIT_ARCH_X86_64, arch_prctl, NO_ARGS),
        ALLOW
    );
}

#[test]
fn capabilities_give_back_what_they_guard() {
    let caps: HashSet<Capability> = [Capability::SysAdmin, Capability::SysPtrace].into();
    for arch in ARCHES {
        let program = compile(&default_profile_for(&caps), arch).unwrap();
        assert_kernel_accepts(&program);
        let ask = |name: &str, arg0: u64| {
            eval(&program, audit(arch), nr(name, arch), [arg0, 0, 0, 0, 0, 0])
        };
        assert_eq!(ask("mount", 0), ALLOW);
        assert_eq!(ask("unshare", libc::CLONE_NEWUSER as u64), ALLOW);
        assert_eq!(ask("clone", libc::CLONE_NEWUSER as u64), ALLOW);
        assert_eq!(ask("clone3", 0), ALLOW);
        assert_eq!(ask("kcmp", 0), ALLOW);
        assert_eq!(ask("reboot", 0), EPERM);
        assert_eq!(ask("init_module", 0), EPERM);
    }
}

#[test]
fn default_profile_names_only_known_syscalls() {
    for syscall in default_profile().syscalls().iter().flatten() {
        for name in syscall.names() {
            let known = syscall_number(name, TargetArch::x86_64).is_some()
                || syscall_number(name, TargetArch::aarch64).is_some();
            assert!(known, "{name}");
        }
    }
    // Every conditional line of the table came through with its condition.
    let conditional = default_profile()
        .syscalls()
        .iter()
        .flatten()
        .filter(|s| s.args().is_some())
        .count();
    assert_eq!(conditional, 8);
}

#[test]
fn requires_no_new_privs_unless_set_or_sys_admin() {
    let process = |json: &str| -> Process { serde_json::from_str(json).unwrap() };
    let base = r#""cwd": "/", "user": {"uid": 0, "gid": 0}"#;
    assert!(requires_no_new_privs(&process(&format!("{{{base}}}"))));
    assert!(!requires_no_new_privs(&process(&format!(
        r#"{{{base}, "noNewPrivileges": true}}"#
    ))));
    assert!(!requires_no_new_privs(&process(&format!(
        r#"{{{base}, "capabilities": {{"effective": ["CAP_SYS_ADMIN"]}}}}"#
    ))));
    assert!(requires_no_new_privs(&process(&format!(
        r#"{{{base}, "capabilities": {{"bounding": ["CAP_SYS_ADMIN"]}}}}"#
    ))));
}

// Against the real kernel: a helper process (this test binary, re-executed) installs the
// filter between fork and exec, as the executor does, then makes each call and prints the
// errno it got.

const PROBE_ENV: &str = "PADDOCK_SECCOMP_PROBE";

struct Probe {
    name: &'static str,
    /// The errno under the default profile; 0 for success.
    expected: i32,
    /// Harmless without a filter too, even as root (bogus arguments): run in the control run.
    control: bool,
    call: fn() -> i64,
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `syscall(2)` with up to six arguments; returns -1 and sets errno on failure.
fn sys(nr: libc::c_long, args: [u64; 6]) -> i64 {
    // SAFETY: each probe passes arguments the kernel validates (null or dangling pointers
    // yield EFAULT, nothing here is written through by the kernel on success).
    unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) }
}

/// For calls that may create a process: the child leaves at once.
fn reap_if_forked(ret: i64) -> i64 {
    if ret == 0 {
        // SAFETY: in the child of a raw clone; _exit runs no Rust code.
        unsafe { libc::_exit(0) };
    }
    if ret > 0 {
        let mut status = 0;
        // SAFETY: waits for the child created just above.
        unsafe { libc::waitpid(ret as libc::pid_t, &mut status, libc::__WALL) };
        return 0;
    }
    ret
}

const NOWHERE: &std::ffi::CStr = c"/nonexistent-paddock-seccomp";

fn nowhere() -> u64 {
    NOWHERE.as_ptr() as u64
}

fn probes() -> Vec<Probe> {
    use libc::*;
    let eperm = libc::EPERM;
    let p = |name: &'static str, expected: i32, control: bool, call: fn() -> i64| Probe {
        name,
        expected,
        control,
        call,
    };
    #[allow(unused_mut)]
    let mut probes = vec![
        p("mount", eperm, true, || {
            sys(
                SYS_mount,
                [nowhere(), nowhere(), c"tmpfs".as_ptr() as u64, 0, 0, 0],
            )
        }),
        p("umount2", eperm, true, || {
            sys(SYS_umount2, [nowhere(), 0, 0, 0, 0, 0])
        }),
        p("pivot_root", eperm, true, || {
            sys(SYS_pivot_root, [nowhere(), nowhere(), 0, 0, 0, 0])
        }),
        p("unshare(CLONE_NEWUSER)", eperm, false, || {
            sys(SYS_unshare, [CLONE_NEWUSER as u64, 0, 0, 0, 0, 0])
        }),
        p("setns(CLONE_NEWUSER)", eperm, true, || {
            sys(SYS_setns, [u64::MAX, CLONE_NEWUSER as u64, 0, 0, 0, 0])
        }),
        p("clone(CLONE_NEWUSER)", eperm, false, || {
            let flags = (CLONE_NEWUSER | SIGCHLD) as u64;
            reap_if_forked(sys(SYS_clone, [flags, 0, 0, 0, 0, 0]))
        }),
        p("clone3(CLONE_NEWUSER)", libc::ENOSYS, false, || {
            let mut args = [0_u64; 11];
            args[0] = CLONE_NEWUSER as u64;
            args[4] = SIGCHLD as u64;
            let size = std::mem::size_of_val(&args) as u64;
            reap_if_forked(sys(SYS_clone3, [args.as_ptr() as u64, size, 0, 0, 0, 0]))
        }),
        p("keyctl", eperm, true, || {
            // KEYCTL_GET_KEYRING_ID of the session keyring: harmless.
            sys(SYS_keyctl, [0, KEY_SPEC_SESSION_KEYRING as u64, 0, 0, 0, 0])
        }),
        p("add_key", eperm, true, || sys(SYS_add_key, [0; 6])),
        p("request_key", eperm, true, || sys(SYS_request_key, [0; 6])),
        p("bpf", eperm, true, || sys(SYS_bpf, [0; 6])),
        p("perf_event_open", eperm, true, || {
            sys(SYS_perf_event_open, [0, 0, u64::MAX, u64::MAX, 0, 0])
        }),
        // A foreign architecture in the flags: refused before anything is touched.
        p("kexec_load", eperm, false, || {
            sys(SYS_kexec_load, [0, 0, 0, 0x00ff_0000, 0, 0])
        }),
        p("kexec_file_load", eperm, false, || {
            sys(
                SYS_kexec_file_load,
                [u64::MAX, u64::MAX, 0, 0, 0xffff_fff0, 0],
            )
        }),
        p("init_module", eperm, true, || sys(SYS_init_module, [0; 6])),
        p("finit_module", eperm, true, || {
            sys(
                SYS_finit_module,
                [u64::MAX, c"".as_ptr() as u64, 0, 0, 0, 0],
            )
        }),
        p("delete_module", eperm, true, || {
            let name = c"paddock_seccomp_none".as_ptr() as u64;
            sys(SYS_delete_module, [name, O_NONBLOCK as u64, 0, 0, 0, 0])
        }),
        p("reboot", eperm, false, || sys(SYS_reboot, [0; 6])),
        p("swapon", eperm, true, || {
            sys(SYS_swapon, [nowhere(), 0, 0, 0, 0, 0])
        }),
        p("swapoff", eperm, true, || {
            sys(SYS_swapoff, [nowhere(), 0, 0, 0, 0, 0])
        }),
        p("acct", eperm, true, || {
            sys(SYS_acct, [nowhere(), 0, 0, 0, 0, 0])
        }),
        p("open_by_handle_at", eperm, true, || {
            sys(SYS_open_by_handle_at, [u64::MAX, 0, 0, 0, 0, 0])
        }),
        p("userfaultfd", eperm, true, || {
            sys(SYS_userfaultfd, [0xffff, 0, 0, 0, 0, 0])
        }),
        p("lookup_dcookie", eperm, true, || {
            sys(SYS_lookup_dcookie, [0; 6])
        }),
        p("quotactl", eperm, true, || sys(SYS_quotactl, [0; 6])),
        p("fsopen", eperm, true, || sys(SYS_fsopen, [0; 6])),
        p("fsmount", eperm, true, || {
            sys(SYS_fsmount, [u64::MAX, 0, 0, 0, 0, 0])
        }),
        p("fsconfig", eperm, true, || {
            sys(SYS_fsconfig, [u64::MAX, 0, 0, 0, 0, 0])
        }),
        p("fspick", eperm, true, || {
            sys(SYS_fspick, [u64::MAX, 0, 0, 0, 0, 0])
        }),
        p("move_mount", eperm, true, || {
            sys(SYS_move_mount, [u64::MAX, 0, u64::MAX, 0, 0, 0])
        }),
        p("open_tree", eperm, true, || {
            sys(SYS_open_tree, [u64::MAX, 0, 0, 0, 0, 0])
        }),
        p("mount_setattr", eperm, true, || {
            sys(SYS_mount_setattr, [u64::MAX, 0, 0, 0, 0, 0])
        }),
        p("settimeofday", eperm, false, || {
            sys(SYS_settimeofday, [0; 6])
        }),
        p("clock_settime", eperm, true, || {
            sys(SYS_clock_settime, [CLOCK_REALTIME as u64, 0, 0, 0, 0, 0])
        }),
        // SYSLOG_ACTION_SIZE_BUFFER: a read.
        p("syslog", eperm, true, || {
            sys(SYS_syslog, [10, 0, 0, 0, 0, 0])
        }),
        p("vhangup", eperm, false, || sys(SYS_vhangup, [0; 6])),
        p("chroot", eperm, true, || {
            sys(SYS_chroot, [nowhere(), 0, 0, 0, 0, 0])
        }),
        p("mbind", eperm, false, || sys(SYS_mbind, [0; 6])),
        p("set_mempolicy", eperm, false, || {
            sys(SYS_set_mempolicy, [0; 6])
        }),
        p("kcmp", eperm, true, || sys(SYS_kcmp, [0, 0, 0xff, 0, 0, 0])),
        p("pidfd_getfd", eperm, true, || {
            sys(SYS_pidfd_getfd, [u64::MAX, 0, 0, 0, 0, 0])
        }),
        p("io_uring_setup", eperm, true, || {
            sys(SYS_io_uring_setup, [0; 6])
        }),
        p("personality(ADDR_NO_RANDOMIZE)", eperm, false, || {
            sys(SYS_personality, [ADDR_NO_RANDOMIZE as u64, 0, 0, 0, 0, 0])
        }),
        p("socket(AF_ALG)", eperm, false, || {
            sys(
                SYS_socket,
                [AF_ALG as u64, SOCK_SEQPACKET as u64, 0, 0, 0, 0],
            )
        }),
        p("socket(AF_ALG with high bits)", eperm, false, || {
            let family = AF_ALG as u64 | 1 << 32;
            sys(SYS_socket, [family, SOCK_SEQPACKET as u64, 0, 0, 0, 0])
        }),
        p("socket(AF_VSOCK)", eperm, false, || {
            sys(
                SYS_socket,
                [AF_VSOCK as u64, SOCK_STREAM as u64, 0, 0, 0, 0],
            )
        }),
        // What ordinary programs do keeps working.
        p("getpid", 0, true, || sys(SYS_getpid, [0; 6])),
        p("personality(query)", 0, true, || {
            sys(SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]).min(0)
        }),
        p("socket(AF_INET)", 0, true, || {
            let fd = sys(SYS_socket, [AF_INET as u64, SOCK_DGRAM as u64, 0, 0, 0, 0]);
            if fd >= 0 {
                // SAFETY: closes the socket just opened.
                unsafe { close(fd as c_int) };
            }
            fd.min(0)
        }),
        p("thread", 0, true, || {
            match std::thread::spawn(|| 7).join() {
                Ok(7) => 0,
                _ => -1,
            }
        }),
        p("fork", 0, true, || {
            // SAFETY: the child only calls _exit.
            let pid = unsafe { fork() };
            reap_if_forked(i64::from(pid))
        }),
        p(
            "spawn /bin/true",
            0,
            true,
            || match std::process::Command::new("/bin/true").status() {
                Ok(status) if status.success() => 0,
                _ => -1,
            },
        ),
        // Allowed by the filter, refused by the kernel: no such process.
        p("ptrace", ESRCH, true, || {
            sys(
                SYS_ptrace,
                [PTRACE_PEEKDATA as u64, 0x3fff_fff0, 0, 0, 0, 0],
            )
        }),
        p("syscall newer than the table", libc::ENOSYS, true, || {
            sys(1000, [0; 6])
        }),
        p("syscall -1", libc::ENOSYS, true, || sys(-1, [0; 6])),
    ];
    #[cfg(target_arch = "x86_64")]
    probes.extend([
        p("iopl", eperm, false, || sys(SYS_iopl, [0; 6])),
        p("ioperm", eperm, false, || sys(SYS_ioperm, [0; 6])),
    ]);
    probes
}

/// The helper's body: does nothing unless this binary was started as a helper.
#[test]
fn probe_helper() {
    let Some(mode) = std::env::var_os(PROBE_ENV) else {
        return;
    };
    if mode == "x32" {
        // getpid through the x32 ABI: the filter kills the process.
        sys(0x4000_0000 | 39, [0; 6]);
        println!("probe-result x32 survived");
        return;
    }
    for probe in probes() {
        if mode == "control" && !probe.control {
            continue;
        }
        let ret = (probe.call)();
        let errno = if ret < 0 { last_errno() } else { 0 };
        println!("probe-result {}={errno}", probe.name);
    }
}

/// Runs the helper, with the default profile installed between fork and exec unless `mode`
/// is "control"; returns its status and output.
fn run_helper(mode: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let filter =
        (mode != "control").then(|| compile(&default_profile(), native_arch().unwrap()).unwrap());
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap());
    helper
        .args(["--exact", "seccomp::tests::probe_helper", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(PROBE_ENV, mode)
        .stdin(std::process::Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls: setsid, prctl, and
    // seccomp::apply (one seccomp(2), no allocation on success).
    unsafe {
        helper.pre_exec(move || {
            // No controlling terminal, so that a vhangup that got through would hang up none.
            libc::setsid();
            if let Some(filter) = &filter {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if apply(filter).is_err() {
                    return Err(std::io::Error::from_raw_os_error(libc::EPROTO));
                }
            }
            Ok(())
        })
    };
    helper.output().unwrap()
}

fn results(output: &std::process::Output) -> Vec<(String, i32)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        // libtest's "test ... " has no newline before the first result.
        .filter_map(|line| line.split_once("probe-result ").map(|(_, rest)| rest))
        .filter_map(|rest| {
            let (name, errno) = rest.rsplit_once('=')?;
            Some((name.to_string(), errno.parse().ok()?))
        })
        .collect()
}

#[test]
fn kernel_applies_the_default_profile() {
    let output = run_helper("filtered");
    assert!(
        output.status.success(),
        "{:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let got = results(&output);
    let expected: Vec<(String, i32)> = probes()
        .iter()
        .map(|p| (p.name.to_string(), p.expected))
        .collect();
    let show = |errno: i32| std::io::Error::from_raw_os_error(errno).to_string();
    for ((name, want), (got_name, got)) in expected.iter().zip(&got) {
        assert_eq!(name, got_name);
        assert_eq!(
            want,
            got,
            "{name}: want {}, got {}",
            show(*want),
            show(*got)
        );
    }
    assert_eq!(got.len(), expected.len());
}

/// Without the filter, calls that answered EPERM above answer something else as root:
/// the EPERM came from the filter.
#[test]
fn kernel_control_run_without_filter() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: not root, the kernel refuses these with EPERM anyway");
        return;
    }
    let output = run_helper("control");
    assert!(output.status.success(), "{:?}", output.status);
    let got = results(&output);
    assert!(got.len() > 30, "{}", got.len());
    for (name, errno) in got {
        let expected = probes()
            .into_iter()
            .find(|p| p.name == name)
            .map(|p| p.expected);
        if expected == Some(libc::EPERM) {
            assert_ne!(
                errno,
                libc::EPERM,
                "{name} answers EPERM without the filter"
            );
        }
    }
}

#[test]
fn kernel_kills_x32_calls() {
    if native_arch().ok() != Some(TargetArch::x86_64) {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let output = run_helper("x32");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSYS),
        "{:?}",
        output.status
    );
}

/// Without no_new_privs and without CAP_SYS_ADMIN the kernel refuses a filter; apply says so.
#[test]
fn kernel_refusal_without_no_new_privs_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    // SAFETY: PR_GET_NO_NEW_PRIVS only reads the flag.
    if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } != 0 {
        eprintln!("skipped: this process already has no_new_privs");
        return;
    }
    let filter = compile(&default_profile(), native_arch().unwrap()).unwrap();
    let mut child = std::process::Command::new("/bin/true");
    // SAFETY: between fork and exec only async-signal-safe calls: setgid/setuid (to drop
    // root's capabilities) and seccomp::apply, which does not allocate on its error paths.
    unsafe {
        child.pre_exec(move || {
            if libc::geteuid() == 0 && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            match apply(&filter) {
                Err(SeccompError::NeedsNoNewPrivs) => {
                    Err(std::io::Error::from_raw_os_error(libc::ENOTRECOVERABLE))
                }
                Err(_) => Err(std::io::Error::from_raw_os_error(libc::EPROTO)),
                Ok(()) => Ok(()),
            }
        })
    };
    let err = child.spawn().map(|_| ()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTRECOVERABLE), "{err}");
    assert!(SeccompError::NeedsNoNewPrivs
        .to_string()
        .contains("set process.noNewPrivileges"));
}

#[test]
fn empty_program_is_refused() {
    assert!(matches!(apply(&[]), Err(SeccompError::EmptyProgram)));
}
