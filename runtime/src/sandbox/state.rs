use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{status_name, Loaded};
use crate::error::Result;
use crate::monitor::{self, ExitRecord};
use crate::oom;

/// A sandbox's state in runc's `state` format (plus nothing runc tools would trip over).
#[derive(Debug, Clone, Serialize)]
pub struct SandboxState {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<HashMap<String, String>>,
    #[serde(rename = "cgroupsPath", skip_serializing_if = "Option::is_none")]
    pub cgroups_path: Option<String>,
    /// The host identity the sandbox runs as, when leased from the pool.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// OOM kills in the sandbox so far (while its cgroup exists).
    #[serde(rename = "oomKills", skip_serializing_if = "Option::is_none")]
    pub oom_kills: Option<u64>,
    /// How a stopped sandbox ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ended>,
}

/// A leased host identity.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// In a user namespace: the number of ids mapped from `uid` on (container root is `uid`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<u32>,
}

/// Why a sandbox stopped.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ended {
    /// `exit`, `signal` or `oom`.
    pub reason: &'static str,
    #[serde(rename = "exitCode", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
}

/// The reason a sandbox ended: an OOM kill explains a SIGKILL (by the kernel, or by the
/// monitor enforcing policy `kill`).
pub fn ended(exit: Option<ExitRecord>, oom_kills: u64) -> Option<Ended> {
    match exit {
        Some(e) => Some(match e.signal() {
            Some(sig) => Ended {
                reason: if sig == libc::SIGKILL && oom_kills > 0 {
                    "oom"
                } else {
                    "signal"
                },
                exit_code: None,
                signal: Some(sig),
            },
            None => Ended {
                reason: "exit",
                exit_code: Some(e.code()),
                signal: None,
            },
        }),
        None if oom_kills > 0 => Some(Ended {
            reason: "oom",
            exit_code: None,
            signal: None,
        }),
        None => None,
    }
}

/// The state of one sandbox.
pub fn state(root: &Path, sandbox: &str) -> Result<SandboxState> {
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    let c = loaded.container.as_ref();
    let running = !matches!(status, libcontainer::container::ContainerStatus::Stopped);
    let pid = match (running, c.and_then(|c| c.pid())) {
        (true, Some(p)) => p.as_raw(),
        _ => 0,
    };
    let (bundle, rootfs) = match &loaded.record {
        Some(r) => (r.bundle.clone(), r.rootfs.clone()),
        None => (
            c.map(|c| c.bundle().clone()).unwrap_or_default(),
            PathBuf::new(),
        ),
    };
    let cg = loaded.cgroup()?;
    let oom_kills = cg.as_ref().and_then(oom::kill_count);
    let ended = if running {
        None
    } else {
        ended(
            monitor::wait_exit_record(
                &loaded.store.record_dir(sandbox),
                std::time::Duration::from_millis(500),
            ),
            oom_kills.unwrap_or(0),
        )
    };
    Ok(SandboxState {
        oci_version: "1.0.2".into(),
        id: sandbox.to_string(),
        pid,
        status: status_name(status).to_string(),
        bundle,
        rootfs,
        created: c
            .and_then(|c| c.created())
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        owner: String::new(),
        annotations: c.and_then(|c| c.state.annotations.clone()),
        cgroups_path: loaded.cgroups_path(),
        identity: loaded
            .record
            .as_ref()
            .and_then(|r| r.identity.as_ref())
            .map(|i| Identity {
                uid: i.uid,
                gid: i.gid,
                range: i.range,
            }),
        oom_kills,
        ended,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        let exit = |status| Some(ExitRecord { status });
        assert_eq!(
            ended(exit(3 << 8), 0).map(|e| (e.reason, e.exit_code)),
            Some(("exit", Some(3)))
        );
        assert_eq!(
            ended(exit(15), 0).map(|e| (e.reason, e.signal)),
            Some(("signal", Some(15)))
        );
        assert_eq!(ended(exit(9), 0).map(|e| e.reason), Some("signal"));
        assert_eq!(ended(exit(9), 1).map(|e| e.reason), Some("oom"));
        assert_eq!(ended(exit(0), 2).map(|e| e.reason), Some("exit"));
        assert_eq!(ended(None, 1).map(|e| e.reason), Some("oom"));
        assert_eq!(ended(None, 0), None);
    }
}
