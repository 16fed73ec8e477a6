//! paddock's default seccomp profile, applied when a spec has no `linux.seccomp`.
//!
//! It is Docker's default profile (moby/profiles `seccomp/default.json` at cd3bed8), as a table:
//! an **allow-list** with `defaultAction` `SCMP_ACT_ERRNO`/EPERM, `clone3` answering ENOSYS so
//! that libc falls back to `clone`, whose flags the filter can see. An allow-list rather than a
//! deny-list with `defaultAction` ALLOW because:
//!
//! - it fails closed: a syscall the table does not name (every one the kernel adds after the
//!   table was written: `io_uring_*`, `open_tree_attr`, `listns`, ...) is refused, where a
//!   deny-list lets each new attack surface in until someone notices it;
//! - it is the profile the ecosystem has tested for a decade: software that runs under Docker
//!   runs here, with the same errno for what it may not do;
//! - it costs nothing at run time: since Linux 5.11 the kernel caches "always allowed" per
//!   syscall number and skips the filter for those, and the compile is well under a millisecond
//!   (see `compile`'s documentation).
//!
//! Where paddock departs from Docker's file, and why:
//!
//! - Only names that exist on x86_64 or aarch64 are listed (Docker's also names the 32-bit and
//!   other-architecture calls; paddock filters the native 64-bit ABI only and kills the others).
//! - `ptrace`, `process_vm_readv`, `process_vm_writev` are allowed, as Docker does on kernels
//!   from 4.8 on (where ptrace can no longer be used to skip the filter; paddock needs far newer
//!   kernels anyway). seccomp cannot tell a foreign process from the caller's own child; the
//!   kernel does: a sandbox has its own pid namespace (it cannot name a process outside), its
//!   own host uid from the pool (different from every neighbour's), and no `CAP_SYS_PTRACE`, so
//!   `ptrace_may_access` refuses everything but the sandbox's own processes, which the app
//!   controls anyway. Denying would break debuggers, profilers and crash reporters in the
//!   sandbox without closing an escape. `kcmp`, `pidfd_getfd` and `process_madvise` stay behind
//!   `CAP_SYS_PTRACE`, as in Docker.
//! - `socket` refuses AF_ALG and AF_VSOCK, as Docker does, but compares the low 32 bits of the
//!   argument, which is what the kernel reads for `int family`: Docker's 64-bit comparisons let
//!   `socket(0x1_0000_0026, ..)` through as AF_ALG. `personality` likewise compares the low 32
//!   bits against Docker's five allowed values.
//! - `adjtimex`, `clock_adjtime` and `name_to_handle_at` stay allowed (Docker allows them):
//!   `adjtimex` is also the read side of the clock (`ntp_gettime`), which seccomp cannot tell
//!   apart because the mode is inside a struct; setting the clock through it needs
//!   `CAP_SYS_TIME`, which a sandbox does not get. `name_to_handle_at` only makes a handle;
//!   `open_by_handle_at`, the call that opens one (the "shocker" escape), is refused.
//! - Everything Docker unlocks with a capability is data here too ([`default_profile_for`]):
//!   a sandbox given `CAP_SYS_ADMIN` gets `mount` back, as under Docker.
//!
//! Refused with EPERM (x86_64 and aarch64, no capabilities): `mount`, `umount2`, `pivot_root`,
//! the new mount API (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree`,
//! `open_tree_attr`, `mount_setattr`), `unshare`, `setns`, `clone` with any `CLONE_NEW*` flag,
//! `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`, `delete_module`, `bpf`,
//! `perf_event_open`, `keyctl`, `add_key`, `request_key`, `reboot`, `swapon`, `swapoff`,
//! `acct`, `open_by_handle_at`, `userfaultfd`, `lookup_dcookie`, `quotactl`, `quotactl_fd`,
//! `settimeofday`, `clock_settime`, `syslog`, `vhangup`, `chroot`, `sethostname`,
//! `setdomainname`, `fanotify_init`, `io_uring_setup`, `io_uring_enter`, `io_uring_register`,
//! `mbind`, `set_mempolicy`, `get_mempolicy`, `set_mempolicy_home_node`, `migrate_pages`,
//! `move_pages`, `kcmp`, `pidfd_getfd`, `process_madvise`, `lsm_*`, `file_getattr`,
//! `file_setattr`, `listns`, `rseq_slice_yield`, `personality` with any but the five
//! usual values, `socket` of AF_ALG/AF_VSOCK; on x86_64 also `iopl`, `ioperm`, `sysfs`,
//! `ustat`, `uselib`, `uprobe`, `_sysctl`, `create_module`, `get_kernel_syms`, `query_module`,
//! `nfsservctl` (also aarch64), `afs_syscall`, `getpmsg`, `putpmsg`, `security`, `tuxcall`,
//! `vserver`. `clone3` answers ENOSYS.

