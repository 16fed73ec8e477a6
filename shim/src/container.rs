//! The shim's table of containers and their processes, and what happens when one exits.
//!
//! One mutex guards the table; it is never held while `paddock` runs. Events are enqueued under
//! it, which puts them in the order the table changed: `TaskStart` before the `TaskExit` of a
//! process that died during `start`, `TaskOOM` before the `TaskExit` of an OOM-killed process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use containerd_shim::api::Status;
use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::util::timestamp;
use paddock_runtime::cgroups::SandboxCgroup;

use crate::console::Console;
use crate::events::Publisher;
use crate::runtime::Paddock;
use crate::stdio::Held;

/// How long an exit of a pid nobody knows yet is kept (an exec'd process can exit before
/// `paddock exec` has told us its pid).
const STRAY_KEEP: Duration = Duration::from_secs(60);
/// How long the exit path waits for the kernel's OOM counter after a SIGKILL: the kernel
/// sends the signal, then counts the kill.
const OOM_COUNT_SETTLE: Duration = Duration::from_millis(10);

/// Whether the exit of a process (`init` or an exec'd one) with status `code` must first
/// publish the OOM kills the cgroup counted, and how long to wait for the counter to move:
/// the init always (its exit ends the task), any process killed by SIGKILL (the OOM killer's
/// signal) with [`OOM_COUNT_SETTLE`]; `None` for an exec'd process that ended otherwise.
fn oom_check_before_exit(init: bool, code: i32) -> Option<Duration> {
    if code == 128 + libc::SIGKILL {
        Some(OOM_COUNT_SETTLE)
    } else if init {
        Some(Duration::ZERO)
    } else {
        None
    }
}

/// How a process ended.
#[derive(Debug, Clone)]
pub struct Exit {
    pub code: u32,
    pub at: Timestamp,
}

/// The stdio a process was created with, as containerd gave it.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The init or an exec'd process.
#[derive(Default)]
pub struct Process {
    /// Empty for the init.
    pub exec_id: String,
    /// 0 until known.
    pub pid: u32,
    pub stdio: StdioPaths,
    pub held: Held,
    pub console: Option<Console>,
    /// The exec's OCI process (JSON), until it is started.
    pub spec: Vec<u8>,
    /// A `start` is running: an exit seen meanwhile waits in `pending`.
    pub starting: bool,
    pub started: bool,
    pub pending: Option<i32>,
    /// Set (and published) once the process has ended.
    pub exit: Option<Exit>,
}

impl Process {
    pub fn running(&self) -> bool {
        self.exit.is_none() && self.pending.is_none()
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub paddock: Paddock,
    pub init: Process,
    pub execs: HashMap<String, Process>,
    pub paused: bool,
    pub cgroup: Option<SandboxCgroup>,
    /// OOM kills counted in the cgroup and already published (or there before create).
    pub oom_seen: u64,
}

impl Container {
    pub fn process(&self, exec_id: &str) -> Option<&Process> {
        if exec_id.is_empty() {
            Some(&self.init)
        } else {
            self.execs.get(exec_id)
        }
    }

    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    pub fn status(&self, p: &Process) -> Status {
        if p.exit.is_some() {
            Status::STOPPED
        } else if self.paused && p.exec_id.is_empty() {
            Status::PAUSED
        } else if p.started || p.pending.is_some() {
            Status::RUNNING
        } else {
            Status::CREATED
        }
    }
}

#[derive(Default)]
pub struct Table {
    pub containers: HashMap<String, Container>,
    /// Ids being created (not in `containers` yet).
    pub creating: Vec<String>,
    /// The state roots containers of this shim were created in.
    pub roots: std::collections::BTreeSet<PathBuf>,
    strays: Vec<(i32, i32, Instant)>,
}

impl Table {
    /// Takes the exit of `pid` if the reaper saw it before anyone knew the pid.
    pub fn take_stray(&mut self, pid: u32) -> Option<i32> {
        let i = self
            .strays
            .iter()
            .position(|(p, _, _)| i64::from(*p) == i64::from(pid))?;
        Some(self.strays.swap_remove(i).1)
    }
}

/// Everything the Task methods, the reaper and the OOM thread share.
pub struct Shared {
    pub table: Mutex<Table>,
    pub changed: Condvar,
    pub events: Publisher,
    pub namespace: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reaper's callback: a child of the shim exited with `code`.
    pub fn on_exit(&self, pid: i32, code: i32) {
        let mut t = self.lock();
        let found = t.containers.values_mut().find_map(|c| {
            if c.init.pid as i32 == pid && c.init.running() && c.init.pid != 0 {
                return Some((c.id.clone(), String::new()));
            }
            c.execs
                .values()
                .find(|p| p.pid as i32 == pid && p.pid != 0 && p.running())
                .map(|p| (c.id.clone(), p.exec_id.clone()))
        });
        match found {
            Some((id, exec_id)) => {
                if let Some(c) = t.containers.get_mut(&id) {
                    let starting = c.process(&exec_id).is_some_and(|p| p.starting);
                    if starting {
                        if let Some(p) = c.process_mut(&exec_id) {
                            p.pending = Some(code);
                        }
                    } else {
                        self.finish_exit(c, &exec_id, code);
                    }
                }
            }
            None => {
                let now = Instant::now();
                t.strays
                    .retain(|(_, _, at)| now.duration_since(*at) < STRAY_KEEP);
                t.strays.push((pid, code, now));
            }
        }
        drop(t);
        self.changed.notify_all();
    }

