//! The node's CPU policy on the kernel: the registry of live sandboxes (`registry.json` in the
//! config's `[cpu] state_dir`, read and rewritten only under its node-wide lock
//! `<state_dir>.lock`) and the cgroup files
//! paddock writes for it — v1 `cpu.shares`, `cpu.cfs_quota_us`, `cpuset.cpus`; v2 `cpu.weight`,
//! `cpu.max`, `cpuset.cpus`. The decisions themselves are `cpu_pool`'s.
//!
//! A create registers the sandbox before the engine makes its cgroup ([`admit`]: the others move
//! off its exclusive CPUs, the capped ones get their new quota), and writes its own files once
//! the cgroup exists ([`settle`]), so that a change made by another create in between is not
//! lost. A delete unregisters it ([`release`]). Only sandboxes whose assignment changed are
//! written.

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::cgroups::Layout;
use crate::config::CpuConfig;
use crate::cpu_pool::{
    Assignment, CpuMode, CpuSet, Entry, NodePolicy, Registry, Topology, PERIOD_US,
};
use crate::error::{Error, Result};
use nix::fcntl::{Flock, FlockArg};

/// Where the kernel describes the CPUs.
pub const SYSFS_CPU: &str = "/sys/devices/system/cpu";
/// The weight every instance and every app gets (v1 `cpu.shares`, v2 `cpu.weight` defaults).
pub const V1_SHARES: u64 = 1024;
pub const V2_WEIGHT: u64 = 100;
const REGISTRY: &str = "registry.json";

/// The node's CPU policy and registry location, from the node config.
pub struct Node {
    pub policy: NodePolicy,
    registry: PathBuf,
    lock: PathBuf,
}

/// The registry's node-wide lock, held while it is read or changed.
struct RegistryLock(#[allow(dead_code)] Flock<fs::File>);

impl Node {
    pub fn new(config: &CpuConfig) -> Result<Self> {
        let topology = Topology::read(Path::new(SYSFS_CPU))
            .map_err(|e| Error::io("read CPU topology", SYSFS_CPU, e))?;
        let key = |k: &str, e: String| Error::Invalid(format!("node config cpu.{k}: {e}"));
        Ok(Self {
            policy: NodePolicy {
                topology,
                reserved: config.reserved_cpus().map_err(|e| key("reserved", e))?,
                max_exclusive: config
                    .max_exclusive_share()
                    .map_err(|e| key("max_exclusive", e))?,
                placement: config.placement,
            },
            registry: config.state_dir.join(REGISTRY),
            lock: config.state_dir.with_extension("lock"),
        })
    }

    /// The registry's lock, beside its directory (like the identity pool's, so that CPU
    /// decisions do not queue behind creates holding the node lock while the engine runs).
    fn lock(&self, exclusive: bool) -> Result<RegistryLock> {
        if let Some(dir) = self.lock.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock)
            .map_err(|e| Error::io("open", &self.lock, e))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        Flock::lock(file, arg)
            .map(RegistryLock)
            .map_err(|(_, e)| Error::sys("flock CPU registry lock", e))
    }

    /// The registry, without sandboxes whose record directory is gone (a `--root` removed
    /// under them, a crash): they no longer run and must not hold CPUs.
    fn load(&self) -> Result<Registry> {
        let mut reg = self.load_raw()?;
        prune(&mut reg);
        Ok(reg)
    }

    fn load_raw(&self) -> Result<Registry> {
        Ok(match fs::read(&self.registry) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| Error::Invalid(format!("{}: {e}", self.registry.display())))?,
            Err(e) if e.kind() == ErrorKind::NotFound => Registry::default(),
            Err(e) => return Err(Error::io("read", &self.registry, e)),
        })
    }

    fn save(&self, reg: &Registry) -> Result<()> {
        if let Some(dir) = self.registry.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let tmp = self.registry.with_extension("tmp");
        let data = serde_json::to_vec(reg)
            .map_err(|e| Error::Invalid(format!("encode CPU registry: {e}")))?;
        fs::write(&tmp, data).map_err(|e| Error::io("write", &tmp, e))?;
        fs::rename(&tmp, &self.registry).map_err(|e| Error::io("rename", &self.registry, e))
    }

    /// Loads the registry, lets `change` edit it, saves it and writes the cgroups of every
    /// sandbox whose assignment changed (except `skip`, whose cgroup may not exist yet).
    fn transact<T>(
        &self,
        layout: &Layout,
        skip: Option<&str>,
        change: impl FnOnce(&mut Registry) -> Result<T>,
    ) -> Result<(T, Registry)> {
        let _lock = self.lock(true)?;
        let mut reg = self.load_raw()?;
        let before = reg.assignments(&self.policy);
        let apps_before = reg.apps.clone();
        prune(&mut reg);
        let out = change(&mut reg)?;
        self.save(&reg)?;
        let after = reg.assignments(&self.policy);
        apply_changes(layout, &reg, &before, &after, &apps_before, skip);
        Ok((out, reg))
    }
}

