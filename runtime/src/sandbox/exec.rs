use std::collections::HashMap;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::ContainerStatus;
use libcontainer::syscall::syscall::SyscallType;

use super::{wrong_state, Loaded};
use crate::error::{Error, Result};
use crate::tenant::Confinement;

/// Options of `exec` (runc's flags).
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// A process.json; when given, `args` and the other process fields are ignored.
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: HashMap<String, String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<u32>,
    pub group: Option<u32>,
    pub additional_gids: Vec<u32>,
    pub capabilities: Vec<String>,
    pub no_new_privs: bool,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: i32,
    pub detach: bool,
}

/// Runs an extra process in a created or running sandbox and returns its pid. For a sandbox
/// with a user namespace the calling process first joins that namespace (it must be
/// single-threaded: the `paddock` command is), so that the process runs as the sandbox's ids.
pub fn exec(root: &Path, sandbox: &str, opts: &ExecOptions) -> Result<i32> {
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    if !matches!(status, ContainerStatus::Created | ContainerStatus::Running) {
        return Err(wrong_state(sandbox, status, "exec", "running"));
    }
    if opts.process.is_none() && opts.args.is_empty() {
        return Err(Error::Invalid(
            "exec needs a command or --process".to_string(),
        ));
    }
    if let Some(p) = &opts.process {
        if !p.exists() {
            return Err(Error::io(
                "read process spec",
                p,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
    }
    // As in create: the process's cgroup move need not wait for a grace period of its own.
    let warmup = crate::migration::Warmup::start(&crate::cgroups::Layout::detect()?);
    // The sandbox's own profile applies to processes exec'd into it, and without --user they
    // run as the sandbox's user (its pool identity), as runc does; libcontainer alone would
    // pick uid 0.
    let spec_path = loaded.store.record_dir(sandbox).join("config.json");
    let spec = match std::fs::read(&spec_path) {
        Ok(data) => Some(crate::bundle::parse_spec(&spec_path, &data)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("read", spec_path, e)),
    };
    let filter = match &spec {
        Some(spec) => super::create::seccomp_filter(spec)?,
        None => None,
    };
    let spec_user = spec
        .as_ref()
        .and_then(|s| s.process().as_ref())
        .map(|p| p.user().clone());
    // A sandbox with a pool identity holds exec'd processes to it (tenant.rs).
    let confinement = match (loaded.record.as_ref(), spec.as_ref()) {
        (Some(r), Some(spec)) => r.identity.as_ref().and_then(|idr| {
            let process = spec.process().as_ref()?;
            Some(Confinement::of(process, idr.range.is_some()))
        }),
        _ => None,
    };
    let (user, group) = match (&confinement, opts.user, &spec_user) {
        (Some(c), ..) => {
            let (u, g) = c.user(opts.user, opts.group);
            (Some(u), Some(g))
        }
        (None, None, Some(u)) => (Some(u.uid()), opts.group.or(Some(u.gid()))),
        _ => (opts.user, opts.group),
    };
    let (capabilities, additional_gids) = match &confinement {
        Some(c) if !c.userns => (Vec::new(), Vec::new()),
        Some(_) => (Vec::new(), opts.additional_gids.clone()),
        None => (opts.capabilities.clone(), opts.additional_gids.clone()),
    };
    let given = match &opts.process {
        Some(p) => Some((p, read_process(p)?)),
        None => None,
    };
    // The process's own OOM score, set here first so that a refusal says what was refused.
    if let Some((path, process)) = &given {
        super::create::set_own_oom_score(path, "oomScoreAdj", process.oom_score_adj())?;
    }
    let process = match (&confinement, given) {
        (Some(c), Some((_, mut process))) => {
            c.apply(&mut process);
            Some(confined_process(
                &process,
                &loaded.store.record_dir(sandbox),
            )?)
        }
        (_, given) => given.map(|(p, _)| ProcessFile(p.clone(), false)),
    };
    super::drop_caller_groups()?;
    crate::nss::files_only()?;
    // libcontainer's tenant does not join the init's user namespace: paddock does (userns.rs).
    if let Some(init) = loaded.container.as_ref().and_then(|c| c.pid()) {
        crate::userns::join_of(init.as_raw())?;
    }
    let fail = |e: &(dyn std::error::Error + 'static)| Error::container("exec in", sandbox, e);
    let pid = ContainerBuilder::new(sandbox.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| fail(&e))?
        .with_pid_file(opts.pid_file.as_ref())
        .map_err(|e| fail(&e))?
        .with_console_socket(opts.console_socket.as_ref())
        .with_preserved_fds(opts.preserve_fds)
        .with_executor(super::create::executor(filter))
        .as_tenant()
        .with_detach(opts.detach)
        .with_cwd(opts.cwd.as_ref())
        .with_env(opts.env.clone())
        .with_process(process.as_ref().map(|p| &p.0))
        .with_no_new_privs(opts.no_new_privs || confinement.is_some())
        .with_capabilities(capabilities)
        .with_container_args(opts.args.clone())
        .with_user(user)
        .with_group(group)
        .with_additional_gids(additional_gids)
        .build()
        .map_err(|e| fail(&e));
    warmup.finish();
    drop(process);
    Ok(pid?.as_raw())
}

/// A process spec file, parsed.
fn read_process(path: &Path) -> Result<oci_spec::runtime::Process> {
    let data = std::fs::read(path).map_err(|e| Error::io("read process spec", path, e))?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::Invalid(format!("process spec {}: malformed: {e}", path.display())))
}

/// A process spec handed to the engine; one paddock wrote (`.1`) is removed when dropped.
struct ProcessFile(PathBuf, bool);

impl Drop for ProcessFile {
    fn drop(&mut self) {
        if self.1 {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The caller's process spec with the sandbox's confinement applied, written beside the
/// sandbox's record for the engine to read.
fn confined_process(
    process: &oci_spec::runtime::Process,
    record_dir: &Path,
) -> Result<ProcessFile> {
    let out = record_dir.join(format!("exec-process-{}.json", std::process::id()));
    let data = serde_json::to_vec(process)
        .map_err(|e| Error::Invalid(format!("encode {}: {e}", out.display())))?;
    std::fs::write(&out, data).map_err(|e| Error::io("write", &out, e))?;
    Ok(ProcessFile(out, true))
}