use oci_spec::runtime::{
    Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;
const LOW_32_BITS: u64 = 0xffff_ffff;
/// Every namespace flag `clone` takes (Docker's 0x7E020000).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// Docker's unconditional allow-list, restricted to names that exist on x86_64 or aarch64.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchownat",
    "fcntl",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstatfs",
    "fsync",
    "ftruncate",
    "futex",
    "futex_requeue",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresuid",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "sendfile",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "socketpair",
    "splice",
    "stat",
    "statfs",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    "times",
    "tkill",
    "truncate",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "write",
    "writev",
];

/// One line of the profile: what the OCI `syscalls` entry says, and when it is included.
struct Rule {
    names: &'static [&'static str],
    /// `None`: allow; `Some(errno)`: refuse with that errno.
    errno: Option<u32>,
    arg: Option<Arg>,
    gate: Gate,
}

struct Arg {
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: u64,
}

/// Docker's `includes.caps` / `excludes.caps`.
enum Gate {
    Always,
    With(Capability),
    Without(Capability),
}

impl Rule {
    const fn allow(names: &'static [&'static str]) -> Rule {
        Rule {
            names,
            errno: None,
            arg: None,
            gate: Gate::Always,
        }
    }

    const fn refuse(names: &'static [&'static str], errno: u32) -> Rule {
        Rule {
            errno: Some(errno),
            ..Rule::allow(names)
        }
    }

    /// Only when argument `index`, read as the kernel reads an `int`, equals `value`.
    const fn when_low32(self, index: usize, value: u64) -> Rule {
        self.when_masked(index, LOW_32_BITS, value)
    }

    /// Only when `argument & mask == value`.
    const fn when_masked(self, index: usize, mask: u64, value: u64) -> Rule {
        Rule {
            arg: Some(Arg {
                index,
                op: LinuxSeccompOperator::ScmpCmpMaskedEq,
                value: mask,
                value_two: value,
            }),
            ..self
        }
    }

    const fn with(self, capability: Capability) -> Rule {
        Rule {
            gate: Gate::With(capability),
            ..self
        }
    }

    const fn without(self, capability: Capability) -> Rule {
        Rule {
            gate: Gate::Without(capability),
            ..self
        }
    }
}

