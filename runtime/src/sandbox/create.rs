use std::fs;
use std::path::{Path, PathBuf};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use paddock_quota::Owner;

use super::{delete, NodeLock};
use crate::access;
use crate::acl;
use crate::bundle;
use crate::cgroups::{Layout, SandboxCgroup};
use crate::config::NodeConfig;
use crate::cpu;
use crate::disk;
use crate::error::{Error, Result};
use crate::executor::SandboxExecutor;
use crate::id;
use crate::identity::{self, LeaseKind};
use crate::memory;
use crate::migration;
use crate::monitor;
use crate::network;
use crate::policy;
use crate::seccomp;
use crate::store::{self, IdentityRef, Record, Store};

/// Options of `create` (runc's flags).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    pub systemd_cgroup: bool,
    /// `false` when the caller stays attached (`run` without `--detach`).
    pub detach: bool,
}

impl CreateOptions {
    pub fn new(bundle: impl Into<PathBuf>) -> Self {
        Self {
            bundle: bundle.into(),
            detach: true,
            ..Self::default()
        }
    }
}

/// Creates a sandbox from a bundle and returns the pid of its init, which waits for `start`.
/// On any failure everything created so far is torn down again.
pub fn create(root: &Path, sandbox: &str, opts: &CreateOptions) -> Result<i32> {
    id::validate(sandbox)?;
    let store = Store::new(root);
    if store.exists(sandbox) {
        return Err(Error::Exists(sandbox.to_string()));
    }
    let layout = Layout::detect()?;
    // The engine's first cgroup move waits for a grace period: let it run alongside the rest.
    let warmup = migration::Warmup::start(&layout);
    let bundle_dir = fs::canonicalize(&opts.bundle).map_err(|e| Error::Bundle {
        path: opts.bundle.clone(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "does not exist".into(),
            _ => e.to_string(),
        },
    })?;
    let spec = bundle::load_spec(&bundle_dir)?;
    let rootfs = bundle::rootfs(&bundle_dir, &spec)?;
    let mut plan = policy::plan(spec, sandbox, opts.systemd_cgroup)?;
    let filter = seccomp_filter(&plan.spec)?;
    // Before anything exists: a score this process may not set leaves nothing behind.
    let own_oom_score = set_oom_score(&bundle_dir, &plan.spec)?;
    tracing::debug!(id = sandbox, "planned");
    if let Some(mut r) = plan.spec.root().clone() {
        r.set_path(rootfs.clone());
        plan.spec.set_root(Some(r));
    }

    // Every sandbox is under the node's CPU policy, so the node config is always read.
    let identity_wanted = plan.pool_user || plan.userns;
    let config = Some(NodeConfig::load_default()?);
    let key = store::node_key(root, sandbox);
    let volume = match (&plan.disk, &config) {
        (Some(d), Some(config)) => {
            let cfg = config.quota.clone();
            let readonly = plan.spec.root().as_ref().and_then(|r| r.readonly()) == Some(true);
            let vref = disk::VolumeRef {
                id: key.clone(),
                backend: disk::backend_for(&cfg)?,
                store: cfg.store.clone(),
                rootfs: disk::quota_rootfs(&cfg, &rootfs, readonly),
            };
            let dest = d.path.clone().unwrap_or(cfg.mount_path);
            Some((vref, d.clone(), dest))
        }
        _ => None,
    };

    // Checked before anything exists: a bad deny path or an unreachable rootfs leaves nothing.
    let deny = match (&config, identity_wanted) {
        (Some(config), true) => {
            if plan.userns {
                let mut paths: Vec<&Path> = vec![&rootfs, root];
                // A bind source itself needs no search, the directories above it do.
                paths.extend(access::bind_sources(&plan.spec).filter_map(Path::parent));
                if let Some(parent) = volume.as_ref().and_then(|(v, _, _)| v.store.parent()) {
                    paths.push(parent);
                }
                access::check_reachable(&paths)?;
            }
            let pool = config.identity.base..=config.identity.last();
            access::deny_targets(&plan.spec, &rootfs, &plan.deny, &config.acl.deny, &pool)?
        }
        _ => Vec::new(),
    };

    super::drop_caller_groups()?;
    crate::nss::files_only()?;
    let cpu_node = cpu::Node::new(&config.as_ref().map(|c| c.cpu.clone()).unwrap_or_default())?;
    let record_dir = store.create(sandbox)?;
    let identity = match (&config, identity_wanted) {
        (Some(config), true) => match lease_identity(&mut plan, config, &key) {
            Ok(idr) => Some(idr),
            Err(e) => {
                let _ = identity::pool(&config.identity).release(&key);
                let _ = store.remove(sandbox);
                return Err(e);
            }
        },
        _ => None,
    };
    let mut record = Record {
        id: sandbox.to_string(),
        bundle: bundle_dir,
        rootfs,
        cgroups_path: plan.cgroups_path.clone(),
        app: plan.app.clone(),
        volume: volume.as_ref().map(|(v, _, _)| v.clone()),
        identity,
        access: None,
        cpu_state: config.as_ref().map(|c| c.cpu.state_dir.clone()),
    };
    let admin_gid = config.as_ref().and_then(|c| c.acl.admin_gid);
    let result = store
        .write(&record)
        .and_then(|()| cpu::place(&cpu_node, &layout, &key, sandbox, &record_dir, &mut plan))
        .and_then(|()| deny_paths(&store, &mut record, &plan.spec, &deny, config.as_ref()))
        .and_then(|()| match &volume {
            Some((vref, d, dest)) => {
                let path = attach_volume(&mut plan.spec, vref, d, dest, admin_gid)?;
                match (plan.userns, config.as_ref()) {
                    (true, Some(config)) => {
                        bundle::make_mount_point(&record.rootfs, dest)?;
                        reach_volume(&store, &mut record, &plan.spec, config, &vref.store, &path)
                    }
                    _ => Ok(()),
                }
            }
            None => Ok(()),
        })
        .and_then(|()| write_spec(&record_dir, &plan.spec))
        .and_then(|()| {
            let built = build(root, sandbox, &record_dir, opts, plan.app.is_some(), filter);
            warmup.finish();
            built
        })
        .and_then(|pid| {
            tracing::debug!(id = sandbox, pid, "engine created the init");
            // The init has the spec's score; the monitor forked next keeps paddock's own.
            if let Some(own) = own_oom_score {
                restore_oom_score(own)?;
            }
            if new_network_namespace(&plan.spec) {
                network::loopback_up(pid)?;
            }
            settle(&layout, &record, &plan, &record_dir, pid)?;
            cpu::settle(&cpu_node, &layout, &key)?;
            tracing::debug!(id = sandbox, "settled");
            Ok(pid)
        });
    match result {
        Ok(pid) => Ok(pid),
        Err(err) => {
            if let Err(cleanup) = delete(root, sandbox, true) {
                tracing::error!(id = sandbox, "cleanup after failed create: {cleanup}");
            }
            Err(err)
        }
    }
}

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Sets the spec's `process.oomScoreAdj` on this process, which the engine forks the sandbox
/// from (the engine writes the same file again; children inherit the score). Returns the score
/// this process had, to be restored once the init exists.
fn set_oom_score(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<Option<i32>> {
    let adj = spec.process().as_ref().and_then(|p| p.oom_score_adj());
    set_own_oom_score(&bundle.join("config.json"), "process.oomScoreAdj", adj)
}

/// Gives this process the score `adj` (from the field `field` of the spec at `spec_path`),
/// before the engine does the same, and returns the score it had. Lowering a score below what
/// the process may set needs CAP_SYS_RESOURCE: the error says so, naming the value and the
/// file.
pub(crate) fn set_own_oom_score(
    spec_path: &Path,
    field: &str,
    adj: Option<i32>,
) -> Result<Option<i32>> {
    let Some(adj) = adj else {
        return Ok(None);
    };
    let own = fs::read_to_string(OOM_SCORE_ADJ)
        .map_err(|e| Error::io("read", OOM_SCORE_ADJ, e))?
        .trim()
        .parse::<i32>()
        .map_err(|e| Error::Invalid(format!("{OOM_SCORE_ADJ}: {e}")))?;
    fs::write(OOM_SCORE_ADJ, adj.to_string()).map_err(|e| Error::Spec {
        path: spec_path.to_path_buf(),
        reason: format!(
            "{field} {adj}: write {OOM_SCORE_ADJ}: {e}{}",
            oom_score_hint(adj, own, e.kind())
        ),
    })?;
    Ok(Some(own))
}

/// Why a score was refused, when the kernel's reason is the usual one.
fn oom_score_hint(adj: i32, own: i32, kind: std::io::ErrorKind) -> &'static str {
    if kind == std::io::ErrorKind::PermissionDenied && adj < own {
        " (lowering an OOM score needs CAP_SYS_RESOURCE, which paddock lacks here)"
    } else {
        ""
    }
}

