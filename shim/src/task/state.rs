//! State, Pids, Wait, Connect: answered from the table (Pids from the sandbox's cgroup,
//! through the runtime library).

use containerd_shim::api::{
    ConnectRequest, ConnectResponse, PidsRequest, PidsResponse, StateRequest, StateResponse,
    WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::ProcessDetails;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::ProcessInfo;

use super::{error, not_found, Service};

impl Service {
    pub(crate) fn state_(&self, req: &StateRequest) -> ttrpc::Result<StateResponse> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        let mut t = self.shared.lock();
        let c = super::container(&mut t, id)?;
        let p = c.process(exec_id).ok_or_else(|| not_found(id, exec_id))?;
        let mut r = StateResponse {
            id: if exec_id.is_empty() {
                id.to_string()
            } else {
                exec_id.to_string()
            },
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: p.pid,
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        r.set_status(c.status(p));
        if let Some(e) = &p.exit {
            r.exit_status = e.code;
            r.exited_at = Some(e.at.clone()).into();
        }
        Ok(r)
    }

    pub(crate) fn pids_(&self, req: &PidsRequest) -> ttrpc::Result<PidsResponse> {
        let id = req.id.as_str();
        let (root, execs) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            let execs: Vec<(u32, String)> = c
                .execs
                .values()
                .map(|p| (p.pid, p.exec_id.clone()))
                .collect();
            (c.paddock.root.clone(), execs)
        };
        let pids = paddock_runtime::sandbox::pids(&root, id)
            .map_err(|e| error(Code::UNKNOWN, format!("pids of {id}: {e}")))?;
        let processes = pids
            .into_iter()
            .map(|pid| {
                let pid = u32::try_from(pid).unwrap_or(0);
                let mut info = ProcessInfo {
                    pid,
                    ..Default::default()
                };
                if let Some((_, exec_id)) = execs.iter().find(|(p, _)| *p == pid) {
                    let d = ProcessDetails {
                        exec_id: exec_id.clone(),
                        ..Default::default()
                    };
                    info.info = Some(Any {
                        type_url: "containerd.runc.v1.ProcessDetails".into(),
                        value: d.write_to_bytes().unwrap_or_default(),
                        ..Default::default()
                    })
                    .into();
                }
                info
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    /// Blocks until the process has exited (its `TaskExit` is out by then).
    pub(crate) fn wait_(&self, req: &WaitRequest) -> ttrpc::Result<WaitResponse> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        let mut t = self.shared.lock();
        loop {
            let c = super::container(&mut t, id)?;
            let p = c.process(exec_id).ok_or_else(|| not_found(id, exec_id))?;
            if let Some(e) = &p.exit {
                return Ok(WaitResponse {
                    exit_status: e.code,
                    exited_at: Some(e.at.clone()).into(),
                    ..Default::default()
                });
            }
            t = self
                .shared
                .changed
                .wait(t)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    pub(crate) fn connect_(&self, req: &ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        let mut t = self.shared.lock();
        let c = super::container(&mut t, &req.id)?;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: c.init.pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }
}