/// Drops sandboxes whose record directory is gone (a `--root` removed under them, a crash):
/// they no longer run and must not hold CPUs.
fn prune(reg: &mut Registry) {
    let stale: Vec<String> = reg
        .sandboxes
        .iter()
        .filter(|(_, e)| !e.record_dir.exists())
        .map(|(k, _)| k.clone())
        .collect();
    for key in stale {
        tracing::warn!(key, "CPU registry: dropping a sandbox whose state is gone");
        reg.remove(&key);
    }
}

/// Writes what changed between two assignments of the node. Quotas that shrink go first and
/// those that grow last, with app quotas in between, so that no child quota is ever above its
/// parent's (cgroup v1 refuses that). A sandbox whose cgroup vanished is being deleted; any
/// other failure is logged: one sandbox's cgroup must not stop the node's decision.
fn apply_changes(
    layout: &Layout,
    reg: &Registry,
    before: &BTreeMap<String, Assignment>,
    after: &BTreeMap<String, Assignment>,
    apps_before: &BTreeMap<String, u64>,
    skip: Option<&str>,
) {
    let changed: Vec<(&String, &Assignment)> = after
        .iter()
        .filter(|(k, a)| Some(k.as_str()) != skip && before.get(*k) != Some(a))
        .collect();
    let path_of = |k: &str| reg.sandboxes.get(k).map(|e| e.cgroups_path.clone());
    let shrinks = |k: &str, a: &Assignment| match (before.get(k).and_then(|b| b.quota), a.quota) {
        (Some(old), Some(new)) => new < old,
        _ => false,
    };
    let report = |what: &str, r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!("CPU policy: {what}: {e}");
        }
    };
    for (k, a) in changed.iter().filter(|(k, a)| shrinks(k, a)) {
        if let Some(p) = path_of(k) {
            report(k, write_assignment(layout, &p, a).or_else(gone));
        }
    }
    for (app, quota) in &reg.apps {
        if apps_before.get(app) != Some(quota) {
            report(app, write_quota(layout, app, Some(*quota)).or_else(gone));
        }
    }
    for (k, a) in changed.iter().filter(|(k, a)| !shrinks(k, a)) {
        if let Some(p) = path_of(k) {
            report(k, write_assignment(layout, &p, a).or_else(gone));
        }
    }
}

fn gone(e: Error) -> Result<()> {
    match e {
        Error::Io { ref source, .. } if source.kind() == ErrorKind::NotFound => Ok(()),
        e => Err(e),
    }
}

/// Registers a sandbox that is about to be created and returns what it gets; `app_cpu` is the
/// app's quota asked for with it (thousandths of a CPU). Errors (too many exclusive CPUs asked)
/// leave the registry as it was.
pub fn admit(
    node: &Node,
    layout: &Layout,
    key: &str,
    entry: Entry,
    app_cpu: Option<u64>,
) -> Result<Assignment> {
    let mode = entry.mode;
    let (_, reg) = node.transact(layout, Some(key), |reg| {
        if let (Some(app), Some(m)) = (&entry.app, app_cpu) {
            reg.apps.insert(app.clone(), m * PERIOD_US / 1000);
        }
        reg.admit(&node.policy, key, entry)
            .map_err(|e| Error::Annotation {
                key: crate::policy::CPU.into(),
                value: match mode {
                    CpuMode::Exclusive(k) => format!("exclusive:{k}"),
                    CpuMode::Cap => "cap".into(),
                    CpuMode::Equal => "equal".into(),
                },
                reason: e.to_string(),
            })
    })?;
    reg.assignments(&node.policy)
        .remove(key)
        .ok_or_else(|| Error::Invalid(format!("CPU registry lost sandbox {key}")))
}

