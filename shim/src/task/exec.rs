//! Exec: records the process (it starts with `Start`) and announces it.

use containerd_shim::api::{Empty, ExecProcessRequest};
use containerd_shim::protos::events::task::TaskExecAdded;
use containerd_shim::protos::ttrpc::{self, Code};

use super::{error, Service};
use crate::container::{Process, StdioPaths};

impl Service {
    pub(crate) fn exec_(&self, req: &ExecProcessRequest) -> ttrpc::Result<Empty> {
        let (id, exec_id) = (req.id.as_str(), req.exec_id.as_str());
        if exec_id.is_empty() {
            return Err(error(
                Code::INVALID_ARGUMENT,
                format!("exec in {id}: empty exec id"),
            ));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                error(
                    Code::INVALID_ARGUMENT,
                    format!("exec {exec_id} in {id}: no process spec"),
                )
            })?;
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&spec) {
            return Err(error(
                Code::INVALID_ARGUMENT,
                format!("exec {exec_id} in {id}: the process spec is not JSON: {e}"),
            ));
        }
        let mut t = self.shared.lock();
        let c = super::container(&mut t, id)?;
        if !c.init.running() {
            return Err(error(
                Code::FAILED_PRECONDITION,
                format!("exec {exec_id} in {id}: the container is not running"),
            ));
        }
        if c.execs.contains_key(exec_id) {
            return Err(error(
                Code::ALREADY_EXISTS,
                format!("exec {exec_id} in {id} already exists"),
            ));
        }
        c.execs.insert(
            exec_id.to_string(),
            Process {
                exec_id: exec_id.to_string(),
                stdio: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
                spec,
                ..Default::default()
            },
        );
        self.shared.events.exec_added(TaskExecAdded {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        });
        Ok(Empty::new())
    }
}
