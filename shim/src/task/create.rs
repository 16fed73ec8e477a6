//! Create: mount the rootfs containerd prepared, open the stdio, `paddock create`, then watch
//! the sandbox's cgroup for OOM kills.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_shim::api::{CreateTaskRequest, CreateTaskResponse};
use containerd_shim::protos::events::task::{TaskCreate, TaskIO};
use containerd_shim::protos::ttrpc::{self, Code};
use paddock_runtime::cgroups::{Layout, SandboxCgroup};
use paddock_runtime::store::Store;

use super::{error, Service};
use crate::console::{Console, ConsoleSocket};
use crate::container::{Container, Process, StdioPaths};
use crate::options;
use crate::runtime::{read_pid, Paddock};
use crate::stdio::{self, Held};

/// How long the runtime has to send the terminal once create returned.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Service {
    pub(crate) fn create_(&self, req: &CreateTaskRequest) -> ttrpc::Result<CreateTaskResponse> {
        let id = req.id.clone();
        paddock_runtime::id::validate(&id).map_err(|e| error(Code::INVALID_ARGUMENT, e))?;
        if !req.checkpoint.is_empty() {
            return Err(error(
                Code::UNIMPLEMENTED,
                format!("create {id} from a checkpoint: not supported by paddock"),
            ));
        }
        {
            let mut t = self.shared.lock();
            if t.containers.contains_key(&id) || t.creating.contains(&id) {
                return Err(error(
                    Code::ALREADY_EXISTS,
                    format!("container {id} already exists"),
                ));
            }
            t.creating.push(id.clone());
        }
        let made = self.make(req);
        let mut t = self.shared.lock();
        t.creating.retain(|c| *c != id);
        let c = made?;
        let pid = c.init.pid;
        self.shared.events.create(TaskCreate {
            container_id: id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            pid,
            ..Default::default()
        });
        t.containers.insert(id, c);
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn make(&self, req: &CreateTaskRequest) -> ttrpc::Result<Container> {
        let id = &req.id;
        let ns = &self.shared.namespace;
        let bundle = PathBuf::from(&req.bundle);
        let (binary, root) = options::runc_options(req.options.as_ref())
            .map_err(|e| error(Code::INVALID_ARGUMENT, e))?;
        let resolved = options::resolve(&binary, &root, ns, options::sibling_binary());
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            error(Code::INTERNAL, format!("create {id}: {what}: {e}"))
        };
        options::save(&bundle, &resolved)
            .map_err(|e| internal("record options in the bundle", &e))?;
        std::fs::create_dir_all(&resolved.root)
            .map_err(|e| internal(&format!("create {}", resolved.root.display()), &e))?;
        // removed at exit once empty, whether or not a sandbox was made in it
        self.shared.lock().roots.insert(resolved.root.clone());
        let rootfs = bundle.join("rootfs");
        let mounted = mount_rootfs(req, &rootfs).map_err(|e| internal("mount rootfs", &e))?;
        let paddock = Paddock {
            binary: resolved.binary,
            root: resolved.root,
        };
        match self.run_create(req, &bundle, &paddock) {
            Ok(c) => Ok(c),
            Err(e) => {
                if mounted {
                    unmount_rootfs(&rootfs);
                }
                Err(e)
            }
        }
    }

    fn run_create(
        &self,
        req: &CreateTaskRequest,
        bundle: &Path,
        paddock: &Paddock,
    ) -> ttrpc::Result<Container> {
        let id = &req.id;
        let ns = &self.shared.namespace;
        let pid_file = bundle.join("init.pid");
        let mut args: Vec<OsString> = vec![
            "create".into(),
            "--bundle".into(),
            bundle.into(),
            "--pid-file".into(),
            pid_file.clone().into(),
        ];
        let mut held = Held::default();
        let mut console = None;
        let failed = |e: String| error(Code::UNKNOWN, e);
        if req.terminal {
            let sock = ConsoleSocket::bind(bundle).map_err(failed)?;
            args.push("--console-socket".into());
            args.push(sock.path().into());
            args.push(id.into());
            paddock.run(&args, None, bundle).map_err(failed)?;
            let attached = sock
                .receive(CONSOLE_TIMEOUT)
                .and_then(|m| Console::attach(m, &req.stdin, &req.stdout, &mut held));
            match attached {
                Ok(c) => console = Some(c),
                Err(e) => {
                    force_delete(paddock, id, bundle);
                    return Err(failed(format!("create {id}: terminal: {e}")));
                }
            }
        } else {
            let (fds, h) = stdio::open(&req.stdin, &req.stdout, &req.stderr, (id, ns))
                .map_err(|e| error(Code::INVALID_ARGUMENT, format!("create {id}: stdio: {e}")))?;
            held = h;
            args.push(id.into());
            paddock.run(&args, Some(fds), bundle).map_err(failed)?;
        }
        let pid = match read_pid(&pid_file) {
            Ok(p) => p,
            Err(e) => {
                force_delete(paddock, id, bundle);
                return Err(failed(format!("create {id}: {e}")));
            }
        };
        let (cgroup, app) = sandbox_cgroup(&paddock.root, id);
        let oom_seen = cgroup
            .as_ref()
            .and_then(paddock_runtime::oom::kill_count)
            .unwrap_or(0);
        if let Some(cg) = &cgroup {
            match paddock_runtime::oom::Watcher::new(cg, app.as_deref()) {
                Ok(w) => self.oom.add(id, w),
                Err(e) => log::warn!("container {id}: no OOM watcher: {e}"),
            }
        }
        Ok(Container {
            id: id.clone(),
            bundle: bundle.to_path_buf(),
            paddock: paddock.clone(),
            init: Process {
                pid,
                stdio: StdioPaths {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                },
                held,
                console,
                ..Default::default()
            },
            execs: Default::default(),
            paused: false,
            cgroup,
            oom_seen,
        })
    }
}

