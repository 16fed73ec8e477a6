//! Start: `paddock start` for the init, `paddock exec --detach` for an exec'd process. An exit
//! the reaper sees while the start runs is published right after `TaskStart`/`TaskExecStarted`.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use containerd_shim::api::{StartRequest, StartResponse};
use containerd_shim::protos::events::task::{TaskExecStarted, TaskStart};
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::util::timestamp;

use super::{error, not_found, process, Service};
use crate::console::{Console, ConsoleSocket};
use crate::container::{Exit, StdioPaths};
use crate::runtime::{read_pid, Paddock};
use crate::stdio::{self, Held};

const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);
static SEQ: AtomicU64 = AtomicU64::new(0);

/// What a started exec brings into the table.
type Started = (u32, Held, Option<Console>);

fn shown(exec_id: &str) -> &str {
    if exec_id.is_empty() {
        "init"
    } else {
        exec_id
    }
}

impl Service {
    pub(crate) fn start_(&self, req: &StartRequest) -> ttrpc::Result<StartResponse> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        let (paddock, bundle, stdio, spec) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            let paddock = c.paddock.clone();
            let bundle = c.bundle.clone();
            let init_runs = c.init.started && c.init.running();
            if !exec_id.is_empty() && !init_runs {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    format!("cannot start {exec_id} in {id}: the container is not running"),
                ));
            }
            let p = process(&mut t, id, exec_id)?;
            if p.started || p.starting || p.exit.is_some() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    format!("process {} of {id} was already started", shown(exec_id)),
                ));
            }
            p.starting = true;
            (
                paddock,
                bundle,
                p.stdio.clone(),
                std::mem::take(&mut p.spec),
            )
        };
        let outcome: Result<Option<Started>, String> = if exec_id.is_empty() {
            let args: Vec<OsString> = vec!["start".into(), id.into()];
            paddock.run(&args, None, &bundle).map(|()| None)
        } else {
            self.run_exec(&paddock, &bundle, id, &stdio, &spec)
                .map(Some)
        };
        let mut t = self.shared.lock();
        let stray = match &outcome {
            Ok(Some((pid, _, _))) => t.take_stray(*pid),
            _ => None,
        };
        let c = t.containers.get_mut(id).ok_or_else(|| not_found(id, ""))?;
        let p = c
            .process_mut(exec_id)
            .ok_or_else(|| not_found(id, exec_id))?;
        p.starting = false;
        let started = match outcome {
            Ok(s) => s,
            Err(e) => {
                if !exec_id.is_empty() {
                    // never ran: containerd deletes it next
                    p.exit = Some(Exit {
                        code: 255,
                        at: timestamp().unwrap_or_default(),
                    });
                }
                drop(t);
                self.shared.changed.notify_all();
                return Err(error(
                    Code::UNKNOWN,
                    format!("start {} of {id}: {e}", shown(exec_id)),
                ));
            }
        };
        p.started = true;
        if let Some((pid, held, console)) = started {
            p.pid = pid;
            p.held = held;
            p.console = console;
            self.shared.events.exec_started(TaskExecStarted {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid,
                ..Default::default()
            });
        } else {
            self.shared.events.start_(TaskStart {
                container_id: id.to_string(),
                pid: p.pid,
                ..Default::default()
            });
        }
        let pid = p.pid;
        if let Some(code) = p.pending.or(stray) {
            self.shared.finish_exit(c, exec_id, code);
        }
        drop(t);
        self.shared.changed.notify_all();
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// `paddock exec --detach --process <spec>`; returns the pid and what the shim holds.
    fn run_exec(
        &self,
        paddock: &Paddock,
        bundle: &Path,
        id: &str,
        stdio: &StdioPaths,
        spec: &[u8],
    ) -> Result<Started, String> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let spec_file = bundle.join(format!(".exec-{n}.json"));
        let pid_file = bundle.join(format!(".exec-{n}.pid"));
        std::fs::write(&spec_file, spec)
            .map_err(|e| format!("write {}: {e}", spec_file.display()))?;
        let result = self.exec_with(paddock, bundle, id, stdio, &spec_file, &pid_file);
        let _ = std::fs::remove_file(&spec_file);
        let _ = std::fs::remove_file(&pid_file);
        result
    }

    fn exec_with(
        &self,
        paddock: &Paddock,
        bundle: &Path,
        id: &str,
        stdio: &StdioPaths,
        spec_file: &Path,
        pid_file: &Path,
    ) -> Result<Started, String> {
        let mut args: Vec<OsString> = vec![
            "exec".into(),
            "--process".into(),
            spec_file.into(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.into(),
        ];
        let mut held = Held::default();
        let mut console = None;
        if stdio.terminal {
            let sock = ConsoleSocket::bind(bundle)?;
            args.push("--console-socket".into());
            args.push(sock.path().into());
            args.push(id.into());
            paddock.run(&args, None, bundle)?;
            let master = sock.receive(CONSOLE_TIMEOUT)?;
            console = Some(Console::attach(
                master,
                &stdio.stdin,
                &stdio.stdout,
                &mut held,
            )?);
        } else {
            let (fds, h) = stdio::open(
                &stdio.stdin,
                &stdio.stdout,
                &stdio.stderr,
                (id, &self.shared.namespace),
            )?;
            held = h;
            args.push(id.into());
            paddock.run(&args, Some(fds), bundle)?;
        }
        Ok((read_pid(pid_file)?, held, console))
    }
}
