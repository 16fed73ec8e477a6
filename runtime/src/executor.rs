//! The code that runs inside the sandbox right before the workload's `execve`.
//!
//! libcontainer re-opens a host `/dev/null` passed as stdio from inside the container, but
//! read-only, so every write to a stdout or stderr that was `/dev/null` fails with EBADF. Here,
//! after that re-open, any such descriptor is opened again read-write.
//!
//! The sandbox's seccomp filter, when it has one, is installed here as the very last step, so
//! that as little as possible runs under it before the workload.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use libcontainer::oci_spec::runtime::Spec;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::seccomp::{self, BpfProgram};

/// paddock's workload executor.
#[derive(Clone, Default)]
pub struct SandboxExecutor {
    seccomp: Option<Arc<BpfProgram>>,
}

impl SandboxExecutor {
    /// An executor that installs `filter` (see [`crate::seccomp::compile`]) right before exec.
    pub fn with_seccomp(filter: BpfProgram) -> Self {
        SandboxExecutor {
            seccomp: Some(Arc::new(filter)),
        }
    }
}

impl Executor for SandboxExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        fix_dev_null_stdio();
        default_signals()?;
        if let Some(filter) = &self.seccomp {
            seccomp::apply(filter).map_err(|err| ExecutorError::Other(err.to_string()))?;
        }
        // libcontainer's message for a failed execvp is "failed to execute workload", its
        // cause (EACCES on a denied binary, say) only in the source: keep the cause in the line.
        DefaultExecutor {}.exec(spec).map_err(|err| match err {
            ExecutorError::Execution(cause) => ExecutorError::Other(cause.to_string()),
            other => other,
        })
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// The workload starts with every signal at its default action and none blocked, whatever
/// its caller had: paddock is a Rust program, which runs with SIGPIPE ignored, and an ignored
/// signal stays ignored across exec (as does one its own caller ignored). runc's init, a Go
/// program, hands the workload defaults too; a `yes | head` in the sandbox must end by SIGPIPE.
fn default_signals() -> Result<(), ExecutorError> {
    // The kernel's own layout: the raw system call is used because glibc refuses its reserved
    // signals 32 and 33. All zero is SIG_DFL, no flags, no restorer, an empty mask.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: rt_sigaction gets a valid pointer to a kernel sigaction, no old-action pointer
    // and the kernel's sigset size; SIGKILL and SIGSTOP cannot be changed and are skipped.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let rc = libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                KERNEL_SIGSET_BYTES,
            );
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                return Err(ExecutorError::Other(format!(
                    "reset signal {sig} to its default: {e}"
                )));
            }
        }
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .map_err(|e| ExecutorError::Other(format!("unblock every signal: {e}")))
}

/// The kernel's sigset_t (64 signals), which rt_sigaction checks exactly.
const KERNEL_SIGSET_BYTES: usize = 8;

fn fix_dev_null_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    let Ok(null_stat) = fstat(null.as_raw_fd()) else {
        return;
    };
    for fd in 0..3 {
        let Ok(st) = fstat(fd) else { continue };
        let is_char = SFlag::from_bits_truncate(st.st_mode).contains(SFlag::S_IFCHR);
        if !is_char || st.st_rdev != null_stat.st_rdev {
            continue;
        }
        let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
            continue;
        };
        if OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE != OFlag::O_RDWR {
            let _ = nix::unistd::dup2(null.as_raw_fd(), fd);
        }
    }
}