/// Gives this process its own score back (raising it, or lowering it to no less than it had:
/// no capability is needed either way).
fn restore_oom_score(own: i32) -> Result<()> {
    fs::write(OOM_SCORE_ADJ, own.to_string()).map_err(|e| Error::io("write", OOM_SCORE_ADJ, e))
}

/// Leases the sandbox's identity (a range for a user namespace) and makes the spec run as it.
fn lease_identity(plan: &mut policy::Plan, config: &NodeConfig, key: &str) -> Result<IdentityRef> {
    let kind = if plan.userns {
        LeaseKind::Userns
    } else {
        LeaseKind::Single
    };
    let lease = identity::pool(&config.identity).lease(key, kind)?;
    if plan.userns {
        policy::map_userns(&mut plan.spec, lease.uid, lease.count)?;
    } else {
        policy::run_as(&mut plan.spec, lease.uid, lease.gid);
    }
    Ok(IdentityRef {
        uid: lease.uid,
        gid: lease.gid,
        lease_dir: config.identity.lease_dir.clone(),
        range: plan.userns.then_some(lease.count),
    })
}

/// Denies `targets` to the sandbox's host uids (its identity; in a user namespace also the
/// app's user), recording them in the sandbox record before adding them.
fn deny_paths(
    store: &Store,
    record: &mut Record,
    spec: &oci_spec::runtime::Spec,
    targets: &[PathBuf],
    config: Option<&NodeConfig>,
) -> Result<()> {
    let (Some(uids), Some(config)) = (sandbox_uids(record, spec), config) else {
        return Ok(());
    };
    if targets.is_empty() {
        return Ok(());
    }
    let lock = access::lock_file(&config.identity.lease_dir);
    let aref = access::deny_all(&uids, targets, &lock, |aref| {
        record.access = Some(aref.clone());
        store.write(record)
    })?;
    record.access = Some(aref);
    Ok(())
}

