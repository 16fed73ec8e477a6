//! The sandbox lifecycle, one file per verb (create, start, state, kill, delete, exec, pause,
//! resume, update, events, ps, list). Each verb takes the state root and the sandbox id.

use std::fs::File;
use std::path::Path;

use libcontainer::container::{Container, ContainerStatus};
use nix::fcntl::{Flock, FlockArg};

use crate::cgroups::{Layout, SandboxCgroup};
use crate::error::{Error, Result};
use crate::id;
use crate::store::{Record, Store};

mod create;
mod delete;
mod events;
mod exec;
mod kill;
mod list;
mod pause;
mod ps;
mod resume;
mod start;
mod state;
mod update;

pub use create::{create, CreateOptions};
pub use delete::delete;
pub use events::{events, stats};
pub use exec::{exec, ExecOptions};
pub use kill::kill;
pub use list::list;
pub use pause::pause;
pub use ps::pids;
pub use resume::resume;
pub use start::start;
pub use state::{state, SandboxState};
pub use update::update;

/// Drops the calling process's supplementary groups before it makes a sandbox process: the
/// engine calls setgroups only for a non-empty `additionalGids`, so a process without any would
/// otherwise keep the caller's (a `paddock` started with `adm` or `sudo` in its groups would
/// hand them to every pool identity). A non-root caller has nothing to drop them with and keeps
/// them.
pub(crate) fn drop_caller_groups() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    nix::unistd::setgroups(&[]).map_err(|e| Error::sys("setgroups([]) of the caller", e))
}

/// A sandbox as found on disk: paddock's record and libcontainer's state, either of which may
/// be missing after a crash half-way through create or delete.
pub(crate) struct Loaded {
    pub store: Store,
    pub record: Option<Record>,
    pub container: Option<Container>,
}

impl Loaded {
    pub fn open(root: &Path, sandbox: &str) -> Result<Self> {
        id::validate(sandbox)?;
        let store = Store::new(root);
        let record = store.read(sandbox)?;
        let dir = store.container_dir(sandbox);
        let container = if dir.join("state.json").exists() {
            Some(load_container(dir, sandbox)?)
        } else {
            None
        };
        if record.is_none() && container.is_none() {
            return Err(Error::NotFound(sandbox.to_string()));
        }
        Ok(Self {
            store,
            record,
            container,
        })
    }

    pub fn status(&self) -> ContainerStatus {
        self.container
            .as_ref()
            .map(|c| c.status())
            .unwrap_or(ContainerStatus::Stopped)
    }

    /// The container, or an error saying the sandbox never finished creating.
    pub fn container_mut(
        &mut self,
        id: &str,
        action: &'static str,
        wanted: &'static str,
    ) -> Result<&mut Container> {
        self.container
            .as_mut()
            .ok_or_else(|| wrong_state(id, ContainerStatus::Stopped, action, wanted))
    }

    pub fn cgroups_path(&self) -> Option<String> {
        if let Some(r) = &self.record {
            return Some(r.cgroups_path.clone());
        }
        self.container
            .as_ref()
            .and_then(|c| c.spec().ok())
            .map(|cfg| cfg.cgroup_path.to_string_lossy().into_owned())
    }

    pub fn cgroup(&self) -> Result<Option<SandboxCgroup>> {
        match self.cgroups_path() {
            Some(p) => Ok(Some(SandboxCgroup::new(Layout::detect()?, &p))),
            None => Ok(None),
        }
    }
}

/// libcontainer rewrites `state.json` in place (truncate, then write), so a reader racing a
/// `start` or `pause` can see it empty: retry briefly before calling it an error.
fn load_container(dir: std::path::PathBuf, sandbox: &str) -> Result<Container> {
    let mut tries = 0;
    loop {
        match Container::load(dir.clone()) {
            Ok(c) => return Ok(c),
            Err(_) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(Error::container("load", sandbox, &e)),
        }
    }
}

pub(crate) fn status_name(s: ContainerStatus) -> &'static str {
    match s {
        ContainerStatus::Creating => "creating",
        ContainerStatus::Created => "created",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopped => "stopped",
        ContainerStatus::Paused => "paused",
    }
}

pub(crate) fn wrong_state(
    id: &str,
    status: ContainerStatus,
    action: &'static str,
    wanted: &'static str,
) -> Error {
    Error::WrongState {
        id: id.to_string(),
        status: status_name(status).to_string(),
        action,
        wanted,
    }
}

/// The node lock: serialises creation and removal of shared cgroup parents (`/paddock/<app>`).
pub(crate) struct NodeLock(#[allow(dead_code)] Flock<File>);

pub(crate) const NODE_LOCK: &str = "/run/paddock/node.lock";

impl NodeLock {
    pub fn take(exclusive: bool) -> Result<Self> {
        let path = Path::new(NODE_LOCK);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("open", path, e))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg)
            .map(Self)
            .map_err(|(_, e)| Error::sys("flock node lock", e))
    }
}
