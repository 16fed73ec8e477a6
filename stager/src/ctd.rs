//! containerd over its socket (grpc, `containerd-client`): one connection, one namespace, and
//! an optional lease that keeps what is being written safe from containerd's garbage collector.
//! Every call is a thin wrapper that turns a grpc status into an [`Error`] naming the call.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest, KillRequest, ListContainersRequest,
    MetricsRequest, StartRequest, UpdateContainerRequest, WaitRequest,
};
use containerd_client::types::v1::Process;
use containerd_client::types::{Metric, Mount};
use containerd_client::Client;
use prost_types::{Any, FieldMask};
use tonic::{Code, Request, Status};

use crate::error::{Error, Result};

/// containerd's default socket.
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// The snapshotter instances use.
pub const SNAPSHOTTER: &str = "overlayfs";
/// How long an ordinary call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The runc shim's options (`containerd.runc.v1.Options`), the fields the stager sets.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RuncOptions {
    #[prost(string, tag = "6")]
    pub binary_name: String,
    #[prost(string, tag = "7")]
    pub root: String,
}

pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";

/// A connection to containerd in one namespace.
pub struct Ctd {
    pub client: Client,
    pub namespace: String,
    lease: Option<String>,
}

/// A containerd namespace name: letters, digits, `-`, `_`, `.`, starting with a letter or digit.
pub fn valid_namespace(ns: &str) -> bool {
    ns.len() <= 76
        && ns.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Ctd {
    /// Connects and asks containerd for its version, so that a wrong socket fails here, once.
    pub async fn connect(address: &Path, namespace: &str) -> Result<Self> {
        if !valid_namespace(namespace) {
            return Err(Error::Invalid(format!(
                "--namespace {namespace:?}: letters, digits, '-', '_' and '.' only"
            )));
        }
        let unreachable = |reason: String| Error::Unreachable {
            address: address.to_path_buf(),
            reason,
        };
        // a plain connect first: its io error says more than grpc's "transport error"
        std::os::unix::net::UnixStream::connect(address).map_err(|e| unreachable(e.to_string()))?;
        let channel =
            tokio::time::timeout(Duration::from_secs(10), containerd_client::connect(address))
                .await
                .map_err(|_| unreachable("no answer within 10s".into()))?
                .map_err(|e| unreachable(e.to_string()))?;
        let client = Client::from(channel);
        let mut version = client.version();
        let mut req = Request::new(());
        req.set_timeout(Duration::from_secs(10));
        version
            .version(req)
            .await
            .map_err(|s| unreachable(format!("version call failed: {}", s.message())))?;
        Ok(Ctd {
            client,
            namespace: namespace.to_string(),
            lease: None,
        })
    }

    /// A request in our namespace (and lease), with the ordinary timeout.
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = self.req_no_timeout(msg);
        r.set_timeout(CALL_TIMEOUT);
        r
    }

    /// A request with no deadline (waits, event streams).
    pub fn req_no_timeout<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        if let Some(lease) = &self.lease {
            if let Ok(v) = lease.parse() {
                r.metadata_mut().insert("containerd-lease", v);
            }
        }
        r
    }

    /// Takes a lease (expiring by itself after an hour should the stager die) under which new
    /// content and snapshots are safe from garbage collection until they are referenced.
    pub async fn take_lease(&mut self) -> Result<()> {
        use containerd_client::services::v1::CreateRequest;
        let id = format!(
            "paddock-stager-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let expire = rfc3339(SystemTime::now() + Duration::from_secs(3600));
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire)]);
        self.client
            .leases()
            .create(self.req(CreateRequest {
                id: id.clone(),
                labels,
            }))
            .await
            .map_err(|s| Error::containerd("create lease", &id, &s))?;
        self.lease = Some(id);
        Ok(())
    }

    /// Gives the lease back (what it protected is referenced by now, or garbage).
    pub async fn release_lease(&mut self) {
        use containerd_client::services::v1::DeleteRequest;
        if let Some(id) = self.lease.take() {
            let _ = self
                .client
                .leases()
                .delete(self.req(DeleteRequest { id, sync: false }))
                .await;
        }
    }

    // -- snapshots --------------------------------------------------------------------------

    pub async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        match self
            .client
            .snapshots()
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(Error::containerd("stat snapshot", key, &s)),
        }
    }

    pub async fn prepare_snapshot(&self, key: &str, parent: &str) -> Result<Vec<Mount>> {
        let resp = self
            .client
            .snapshots()
            .prepare(self.req(PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
                parent: parent.into(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| Error::containerd("prepare snapshot", key, &s))?;
        Ok(resp.into_inner().mounts)
    }

    pub async fn snapshot_mounts(&self, key: &str) -> Result<Vec<Mount>> {
        use containerd_client::services::v1::snapshots::MountsRequest;
        let resp = self
            .client
            .snapshots()
            .mounts(self.req(MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await
            .map_err(|s| Error::containerd("snapshot mounts", key, &s))?;
        Ok(resp.into_inner().mounts)
    }

    pub async fn commit_snapshot(&self, name: &str, key: &str) -> Result<()> {
        self.client
            .snapshots()
            .commit(self.req(CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: name.into(),
                key: key.into(),
                labels: HashMap::new(),
            }))
            .await
            .map_err(|s| Error::containerd("commit snapshot", name, &s))?;
        Ok(())
    }

    /// Removes a snapshot; one that is already gone is fine.
    pub async fn remove_snapshot(&self, key: &str) -> Result<()> {
        match self
            .client
            .snapshots()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::containerd("remove snapshot", key, &s)),
        }
    }

    // -- containers -------------------------------------------------------------------------

    pub async fn create_container(&self, c: Container) -> Result<()> {
        let id = c.id.clone();
        self.client
            .containers()
            .create(self.req(CreateContainerRequest { container: Some(c) }))
            .await
            .map_err(|s| Error::containerd("create container", &id, &s))?;
        Ok(())
    }

    pub async fn container(&self, id: &str) -> Result<Option<Container>> {
        match self
            .client
            .containers()
            .get(self.req(GetContainerRequest { id: id.into() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().container),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Error::containerd("get container", id, &s)),
        }
    }

    pub async fn containers(&self) -> Result<Vec<Container>> {
        let resp = self
            .client
            .containers()
            .list(self.req(ListContainersRequest { filters: vec![] }))
            .await
            .map_err(|s| Error::containerd("list containers", &self.namespace, &s))?;
        Ok(resp.into_inner().containers)
    }

    /// Sets the given labels of a container, leaving its other labels alone.
    pub async fn set_labels(&self, id: &str, labels: &[(&str, String)]) -> Result<()> {
        let container = Container {
            id: id.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
            ..Default::default()
        };
        let mask = FieldMask {
            paths: labels.iter().map(|(k, _)| format!("labels.{k}")).collect(),
        };
        self.client
            .containers()
            .update(self.req(UpdateContainerRequest {
                container: Some(container),
                update_mask: Some(mask),
            }))
            .await
            .map_err(|s| Error::containerd("update labels of", id, &s))?;
        Ok(())
    }

    /// Deletes a container record; one that is already gone is fine.
    pub async fn delete_container(&self, id: &str) -> Result<()> {
        match self
            .client
            .containers()
            .delete(self.req(DeleteContainerRequest { id: id.into() }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::containerd("delete container", id, &s)),
        }
    }

    // -- tasks ------------------------------------------------------------------------------

    /// Creates the task of container `c` with its rootfs and both output streams appended to
    /// `log` (the shim's `file://` io); returns the pid.
    pub async fn create_task(&self, c: &Container, rootfs: Vec<Mount>, log: &Path) -> Result<u32> {
        let uri = format!("file://{}", log.display());
        let options = c.runtime.as_ref().and_then(|r| r.options.clone());
        let resp = self
            .client
            .tasks()
            .create(self.req(CreateTaskRequest {
                container_id: c.id.clone(),
                rootfs,
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                options,
                ..Default::default()
            }))
            .await
            .map_err(|s| Error::containerd("create task", &c.id, &s))?;
        Ok(resp.into_inner().pid)
    }

    pub async fn start_task(&self, id: &str) -> Result<u32> {
        let resp = self
            .client
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| Error::containerd("start task", id, &s))?;
        Ok(resp.into_inner().pid)
    }

    /// The task's init process, `None` when the container has no task.
    pub async fn task(&self, id: &str) -> Result<Option<Process>> {
        match self
            .client
            .tasks()
            .get(self.req(GetRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(Error::containerd("get task", id, &s)),
        }
    }

    /// Signals every process of the task; a task that is gone is fine.
    pub async fn kill(&self, id: &str, signal: i32) -> Result<()> {
        match self
            .client
            .tasks()
            .kill(self.req(KillRequest {
                container_id: id.into(),
                exec_id: String::new(),
                signal: u32::try_from(signal).unwrap_or(9),
                all: true,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if gone(&s) => Ok(()),
            Err(s) => Err(Error::containerd("kill task", id, &s)),
        }
    }

    /// Waits until the task exits or `timeout` passes; `Some(exit status)` if it exited.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<u32>> {
        let mut tasks = self.client.tasks();
        let call = tasks.wait(self.req_no_timeout(WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        }));
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Ok(None),
            Ok(Ok(r)) => Ok(Some(r.into_inner().exit_status)),
            Ok(Err(s)) if gone(&s) => Ok(Some(0)),
            Ok(Err(s)) => Err(Error::containerd("wait for task", id, &s)),
        }
    }

    /// Deletes the (stopped) task; one that is gone is fine.
    pub async fn delete_task(&self, id: &str) -> Result<()> {
        match self
            .client
            .tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(Error::containerd("delete task", id, &s)),
        }
    }

    /// The task's metrics as the shim reports them (cgroup statistics), if it runs.
    pub async fn metrics(&self, id: &str) -> Result<Option<Metric>> {
        match self
            .client
            .tasks()
            .metrics(self.req(MetricsRequest {
                filters: vec![format!("id=={id}")],
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().metrics.into_iter().find(|m| m.id == id)),
            Err(s) if gone(&s) => Ok(None),
            Err(s) => Err(Error::containerd("metrics of", id, &s)),
        }
    }
}