/// The host uids ACL entries name for the sandbox: its identity (a user namespace's root) and
/// the host uid of its process user, when another.
fn sandbox_uids(record: &Record, spec: &oci_spec::runtime::Spec) -> Option<Vec<u32>> {
    let mut uids = vec![record.identity.as_ref()?.uid];
    if let Some((uid, _)) = policy::host_user(spec) {
        if !uids.contains(&uid) {
            uids.push(uid);
        }
    }
    Some(uids)
}

/// A user namespace's init is an unprivileged host uid: let it through the quota store's
/// private directories down to its own volume (recorded before added, removed at delete).
fn reach_volume(
    store: &Store,
    record: &mut Record,
    spec: &oci_spec::runtime::Spec,
    config: &NodeConfig,
    quota_store: &Path,
    volume: &Path,
) -> Result<()> {
    let Some(uids) = sandbox_uids(record, spec) else {
        return Ok(());
    };
    let mut aref = record.access.clone().unwrap_or_else(|| access::AccessRef {
        uids,
        denied: Vec::new(),
        searchable: Vec::new(),
        lock: access::lock_file(&config.identity.lease_dir),
    });
    access::allow_search_to(&mut aref, quota_store, volume, |a| {
        record.access = Some(a.clone());
        store.write(record)
    })?;
    record.access = Some(aref);
    Ok(())
}