/// The profile, in order: for each syscall the first matching line decides.
const RULES: &[Rule] = &[
    Rule::allow(ALLOWED),
    Rule::allow(&["ptrace", "process_vm_readv", "process_vm_writev"]),
    // x86 only: skipped on aarch64.
    Rule::allow(&["arch_prctl", "modify_ldt"]),
    Rule::refuse(&["socket"], EPERM).when_low32(0, libc::AF_ALG as u64),
    Rule::refuse(&["socket"], EPERM).when_low32(0, libc::AF_VSOCK as u64),
    Rule::allow(&["socket"]),
    // PER_LINUX, UNAME26, PER_LINUX32, PER_LINUX32|UNAME26, and 0xffffffff (query).
    Rule::allow(&["personality"]).when_low32(0, 0x0),
    Rule::allow(&["personality"]).when_low32(0, 0x0008),
    Rule::allow(&["personality"]).when_low32(0, 0x2_0000),
    Rule::allow(&["personality"]).when_low32(0, 0x2_0008),
    Rule::allow(&["personality"]).when_low32(0, 0xffff_ffff),
    Rule::allow(&["clone"])
        .when_masked(0, CLONE_NAMESPACES, 0)
        .without(Capability::SysAdmin),
    Rule::refuse(&["clone3"], ENOSYS).without(Capability::SysAdmin),
    Rule::allow(&["open_by_handle_at"]).with(Capability::DacReadSearch),
    Rule::allow(&[
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "lsm_get_self_attr",
        "lsm_list_modules",
        "lsm_set_self_attr",
        "mount",
        "mount_setattr",
        "move_mount",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount2",
        "unshare",
    ])
    .with(Capability::SysAdmin),
    Rule::allow(&["reboot"]).with(Capability::SysBoot),
    Rule::allow(&["chroot"]).with(Capability::SysChroot),
    Rule::allow(&["delete_module", "init_module", "finit_module"]).with(Capability::SysModule),
    Rule::allow(&["acct"]).with(Capability::SysPacct),
    Rule::allow(&[
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ])
    .with(Capability::SysPtrace),
    Rule::allow(&["iopl", "ioperm"]).with(Capability::SysRawio),
    Rule::allow(&["settimeofday", "clock_settime"]).with(Capability::SysTime),
    Rule::allow(&["vhangup"]).with(Capability::SysTtyConfig),
    Rule::allow(&[
        "get_mempolicy",
        "mbind",
        "set_mempolicy",
        "set_mempolicy_home_node",
    ])
    .with(Capability::SysNice),
    Rule::allow(&["syslog"]).with(Capability::Syslog),
    Rule::allow(&["bpf"]).with(Capability::Bpf),
    Rule::allow(&["perf_event_open"]).with(Capability::Perfmon),
];

/// The default profile for a sandbox without capabilities, which is what a sandbox leased a
/// pool identity gets. See the module documentation for what it refuses and why.
///
/// ```
/// use paddock_runtime::seccomp::{self, TargetArch};
///
/// let program = seccomp::compile(&seccomp::default_profile(), TargetArch::x86_64)?;
/// assert!(program.len() < 4096);
/// # Ok::<(), seccomp::SeccompError>(())
/// ```
pub fn default_profile() -> LinuxSeccomp {
    default_profile_for(&Capabilities::new())
}

/// The default profile for a process whose permitted capabilities are `capabilities`: as
/// Docker does, each capability gives back the syscalls it guards (`CAP_SYS_ADMIN`: `mount`,
/// `unshare`, `setns`, `clone` with namespace flags, ...).
pub fn default_profile_for(capabilities: &Capabilities) -> LinuxSeccomp {
    let syscalls = RULES
        .iter()
        .filter(|rule| match rule.gate {
            Gate::Always => true,
            Gate::With(cap) => capabilities.contains(&cap),
            Gate::Without(cap) => !capabilities.contains(&cap),
        })
        .filter_map(|rule| {
            let mut syscall = LinuxSyscall::default();
            syscall.set_names(rule.names.iter().map(|name| name.to_string()).collect());
            match rule.errno {
                None => syscall.set_action(LinuxSeccompAction::ScmpActAllow),
                Some(errno) => syscall
                    .set_action(LinuxSeccompAction::ScmpActErrno)
                    .set_errno_ret(Some(errno)),
            };
            if let Some(arg) = &rule.arg {
                let built = LinuxSeccompArgBuilder::default()
                    .index(arg.index)
                    .op(arg.op)
                    .value(arg.value)
                    .value_two(arg.value_two)
                    .build();
                match built {
                    Ok(arg) => {
                        syscall.set_args(Some(vec![arg]));
                    }
                    // Cannot happen (every field is given); if it did, fail closed: an
                    // allowing line is left out, a refusing one refuses unconditionally.
                    Err(_) if rule.errno.is_none() => return None,
                    Err(_) => {}
                }
            }
            Some(syscall)
        })
        .collect();
    let mut profile = LinuxSeccomp::default();
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    profile.set_default_errno_ret(Some(EPERM));
    profile.set_syscalls(Some(syscalls));
    profile
}
