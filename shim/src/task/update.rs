//! Update: new resources (containerd sends the OCI `LinuxResources` as JSON) through
//! `paddock update --resources`.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};

use containerd_shim::api::{Empty, UpdateTaskRequest};
use containerd_shim::protos::ttrpc::{self, Code};

use super::{error, Service};

static SEQ: AtomicU64 = AtomicU64::new(0);

impl Service {
    pub(crate) fn update_(&self, req: &UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let id = req.id.as_str();
        let resources = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| error(Code::INVALID_ARGUMENT, format!("update {id}: no resources")))?;
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&resources) {
            return Err(error(
                Code::INVALID_ARGUMENT,
                format!("update {id}: the resources are not JSON: {e}"),
            ));
        }
        let (paddock, bundle) = {
            let mut t = self.shared.lock();
            let c = super::container(&mut t, id)?;
            (c.paddock.clone(), c.bundle.clone())
        };
        let file = bundle.join(format!(
            ".update-{}.json",
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, &resources).map_err(|e| {
            error(
                Code::INTERNAL,
                format!("update {id}: write {}: {e}", file.display()),
            )
        })?;
        let args: Vec<OsString> = vec![
            "update".into(),
            "--resources".into(),
            file.clone().into(),
            id.into(),
        ];
        let r = paddock.run(&args, None, &bundle);
        let _ = std::fs::remove_file(&file);
        r.map(|()| Empty::new())
            .map_err(|e| error(Code::UNKNOWN, e))
    }
}
