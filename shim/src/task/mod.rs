//! The Task API (v2) over the container table: one file per verb. Lifecycle verbs run
//! `paddock`; state, pids and stats are read in-process through the runtime library.

mod create;
mod delete;
mod exec;
mod io;
mod kill;
mod pause;
mod start;
mod state;
mod stats;
mod update;

use std::sync::Arc;

pub(crate) use create::unmount_rootfs;

use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::{Task, TtrpcContext};

use crate::container::{Container, Process, Shared, Table};
use crate::idle::Idle;
use crate::oom::OomWatch;

/// The service containerd talks to.
pub struct Service {
    pub shared: Arc<Shared>,
    pub oom: OomWatch,
    /// Told after every request (the shim trims itself once they stop) and at shutdown.
    pub idle: Arc<Idle>,
}

pub(crate) fn error(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    log::warn!("{msg}");
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.to_string()))
}

pub(crate) fn not_found(id: &str, exec_id: &str) -> ttrpc::Error {
    if exec_id.is_empty() {
        error(Code::NOT_FOUND, format!("container {id} not found"))
    } else {
        error(
            Code::NOT_FOUND,
            format!("process {exec_id} of container {id} not found"),
        )
    }
}

/// The container `id`, or NotFound.
pub(crate) fn container<'a>(t: &'a mut Table, id: &str) -> ttrpc::Result<&'a mut Container> {
    t.containers.get_mut(id).ok_or_else(|| not_found(id, ""))
}

/// The process `exec_id` of container `id`, or NotFound.
pub(crate) fn process<'a>(
    t: &'a mut Table,
    id: &str,
    exec_id: &str,
) -> ttrpc::Result<&'a mut Process> {
    container(t, id)?
        .process_mut(exec_id)
        .ok_or_else(|| not_found(id, exec_id))
}

impl Service {
    fn served<T>(&self, r: T) -> T {
        self.idle.poke();
        r
    }
}

impl Task for Service {
    fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        self.served(self.state_(&req))
    }

    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        self.served(self.create_(&req))
    }

    fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        self.served(self.start_(&req))
    }

    fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        self.served(self.delete_(&req))
    }

    fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        self.served(self.pids_(&req))
    }

    fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        self.served(self.pause_(&req.id, true))
    }

    fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        self.served(self.pause_(&req.id, false))
    }

    fn checkpoint(&self, _ctx: &TtrpcContext, req: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        Err(error(
            Code::UNIMPLEMENTED,
            format!("checkpoint of {}: not supported by paddock", req.id),
        ))
    }

    fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        self.served(self.kill_(&req))
    }

    fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.served(self.exec_(&req))
    }

    fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        self.served(self.resize_pty_(&req))
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        self.served(self.close_io_(&req))
    }

    fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        self.served(self.update_(&req))
    }

    fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        self.served(self.wait_(&req))
    }

    fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        self.served(self.stats_(&req))
    }

    fn connect(&self, _ctx: &TtrpcContext, req: ConnectRequest) -> ttrpc::Result<ConnectResponse> {
        self.served(self.connect_(&req))
    }

    fn shutdown(&self, _ctx: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        let t = self.shared.lock();
        let busy = !t.containers.is_empty() || !t.creating.is_empty();
        drop(t);
        if busy && !req.now {
            return Ok(Empty::new());
        }
        self.idle.exit();
        Ok(Empty::new())
    }
}