/// What paddock writes once the sandbox's cgroup exists: the equal weight at the instance and
/// app levels (paddock's placement only), the app's quota, and the sandbox's assignment as the
/// registry holds it now (another create may have changed it since [`admit`]).
pub fn settle(node: &Node, layout: &Layout, key: &str) -> Result<()> {
    let (entry, own, app_quota) = {
        // Shared: admit, release and update (exclusive) wait, other settles need not.
        let _lock = node.lock(false)?;
        let reg = node.load()?;
        let entry = reg
            .sandboxes
            .get(key)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("CPU registry lost sandbox {key}")))?;
        let own = reg
            .assignments(&node.policy)
            .remove(key)
            .ok_or_else(|| Error::Invalid(format!("CPU registry lost sandbox {key}")))?;
        let app_quota = entry.app.as_ref().and_then(|a| reg.apps.get(a)).copied();
        if let Some(app) = &entry.app {
            enable_v2_controllers(layout, crate::policy::CGROUP_ROOT);
            enable_v2_controllers(layout, app);
            write_weight(layout, app)?;
            if app_quota.is_some() {
                write_quota(layout, app, app_quota)?;
            }
            write_weight(layout, &entry.cgroups_path)?;
        }
        write_assignment(layout, &entry.cgroups_path, &own)?;
        (entry, own, app_quota)
    };
    tracing::debug!(
        id = entry.id,
        cpus = %own.cpus,
        quota = ?own.quota,
        app_quota = ?app_quota,
        "CPU policy applied"
    );
    Ok(())
}

/// Unregisters a sandbox (idempotent) and rewrites the others.
pub fn release(node: &Node, layout: &Layout, key: &str) -> Result<()> {
    node.transact(layout, Some(key), |reg| {
        reg.remove(key);
        Ok(())
    })?;
    Ok(())
}

/// `create`'s hook before the engine runs: registers the sandbox with the node's CPU policy and
/// writes the CPUs (and quota) it gets into its spec, so its cgroup starts with them.
pub fn place(
    node: &Node,
    layout: &Layout,
    key: &str,
    id: &str,
    record_dir: &Path,
    plan: &mut crate::policy::Plan,
) -> Result<()> {
    let entry = Entry {
        id: id.to_string(),
        record_dir: record_dir.to_path_buf(),
        cgroups_path: plan.cgroups_path.clone(),
        mode: plan.cpu,
        exclusive: CpuSet::default(),
        request: plan.cpu_request.clone(),
        app: plan.app.as_ref().map(|a| app_cgroup(a)),
    };
    let got = admit(node, layout, key, entry, plan.app_cpu)?;
    let mut linux = plan.spec.linux().clone().unwrap_or_default();
    let mut resources = linux.resources().clone().unwrap_or_default();
    let mut cpu = resources.cpu().clone().unwrap_or_default();
    cpu.set_cpus(Some(got.cpus.to_string()));
    if let Some(q) = got.quota {
        cpu.set_quota(i64::try_from(q).ok());
        cpu.set_period(Some(PERIOD_US));
    }
    resources.set_cpu(Some(cpu));
    linux.set_resources(Some(resources));
    plan.spec.set_linux(Some(linux));
    Ok(())
}

/// The app level of paddock's placement.
pub fn app_cgroup(app: &str) -> String {
    format!("/{}/{app}", crate::policy::CGROUP_ROOT)
}

/// `delete`'s hook: unregisters the sandbox from the registry in `state_dir` (where create put
/// it) and rewrites the others with the node's current policy.
pub fn forget(
    state_dir: &Path,
    layout: &Layout,
    key: &str,
    node: std::result::Result<&crate::config::NodeConfig, &crate::config::ConfigError>,
) -> Result<()> {
    let mut config = match node {
        Ok(c) => c.cpu.clone(),
        Err(e) => {
            tracing::warn!("node config unreadable, CPU policy from defaults: {e}");
            CpuConfig::default()
        }
    };
    config.state_dir = state_dir.to_path_buf();
    release(&Node::new(&config)?, layout, key)
}

