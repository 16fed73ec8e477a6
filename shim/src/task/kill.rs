//! Kill: the init (and with `all`, every process of the sandbox) through `paddock kill`; an
//! exec'd process by its pid, as the runc shim does.

use std::ffi::OsString;

use containerd_shim::api::{Empty, KillRequest};
use containerd_shim::protos::ttrpc::{self, Code};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{error, process, Service};

impl Service {
    pub(crate) fn kill_(&self, req: &KillRequest) -> ttrpc::Result<Empty> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        let (paddock, bundle, pid) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            let (paddock, bundle) = (c.paddock.clone(), c.bundle.clone());
            let p = process(&mut t, id, exec_id)?;
            if !p.running() {
                return Err(error(
                    Code::NOT_FOUND,
                    format!(
                        "process {} of {id}: already finished",
                        if exec_id.is_empty() { "init" } else { exec_id }
                    ),
                ));
            }
            (paddock, bundle, p.pid)
        };
        if exec_id.is_empty() {
            let mut args: Vec<OsString> = vec!["kill".into()];
            if req.all {
                args.push("--all".into());
            }
            args.push(id.into());
            args.push(req.signal.to_string().into());
            return paddock
                .run(&args, None, &bundle)
                .map(|()| Empty::new())
                .map_err(|e| error(Code::UNKNOWN, e));
        }
        if pid == 0 {
            return Err(error(
                Code::FAILED_PRECONDITION,
                format!("process {exec_id} of {id} was not started"),
            ));
        }
        let sig = Signal::try_from(i32::try_from(req.signal).unwrap_or(-1)).map_err(|_| {
            error(
                Code::INVALID_ARGUMENT,
                format!("kill {exec_id}: bad signal {}", req.signal),
            )
        })?;
        kill(Pid::from_raw(pid as i32), sig)
            .map(|()| Empty::new())
            .map_err(|e| {
                error(
                    Code::NOT_FOUND,
                    format!("kill {exec_id} of {id} (pid {pid}): {e}"),
                )
            })
    }
}
