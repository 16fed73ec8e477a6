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
        let (root, v2_dir, cgroup) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            let v2_dir = c.cgroup.as_ref().and_then(|cg| cg.v2_dir());
            (c.paddock.root.clone(), v2_dir, c.cgroup.clone())
        };
        let s = paddock_runtime::sandbox::stats(&root, id)
            .map_err(|e| error(Code::UNKNOWN, format!("stats of {id}: {e}")))?;
        let any = match v2_dir {
            Some(dir) => {
                let events = std::fs::read_to_string(dir.join("memory.events"))
                    .ok()
                    .and_then(|text| metrics::memory_events(&text));
                convert_to_any(Box::new(metrics::v2(&s, events)))
            }
            None => {
                let oom = cgroup.as_ref().and_then(paddock_runtime::oom::kill_count);
                convert_to_any(Box::new(metrics::v1(&s, oom)))
            }
        }
        .map_err(|e| error(Code::INTERNAL, format!("encode stats of {id}: {e}")))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }
}