/// The container-level runtime record: name, and the shim options both containerd's runc shim
/// and paddock's shim read (`containerd.runc.v1.Options`): the runc-compatible binary the shim
/// execs (`BinaryName`) and its state root (`Root`).
pub fn runtime(name: &str, binary: Option<&Path>, root: Option<&Path>) -> Runtime {
    let options = (binary.is_some() || root.is_some()).then(|| {
        let opts = RuncOptions {
            binary_name: binary.map(|p| p.display().to_string()).unwrap_or_default(),
            root: root.map(|p| p.display().to_string()).unwrap_or_default(),
        };
        Any {
            type_url: RUNC_OPTIONS_TYPE.into(),
            value: prost::Message::encode_to_vec(&opts),
        }
    });
    Runtime {
        name: name.into(),
        options,
    }
}

/// Whether a status means the task (or container) is not there (any more).
fn gone(s: &Status) -> bool {
    s.code() == Code::NotFound
        || (s.code() == Code::FailedPrecondition && s.message().contains("not running"))
        || s.message().contains("process already finished")
}

/// `2026-11-22T05:00:00Z` for a time.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_323_600);
        assert_eq!(rfc3339(t), "2026-11-22T05:00:00Z");
    }

    #[test]
    fn namespaces() {
        assert!(valid_namespace("paddock"));
        assert!(valid_namespace("paddock-test-1.2"));
        assert!(!valid_namespace("-x"));
        assert!(!valid_namespace("a/b"));
        assert!(!valid_namespace(""));
    }

    #[test]
    fn runc_options() {
        let rt = runtime(
            "io.containerd.runc.v2",
            Some(Path::new("/usr/bin/paddock")),
            None,
        );
        let any = rt.options.unwrap();
        assert_eq!(any.type_url, RUNC_OPTIONS_TYPE);
        let back: RuncOptions = prost::Message::decode(any.value.as_slice()).unwrap();
        assert_eq!(back.binary_name, "/usr/bin/paddock");
        let paddock = "io.containerd.paddock.v2";
        assert!(runtime(paddock, None, None).options.is_none());
        assert!(runtime(paddock, None, Some(Path::new("/r")))
            .options
            .is_some());
    }
}
