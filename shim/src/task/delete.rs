//! Delete: an exec'd process leaves the table; the init takes the sandbox with it
//! (`paddock delete --force`: processes, cgroups, mounts, quota, identity) and the rootfs
//! mounts, its stdio and its OOM watch.

use std::ffi::OsString;

use containerd_shim::api::{DeleteRequest, DeleteResponse};
use containerd_shim::protos::events::task::TaskDelete;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::util::timestamp;

use super::create::unmount_rootfs;
use super::{error, not_found, Service};
use crate::container::Exit;
use crate::options;

impl Service {
    pub(crate) fn delete_(&self, req: &DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        if !exec_id.is_empty() {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            let p = c.execs.get(exec_id).ok_or_else(|| not_found(id, exec_id))?;
            if p.started && p.exit.is_none() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    format!("process {exec_id} of {id} is still running"),
                ));
            }
            let p = c
                .execs
                .remove(exec_id)
                .ok_or_else(|| not_found(id, exec_id))?;
            let exit = p.exit.unwrap_or_else(|| Exit {
                code: 0,
                at: Default::default(),
            });
            return Ok(DeleteResponse {
                pid: p.pid,
                exit_status: exit.code,
                exited_at: Some(exit.at).into(),
                ..Default::default()
            });
        }
        let (paddock, bundle) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            if c.init.started && c.init.running() {
                return Err(error(
                    Code::FAILED_PRECONDITION,
                    format!("container {id} is still running: kill it first"),
                ));
            }
            (c.paddock.clone(), c.bundle.clone())
        };
        let args: Vec<OsString> = vec!["delete".into(), "--force".into(), id.into()];
        paddock
            .run(&args, None, &bundle)
            .map_err(|e| error(Code::UNKNOWN, e))?;
        let rootfs = bundle.join("rootfs");
        match crate::rootfs::detach(&rootfs) {
            Ok(n) if n > 0 => {}
            // nothing mounted at the rootfs (a bundle of its own), or it cannot be detached
            Ok(_) => unmount_rootfs(&rootfs),
            Err(e) => {
                log::warn!("container {id}: {e}");
                unmount_rootfs(&rootfs);
            }
        }
        // containerd runs the `delete` action next: it need not ask paddock again
        if let Err(e) = options::forget(&bundle) {
            log::warn!("container {id}: {e}");
        }
        self.oom.remove(id);
        let mut t = self.shared.lock();
        let c = t.containers.remove(id).ok_or_else(|| not_found(id, ""))?;
        // Never started: `delete --force` killed it.
        let exit = c.init.exit.clone().unwrap_or_else(|| Exit {
            code: 128 + libc::SIGKILL as u32,
            at: timestamp().unwrap_or_default(),
        });
        self.shared.events.delete(TaskDelete {
            container_id: id.to_string(),
            pid: c.init.pid,
            exit_status: exit.code,
            exited_at: Some(exit.at.clone()).into(),
            id: id.to_string(),
            ..Default::default()
        });
        drop(t);
        // wake waiters of the processes that just left the table
        self.shared.changed.notify_all();
        Ok(DeleteResponse {
            pid: c.init.pid,
            exit_status: exit.code,
            exited_at: Some(exit.at).into(),
            ..Default::default()
        })
    }
}