/// The sandbox's cgroup and its app parent (`/paddock/<app>`), from paddock's record.
fn sandbox_cgroup(root: &Path, id: &str) -> (Option<SandboxCgroup>, Option<String>) {
    let rec = match Store::new(root).read(id) {
        Ok(Some(r)) => r,
        _ => return (None, None),
    };
    let Ok(layout) = Layout::detect() else {
        return (None, None);
    };
    let app = rec
        .app
        .as_ref()
        .map(|a| format!("/{}/{a}", paddock_runtime::policy::CGROUP_ROOT));
    (Some(SandboxCgroup::new(layout, &rec.cgroups_path)), app)
}

fn force_delete(paddock: &Paddock, id: &str, bundle: &Path) {
    let args: Vec<OsString> = vec!["delete".into(), "--force".into(), id.into()];
    if let Err(e) = paddock.run(&args, None, bundle) {
        log::warn!("clean-up of {id}: {e}");
    }
}

/// Mounts containerd's rootfs mounts at `<bundle>/rootfs`; false if there were none (the
/// bundle brought its own rootfs).
fn mount_rootfs(req: &CreateTaskRequest, rootfs: &Path) -> Result<bool, String> {
    if req.rootfs.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(rootfs).map_err(|e| format!("create {}: {e}", rootfs.display()))?;
    for m in &req.rootfs {
        if let Err(e) = crate::rootfs::mount_one(&m.type_, &m.source, &m.options, rootfs) {
            unmount_rootfs(rootfs);
            return Err(format!("{} on {}: {e}", m.type_, rootfs.display()));
        }
    }
    Ok(true)
}

/// Unmounts everything at or below `rootfs`.
pub(crate) fn unmount_rootfs(rootfs: &Path) {
    if let Err(e) = containerd_shim::mount::umount_recursive(rootfs.to_str(), 0) {
        log::warn!("unmount {}: {e}", rootfs.display());
    }
}