/// What paddock adds around the engine once the init exists: app-level memory, the v2 OOM
/// group, and the monitor (exit status, OOM events, OOM policy).
fn settle(
    layout: &Layout,
    record: &Record,
    plan: &policy::Plan,
    record_dir: &Path,
    init: i32,
) -> Result<()> {
    let cg = SandboxCgroup::new(layout.clone(), &record.cgroups_path);
    let app_cgroup = plan
        .app
        .as_ref()
        .map(|app| format!("/{}/{app}", policy::CGROUP_ROOT));
    if let (Some(limit), Some(app)) = (plan.app_memory, &app_cgroup) {
        memory::set_limit(&cg.layout, app, limit)?;
    }
    if let Some(m) = plan
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
    {
        memory::enforce_no_swap(&cg.layout, &record.cgroups_path, m)?;
    }
    if plan.oom == policy::OomPolicy::Kill {
        if let Some(dir) = cg.v2_dir() {
            let file = dir.join("memory.oom.group");
            fs::write(&file, "1").map_err(|e| Error::io("write", file, e))?;
        }
    }
    tracing::debug!("limits set");
    monitor::spawn(&monitor::Watch {
        record_dir,
        cgroup: &cg,
        app_cgroup,
        init,
        policy: plan.oom,
    })?;
    Ok(())
}

pub(crate) fn executor(filter: Option<seccomp::BpfProgram>) -> SandboxExecutor {
    match filter {
        Some(f) => SandboxExecutor::with_seccomp(f),
        None => SandboxExecutor::default(),
    }
}

/// A network namespace of its own (not one joined by path).
fn new_network_namespace(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Network && n.path().is_none()
            })
        })
}

fn write_spec(dir: &Path, spec: &oci_spec::runtime::Spec) -> Result<()> {
    let path = dir.join("config.json");
    let data = serde_json::to_vec(spec)
        .map_err(|e| Error::Invalid(format!("encode {}: {e}", path.display())))?;
    fs::write(&path, data).map_err(|e| Error::io("write", path, e))
}

/// Creates the sandbox's quota volume, private to its user on the host (owner, mode 0700, ACLs
/// granting that user and the admin group only), and mounts it into the spec.
fn attach_volume(
    spec: &mut oci_spec::runtime::Spec,
    vref: &disk::VolumeRef,
    d: &policy::Disk,
    dest: &Path,
    admin_gid: Option<u32>,
) -> Result<PathBuf> {
    let (uid, gid) = policy::host_user(spec).ok_or_else(|| {
        Error::Invalid("process.user is not mapped in the sandbox's user namespace".into())
    })?;
    let volume = disk::create(vref, d, Owner { uid, gid })?;
    acl::grant_only(&volume.path, uid, gid, admin_gid)?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(disk::mount(&volume, dest)?);
    spec.set_mounts(Some(mounts));
    Ok(volume.path)
}

/// The spec's seccomp profile compiled for this machine (policy gave every spec one).
pub(crate) fn seccomp_filter(
    spec: &oci_spec::runtime::Spec,
) -> Result<Option<seccomp::BpfProgram>> {
    match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Ok(Some(seccomp::compile(profile, seccomp::native_arch()?)?)),
        None => Ok(None),
    }
}

fn build(
    root: &Path,
    sandbox: &str,
    record_dir: &Path,
    opts: &CreateOptions,
    shared_parent: bool,
    filter: Option<seccomp::BpfProgram>,
) -> Result<i32> {
    // A delete removing an emptied /paddock/<app> must not race this create's mkdir under it.
    let _lock = if shared_parent {
        Some(NodeLock::take(false)?)
    } else {
        None
    };
    let fail = |e: &(dyn std::error::Error + 'static)| Error::container("create", sandbox, e);
    let container = ContainerBuilder::new(sandbox.to_string(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| fail(&e))?
        .with_pid_file(opts.pid_file.as_ref())
        .map_err(|e| fail(&e))?
        .with_console_socket(opts.console_socket.as_ref())
        .with_preserved_fds(opts.preserve_fds)
        .with_executor(executor(filter))
        .as_init(record_dir)
        .with_systemd(false)
        .with_detach(opts.detach)
        .with_no_pivot(opts.no_pivot)
        .build()
        .map_err(|e| fail(&e))?;
    container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| Error::Container {
            op: "create",
            id: sandbox.to_string(),
            reason: "no init pid after create".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_lower_score_names_the_capability() {
        let denied = std::io::ErrorKind::PermissionDenied;
        assert!(oom_score_hint(-998, 0, denied).contains("CAP_SYS_RESOURCE"));
        assert_eq!(oom_score_hint(500, 0, denied), "");
        assert_eq!(
            oom_score_hint(-998, 0, std::io::ErrorKind::InvalidInput),
            ""
        );
    }
}
