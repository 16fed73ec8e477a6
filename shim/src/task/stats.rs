//! Stats: the sandbox's cgroup statistics, read in-process, as containerd's Metrics (v1 or v2,
//! after the hierarchy the sandbox is on).

use containerd_shim::api::{StatsRequest, StatsResponse};
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::util::convert_to_any;

use super::{error, Service};
use crate::metrics;

impl Service {
    pub(crate) fn stats_(&self, req: &StatsRequest) -> ttrpc::Result<StatsResponse> {
        let id = req.id.as_str();
        let (root, unified, oom) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            let unified = c.cgroup.as_ref().is_some_and(|cg| cg.v2_dir().is_some());
            let oom = c.cgroup.as_ref().and_then(paddock_runtime::oom::kill_count);
            (c.paddock.root.clone(), unified, oom)
        };
        let s = paddock_runtime::sandbox::stats(&root, id)
            .map_err(|e| error(Code::UNKNOWN, format!("stats of {id}: {e}")))?;
        let any = if unified {
            convert_to_any(Box::new(metrics::v2(&s, oom)))
        } else {
            convert_to_any(Box::new(metrics::v1(&s, oom)))
        }
        .map_err(|e| error(Code::INTERNAL, format!("encode stats of {id}: {e}")))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }
}
