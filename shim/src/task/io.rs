//! CloseIO (stdin EOF for the process) and ResizePty.

use containerd_shim::api::{CloseIORequest, Empty, ResizePtyRequest};
use containerd_shim::protos::ttrpc::{self, Code};

use super::{error, process, Service};

impl Service {
    pub(crate) fn close_io_(&self, req: &CloseIORequest) -> ttrpc::Result<Empty> {
        let mut t = self.shared.lock();
        let p = process(&mut t, &req.id, &req.exec_id)?;
        if req.stdin {
            p.held.close_stdin();
        }
        Ok(Empty::new())
    }

    pub(crate) fn resize_pty_(&self, req: &ResizePtyRequest) -> ttrpc::Result<Empty> {
        let mut t = self.shared.lock();
        let p = process(&mut t, &req.id, &req.exec_id)?;
        let console = p.console.as_ref().ok_or_else(|| {
            error(
                Code::FAILED_PRECONDITION,
                format!("process of {} has no terminal", req.id),
            )
        })?;
        console
            .resize(req.width, req.height)
            .map(|()| Empty::new())
            .map_err(|e| error(Code::UNKNOWN, e))
    }
}