/// `update --cpuset-cpus VALUE` of a sandbox registered in `state_dir`: `pool` releases its
/// exclusive CPUs and lets it run on the whole pool, `exclusive` pins it again; a CPU list
/// becomes its request within the pool (an exclusive sandbox's CPUs are the node's choice).
pub fn update_cpus(
    state_dir: &Path,
    layout: &Layout,
    key: &str,
    id: &str,
    value: &str,
) -> Result<()> {
    let mut config = crate::config::NodeConfig::load_default()?.cpu;
    config.state_dir = state_dir.to_path_buf();
    let node = Node::new(&config)?;
    match value.trim() {
        "pool" => set_pinned(&node, layout, key, id, false).map(|_| ()),
        "exclusive" => set_pinned(&node, layout, key, id, true).map(|_| ()),
        list => {
            let request = CpuSet::parse(list).map_err(|e| {
                Error::Invalid(format!("--cpuset-cpus {list:?}: {e} (or pool, exclusive)"))
            })?;
            node.transact(layout, None, |reg| {
                let e = reg.sandboxes.get_mut(key).ok_or_else(|| {
                    Error::Invalid(format!("sandbox {id} is not in the node's CPU registry"))
                })?;
                if e.pinned() {
                    return Err(Error::Invalid(format!(
                        "sandbox {id} has exclusive CPUs {}: use --cpuset-cpus pool to release them",
                        e.exclusive
                    )));
                }
                e.request = (!request.is_empty()).then_some(request);
                Ok(())
            })
            .map(|_| ())
        }
    }
}

/// Releases an exclusive sandbox's CPUs to the pool (it runs on the pool meanwhile) or pins it
/// again. Returns its new CPUs.
pub fn set_pinned(
    node: &Node,
    layout: &Layout,
    key: &str,
    id: &str,
    pinned: bool,
) -> Result<CpuSet> {
    let (_, reg) = node.transact(layout, None, |reg| {
        match reg.sandboxes.get(key).map(|e| e.mode) {
            None => Err(Error::Invalid(format!(
                "sandbox {id} is not in the node's CPU registry"
            ))),
            Some(CpuMode::Exclusive(_)) => reg
                .set_pinned(&node.policy, key, pinned)
                .map_err(|e| Error::Invalid(format!("pin sandbox {id} again: {e}"))),
            Some(_) => Err(Error::Invalid(format!(
                "sandbox {id} has no exclusive CPUs to release or restore (io.paddock.cpu is not exclusive:K)"
            ))),
        }
    })?;
    reg.assignments(&node.policy)
        .remove(key)
        .map(|a| a.cpus)
        .ok_or_else(|| Error::Invalid(format!("CPU registry lost sandbox {id}")))
}

fn write(path: PathBuf, value: &str) -> Result<()> {
    fs::write(&path, value).map_err(|e| Error::io("write", path, e))
}

/// The directory of `rel` in the hierarchy holding `controller` (v1) or the unified tree.
fn dir(layout: &Layout, controller: &str, rel: &str) -> Option<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if layout.is_unified() {
        return layout.v2().map(|h| h.mount_point.join(rel));
    }
    layout.v1(controller).map(|h| h.mount_point.join(rel))
}

/// Writes a sandbox's cpuset and, when paddock owns it, its quota.
pub fn write_assignment(layout: &Layout, rel: &str, a: &Assignment) -> Result<()> {
    if let Some(d) = dir(layout, "cpuset", rel) {
        if !a.cpus.is_empty() {
            write(d.join("cpuset.cpus"), &a.cpus.to_string())?;
        }
    }
    if a.quota.is_some() {
        write_quota(layout, rel, a.quota)?;
    }
    Ok(())
}

/// Sets (`Some`) or lifts (`None`) the CFS quota of the cgroup `rel`.
pub fn write_quota(layout: &Layout, rel: &str, quota: Option<u64>) -> Result<()> {
    let Some(d) = dir(layout, "cpu", rel) else {
        return Err(Error::Invalid("the cpu controller is not mounted".into()));
    };
    if layout.is_unified() {
        let max = quota.map_or("max".to_string(), |q| q.to_string());
        return write(d.join("cpu.max"), &format!("{max} {PERIOD_US}"));
    }
    // Writing the period costs the kernel more than reading it: only when it differs.
    let period = d.join("cpu.cfs_period_us");
    if fs::read_to_string(&period).map_or(true, |p| p.trim() != PERIOD_US.to_string()) {
        write(period, &PERIOD_US.to_string())?;
    }
    let q = quota.map_or("-1".to_string(), |q| q.to_string());
    write(d.join("cpu.cfs_quota_us"), &q)
}

