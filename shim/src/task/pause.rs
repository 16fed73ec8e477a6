//! Pause and resume: `paddock pause/resume` (the freezer), then `TaskPaused`/`TaskResumed`.

use std::ffi::OsString;

use containerd_shim::api::Empty;
use containerd_shim::protos::events::task::{TaskPaused, TaskResumed};
use containerd_shim::protos::ttrpc::{self, Code};

use super::{error, Service};

impl Service {
    pub(crate) fn pause_(&self, id: &str, pause: bool) -> ttrpc::Result<Empty> {
        let (paddock, bundle) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            (c.paddock.clone(), c.bundle.clone())
        };
        let verb = if pause { "pause" } else { "resume" };
        let args: Vec<OsString> = vec![verb.into(), id.into()];
        paddock
            .run(&args, None, &bundle)
            .map_err(|e| error(Code::UNKNOWN, e))?;
        let mut t = self.shared.lock();
        let c = super::container(&mut t, id)?;
        c.paused = pause;
        if pause {
            self.shared.events.paused(TaskPaused {
                container_id: id.to_string(),
                ..Default::default()
            });
        } else {
            self.shared.events.resumed(TaskResumed {
                container_id: id.to_string(),
                ..Default::default()
            });
        }
        Ok(Empty::new())
    }
}