    /// Records and publishes an exit (call with the table locked). Every OOM kill the cgroup
    /// counted goes out first when the init exits, or when any process died of SIGKILL (an
    /// exec'd process can be the OOM victim too: its `TaskOOM` must not trail its `TaskExit`).
    pub fn finish_exit(&self, c: &mut Container, exec_id: &str, code: i32) {
        if let Some(settle) = oom_check_before_exit(exec_id.is_empty(), code) {
            self.report_oom(c, settle);
        }
        let id = c.id.clone();
        let Some(p) = c.process_mut(exec_id) else {
            return;
        };
        p.pending = None;
        let exit = Exit {
            code: u32::try_from(code).unwrap_or(255),
            at: timestamp().unwrap_or_default(),
        };
        self.events.exit(TaskExit {
            container_id: id.clone(),
            id: if exec_id.is_empty() {
                id
            } else {
                exec_id.to_string()
            },
            pid: p.pid,
            exit_status: exit.code,
            exited_at: Some(exit.at.clone()).into(),
            ..Default::default()
        });
        p.exit = Some(exit);
    }

    /// Publishes `TaskOOM` if the cgroup counted kills not yet published. `settle`: how long
    /// to wait for the counter to move (after a SIGKILL of the init).
    pub fn report_oom(&self, c: &mut Container, settle: Duration) {
        let Some(cg) = &c.cgroup else { return };
        let deadline = Instant::now() + settle;
        loop {
            let now = paddock_runtime::oom::kill_count(cg).unwrap_or(c.oom_seen);
            if now > c.oom_seen {
                c.oom_seen = now;
                self.events.oom(TaskOOM {
                    container_id: c.id.clone(),
                    ..Default::default()
                });
                return;
            }
            if Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The OOM thread's callback.
    pub fn on_oom(&self, id: &str) {
        let mut t = self.lock();
        if let Some(c) = t.containers.get_mut(id) {
            self.report_oom(c, Duration::ZERO);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_go_out_before_the_exit_of_the_init_and_of_killed_execs() {
        let killed = 128 + libc::SIGKILL;
        assert_eq!(oom_check_before_exit(true, killed), Some(OOM_COUNT_SETTLE));
        assert_eq!(oom_check_before_exit(false, killed), Some(OOM_COUNT_SETTLE));
        assert_eq!(oom_check_before_exit(true, 0), Some(Duration::ZERO));
        assert_eq!(
            oom_check_before_exit(true, 128 + libc::SIGTERM),
            Some(Duration::ZERO)
        );
        assert_eq!(oom_check_before_exit(false, 0), None);
        assert_eq!(oom_check_before_exit(false, 3), None);
    }
}