/// cgroup v2: lets the children of paddock's own cgroup `rel` use the cpu and cpuset
/// controllers (the engine does so when it creates the path; this keeps it so). Best effort: a
/// controller the kernel lacks is not paddock's to add.
fn enable_v2_controllers(layout: &Layout, rel: &str) {
    if !layout.is_unified() {
        return;
    }
    let Some(d) = dir(layout, "cpu", rel) else {
        return;
    };
    for c in ["+cpu", "+cpuset"] {
        if let Err(e) = fs::write(d.join("cgroup.subtree_control"), c) {
            tracing::debug!(path = %d.display(), "enable {c}: {e}");
        }
    }
}

/// Gives the cgroup `rel` the weight every paddock instance and app has.
pub fn write_weight(layout: &Layout, rel: &str) -> Result<()> {
    let Some(d) = dir(layout, "cpu", rel) else {
        return Ok(());
    };
    if layout.is_unified() {
        write(d.join("cpu.weight"), &V2_WEIGHT.to_string())
    } else {
        write(d.join("cpu.shares"), &V1_SHARES.to_string())
    }
}

/// The CPUs a sandbox may run on now (its cgroup's `cpuset.cpus`), for stats.
pub fn current_cpus(layout: &Layout, rel: &str) -> Option<CpuSet> {
    let d = dir(layout, "cpuset", rel)?;
    let text = fs::read_to_string(d.join("cpuset.cpus")).ok()?;
    CpuSet::parse(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_pool::{Placement, Ratio};

    fn v2_layout(root: &Path) -> Layout {
        Layout::from_mountinfo(&format!(
            "25 20 0:22 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        ))
    }

    fn v1_layout(root: &Path) -> Layout {
        Layout::from_mountinfo(&format!(
            "33 30 0:29 / {0}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
             34 30 0:30 / {0}/cpuset rw - cgroup cgroup rw,cpuset\n",
            root.display()
        ))
    }

    fn read(p: PathBuf) -> String {
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn mkdirs(root: &Path, rels: &[&str]) {
        for r in rels {
            fs::create_dir_all(root.join(r)).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn v2_files() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        mkdirs(tmp.path(), &["paddock/shop/a"]);
        let l = v2_layout(tmp.path());
        let a = Assignment {
            cpus: CpuSet::parse("1-3").unwrap_or_default(),
            quota: Some(50_000),
        };
        write_assignment(&l, "/paddock/shop/a", &a).unwrap_or_else(|e| panic!("{e}"));
        write_weight(&l, "/paddock/shop").unwrap_or_else(|e| panic!("{e}"));
        write_quota(&l, "/paddock/shop", None).unwrap_or_else(|e| panic!("{e}"));
        let d = tmp.path().join("paddock/shop");
        assert_eq!(read(d.join("a/cpuset.cpus")), "1-3");
        assert_eq!(read(d.join("a/cpu.max")), "50000 100000");
        assert_eq!(read(d.join("cpu.weight")), "100");
        assert_eq!(read(d.join("cpu.max")), "max 100000");
        assert_eq!(
            current_cpus(&l, "/paddock/shop/a").map(|s| s.to_string()),
            Some("1-3".into())
        );
    }

    #[test]
    fn v1_files() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        mkdirs(
            tmp.path(),
            &["cpu,cpuacct/paddock/shop/a", "cpuset/paddock/shop/a"],
        );
        let l = v1_layout(tmp.path());
        let a = Assignment {
            cpus: CpuSet::parse("0").unwrap_or_default(),
            quota: Some(25_000),
        };
        write_assignment(&l, "/paddock/shop/a", &a).unwrap_or_else(|e| panic!("{e}"));
        write_weight(&l, "/paddock/shop/a").unwrap_or_else(|e| panic!("{e}"));
        let cpu = tmp.path().join("cpu,cpuacct/paddock/shop/a");
        assert_eq!(
            read(tmp.path().join("cpuset/paddock/shop/a/cpuset.cpus")),
            "0"
        );
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "25000");
        assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read(cpu.join("cpu.shares")), "1024");
        write_quota(&l, "/paddock/shop/a", None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "-1");
    }

    fn node(state: &Path) -> Node {
        Node {
            policy: NodePolicy {
                topology: Topology::from_cores(vec![vec![0, 2], vec![1, 3]]),
                reserved: CpuSet::default(),
                max_exclusive: Ratio { num: 2, den: 3 },
                placement: Placement::SameCore,
            },
            registry: state.join(REGISTRY),
            lock: state.with_extension("lock"),
        }
    }

    fn entry(record: &Path, id: &str, mode: CpuMode) -> Entry {
        fs::create_dir_all(record.join(id)).unwrap_or_else(|e| panic!("{e}"));
        Entry {
            id: id.into(),
            record_dir: record.join(id),
            cgroups_path: format!("/paddock/shop/{id}"),
            mode,
            exclusive: CpuSet::default(),
            request: None,
            app: Some("/paddock/shop".into()),
        }
    }

    /// The whole flow on a fake v2 tree: admit, settle, release rewrite the others.
    #[test]
    fn admit_settle_release_on_v2() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cg = tmp.path().join("cg");
        mkdirs(&cg, &["paddock/shop/a", "paddock/shop/b", "paddock/shop/x"]);
        let l = v2_layout(&cg);
        let n = node(&tmp.path().join("state"));
        let rec = tmp.path().join("records");
        let ok = |r: Result<Assignment>| r.unwrap_or_else(|e| panic!("{e}"));
        let a = ok(admit(
            &n,
            &l,
            "ka",
            entry(&rec, "a", CpuMode::Cap),
            Some(1500),
        ));
        assert_eq!((a.cpus.to_string(), a.quota), ("0-3".into(), Some(150_000)));
        settle(&n, &l, "ka").unwrap_or_else(|e| panic!("{e}"));
        let shop = cg.join("paddock/shop");
        assert_eq!(read(shop.join("cgroup.subtree_control")), "+cpuset");
        assert_eq!(read(shop.join("cpu.max")), "150000 100000");
        assert_eq!(read(shop.join("a/cpu.max")), "150000 100000");
        assert_eq!(read(shop.join("a/cpu.weight")), "100");
        ok(admit(&n, &l, "kb", entry(&rec, "b", CpuMode::Cap), None));
        let x = ok(admit(
            &n,
            &l,
            "kx",
            entry(&rec, "x", CpuMode::Exclusive(2)),
            None,
        ));
        assert_eq!(x.cpus.to_string(), "0,2");
        assert_eq!(read(shop.join("a/cpuset.cpus")), "1,3");
        // Too many exclusive CPUs: a clear error naming the annotation; nothing changes.
        let before = fs::read(n.registry.clone()).unwrap_or_default();
        let err = admit(&n, &l, "ky", entry(&rec, "y", CpuMode::Exclusive(1)), None);
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("io.paddock.cpu=\"exclusive:1\""), "{msg}");
        assert_eq!(fs::read(n.registry.clone()).unwrap_or_default(), before);
        // Unpin and pin again.
        let cpus = set_pinned(&n, &l, "kx", "x", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cpus.to_string(), "0-3");
        assert_eq!(read(shop.join("a/cpuset.cpus")), "0-3");
        assert_eq!(read(shop.join("x/cpuset.cpus")), "0-3");
        set_pinned(&n, &l, "kx", "x", true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(shop.join("x/cpuset.cpus")), "0,2");
        assert!(set_pinned(&n, &l, "ka", "a", false).is_err());
        // A sandbox whose record is gone is dropped from the registry.
        fs::remove_dir_all(rec.join("x")).unwrap_or_else(|e| panic!("{e}"));
        release(&n, &l, "kb").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(shop.join("a/cpuset.cpus")), "0-3");
        let reg = entry_keys(&n);
        assert_eq!(reg, vec!["ka".to_string()]);
        release(&n, &l, "ka").unwrap_or_else(|e| panic!("{e}"));
        release(&n, &l, "ka").unwrap_or_else(|e| panic!("{e}"));
        assert!(entry_keys(&n).is_empty());
    }

    fn entry_keys(n: &Node) -> Vec<String> {
        n.load()
            .map(|r| r.sandboxes.keys().cloned().collect())
            .unwrap_or_default()
    }
}
