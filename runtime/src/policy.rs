//! The policy step: a pure function from (spec, annotations, sandbox id) to the spec paddock
//! hands to the engine. No I/O here, so every rule is unit-tested without root.
//!
//! Recognised annotations (see DESIGN.md): `io.paddock.app` names the tenant and so the cgroup
//! parent; `io.paddock.app.memory` limits the memory of all the app's instances together;
//! `io.paddock.oom` picks the OOM policy; `io.paddock.pids` sets the pids limit. Any other
//! `io.paddock.*` key is refused at create rather than silently ignored: a platform asking for a
//! limit must get it or an error.
//!
//! Memory follows warden's contract: a limit without a swap value gets no swap at all
//! (`swap` = `limit`, i.e. v1 `memsw` = limit, v2 `memory.swap.max` = 0).

use std::collections::HashMap;

use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxMemory, LinuxNamespace, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, Spec,
};

use crate::cpu_pool::{CpuMode, CpuSet};
use crate::error::{Error, Result};

pub const ANNOTATION_PREFIX: &str = "io.paddock.";
pub const APP: &str = "io.paddock.app";
pub const APP_MEMORY: &str = "io.paddock.app.memory";
pub const APP_CPU: &str = "io.paddock.app.cpu";
pub const CPU: &str = "io.paddock.cpu";
pub const DISK: &str = "io.paddock.disk";
pub const DISK_INODES: &str = "io.paddock.disk.inodes";
pub const DISK_PATH: &str = "io.paddock.disk.path";
pub const OOM: &str = "io.paddock.oom";
pub const USER: &str = "io.paddock.user";
pub const USERNS: &str = "io.paddock.userns";
pub const ACL_DENY: &str = "io.paddock.acl.deny";
pub const PIDS: &str = "io.paddock.pids";

/// What happens when the kernel OOM-kills a process of the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OomPolicy {
    /// The whole sandbox ends (warden's behaviour).
    #[default]
    Kill,
    /// The kernel's choice of victim stands; the rest keeps running.
    Kernel,
}

/// The app a sandbox belongs to when `io.paddock.app` is absent.
pub const DEFAULT_APP: &str = "default";
/// The cgroup directory under which paddock places sandboxes that name no cgroupsPath.
pub const CGROUP_ROOT: &str = "paddock";
/// `PATH` given to a process whose spec has none (libcontainer requires one).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the annotations ask for, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Annotations {
    pub app: Option<String>,
    pub app_memory: Option<u64>,
    pub disk: Option<u64>,
    pub disk_inodes: Option<u64>,
    pub disk_path: Option<std::path::PathBuf>,
    /// Keep the spec's user (`io.paddock.user=spec`) instead of leasing a pool identity.
    pub spec_user: bool,
    /// A user namespace over a 65536-id range of the pool (`io.paddock.userns=true`).
    pub userns: bool,
    /// Paths, as the sandbox sees them, its identity may neither read nor execute.
    pub acl_deny: Vec<std::path::PathBuf>,
    pub oom: OomPolicy,
    pub pids: Option<i64>,
    pub cpu: CpuMode,
    /// The app's CPU limit in thousandths of a CPU.
    pub app_cpu: Option<u64>,
}

/// The outcome of the policy step for one sandbox.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The spec to run: the caller's, with paddock's rewrites applied.
    pub spec: Spec,
    /// Absolute cgroup path of the sandbox, relative to each hierarchy's root.
    pub cgroups_path: String,
    /// The app (tenant) of the sandbox when paddock chose the cgroup placement.
    pub app: Option<String>,
    /// Memory limit of the app level, for all its instances together.
    pub app_memory: Option<u64>,
    pub oom: OomPolicy,
    /// The disk quota asked for, if any.
    pub disk: Option<Disk>,
    /// Whether the app runs as a host identity leased from the node's pool (the default).
    pub pool_user: bool,
    /// Whether the sandbox gets a user namespace over a range leased from the pool.
    pub userns: bool,
    /// `io.paddock.acl.deny`: paths denied to the sandbox's identity besides the node's list.
    pub deny: Vec<std::path::PathBuf>,
    /// The CPU mode, and the CPUs the spec asked for (kept within the node's shared pool).
    pub cpu: CpuMode,
    pub cpu_request: Option<CpuSet>,
    /// CPU limit of the app level in thousandths of a CPU, for all its instances together.
    pub app_cpu: Option<u64>,
}

/// A disk quota on the sandbox's writable volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub bytes: u64,
    /// `None`: the node's default for the size.
    pub inodes: Option<u64>,
    /// Where the sandbox sees its volume; `None`: the node's default (`/home/vcap`).
    pub path: Option<std::path::PathBuf>,
}

/// Parses the `io.paddock.*` annotations. Unknown keys under the prefix are errors.
pub fn parse_annotations(all: Option<&HashMap<String, String>>) -> Result<Annotations> {
    let mut out = Annotations::default();
    let Some(all) = all else { return Ok(out) };
    let mut keys: Vec<&String> = all
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for key in keys {
        let value = &all[key];
        let bad = |reason: &str| Error::Annotation {
            key: key.clone(),
            value: value.clone(),
            reason: reason.to_string(),
        };
        match key.as_str() {
            APP => {
                validate_app(value).map_err(bad)?;
                out.app = Some(value.clone());
            }
            APP_MEMORY => {
                out.app_memory = Some(size(value).map_err(|e| bad(&e))?);
            }
            APP_CPU => {
                out.app_cpu = Some(millicpus(value).map_err(|e| bad(&e))?);
            }
            CPU => {
                out.cpu = CpuMode::parse(value).map_err(|e| bad(&e))?;
            }
            DISK => {
                out.disk = Some(size(value).map_err(|e| bad(&e))?);
            }
            DISK_INODES => {
                let n = paddock_quota::parse_inodes(value).map_err(|e| bad(&e.to_string()))?;
                out.disk_inodes = Some(n);
            }
            DISK_PATH => {
                let p = std::path::Path::new(value.trim());
                if !p.is_absolute() || p.components().any(|c| c.as_os_str() == "..") {
                    return Err(bad("must be an absolute path without '..'"));
                }
                out.disk_path = Some(p.to_path_buf());
            }
            USER => {
                out.spec_user = match value.trim() {
                    "pool" => false,
                    "spec" => true,
                    _ => return Err(bad("expected pool or spec")),
                };
            }
            USERNS => {
                out.userns = match value.trim() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad("expected true or false")),
                };
            }
            ACL_DENY => {
                out.acl_deny = parse_deny_list(value).map_err(|e| bad(&e))?;
            }
            OOM => {
                out.oom = match value.trim() {
                    "kill" => OomPolicy::Kill,
                    "kernel" => OomPolicy::Kernel,
                    _ => return Err(bad("expected kill or kernel")),
                };
            }
            PIDS => {
                let n: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| bad("not a whole number"))?;
                if n < 1 {
                    return Err(bad("must be at least 1"));
                }
                out.pids = Some(n);
            }
            _ => return Err(bad("unknown paddock annotation")),
        }
    }
    Ok(out)
}

/// `io.paddock.acl.deny`: absolute paths separated by commas (blanks around them ignored),
/// without `.` or `..` components. An empty value denies nothing.
pub fn parse_deny_list(value: &str) -> std::result::Result<Vec<std::path::PathBuf>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<std::path::PathBuf> = Vec::new();
    for (i, raw) in value.split(',').enumerate() {
        let entry = raw.trim();
        let p = std::path::Path::new(entry);
        if entry.is_empty() {
            return Err(format!("entry {} is empty", i + 1));
        }
        if !p.is_absolute() {
            return Err(format!("{entry} is not an absolute path"));
        }
        if entry.contains('\0') || entry.split('/').any(|c| c == "." || c == "..") {
            return Err(format!("{entry} has a . or .. component"));
        }
        if p.parent().is_none() {
            return Err("/ cannot be denied".into());
        }
        if !out.iter().any(|o| o == p) {
            out.push(p.to_path_buf());
        }
    }
    Ok(out)
}

/// A byte size as platforms write them (`512M`, `1G`), through the quota crate's parser.
fn size(value: &str) -> std::result::Result<u64, String> {
    paddock_quota::parse_size(value).map_err(|e| e.to_string())
}

/// A number of CPUs as platforms write them (`1.5`, `2`, `500m`), in thousandths.
fn millicpus(value: &str) -> std::result::Result<u64, String> {
    let t = value.trim();
    let bad = || format!("{t:?}: expected CPUs like 1.5 or 500m");
    let m = if let Some(m) = t.strip_suffix('m') {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        m.parse::<u64>().map_err(|_| bad())?
    } else {
        let (int, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || frac.len() > 3 || !digits(int) || !digits(frac) {
            return Err(bad());
        }
        let int: u64 = int.parse().map_err(|_| bad())?;
        let frac: u64 = format!("{frac:0<3}").parse().map_err(|_| bad())?;
        int.checked_mul(1000)
            .and_then(|v| v.checked_add(frac))
            .ok_or_else(bad)?
    };
    if m < 10 {
        return Err("must be at least 0.01 CPU (10m)".into());
    }
    if m > 1_000_000 {
        return Err("more than 1000 CPUs".into());
    }
    Ok(m)
}

fn validate_app(app: &str) -> std::result::Result<(), &'static str> {
    if app.is_empty() {
        return Err("empty app name");
    }
    if app.len() > 128 {
        return Err("app name longer than 128 bytes");
    }
    if app.starts_with('.') {
        return Err("app name starts with '.'");
    }
    if !app
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("app name may hold only letters, digits and _ - .");
    }
    Ok(())
}

/// Normalises a cgroupsPath given by the caller. Relative paths are taken from the hierarchy's
/// root (paddock never nests sandboxes under its caller's own cgroup, which belongs to someone
/// else); systemd's `slice:prefix:name` form becomes the cgroupfs path systemd would use.
pub fn normalize_cgroups_path(raw: &str, systemd: bool) -> Result<String> {
    let bad = |reason| Error::CgroupsPath {
        path: raw.to_string(),
        reason,
    };
    let path = if raw.contains(':') {
        if !systemd {
            return Err(bad("systemd form slice:prefix:name needs --systemd-cgroup"));
        }
        let parts: Vec<&str> = raw.split(':').collect();
        let [slice, prefix, name] = parts.as_slice() else {
            return Err(bad("expected slice:prefix:name"));
        };
        if name.is_empty() {
            return Err(bad("empty name in slice:prefix:name"));
        }
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let unit = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        format!("/{}/{unit}", expand_slice(slice).map_err(bad)?)
    } else {
        raw.to_string()
    };
    let mut clean = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(bad("contains '..'"));
        }
        clean.push('/');
        clean.push_str(part);
    }
    if clean.is_empty() {
        return Err(bad("names the root cgroup"));
    }
    Ok(clean)
}

/// `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice`, as systemd lays slices out.
fn expand_slice(slice: &str) -> std::result::Result<String, &'static str> {
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err("slice name must end in .slice");
    };
    if stem.is_empty() || stem == "-" {
        return Ok(String::new());
    }
    if stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") || stem.contains('/') {
        return Err("malformed slice name");
    }
    let mut out = Vec::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push(format!("{prefix}.slice"));
    }
    Ok(out.join("/"))
}

/// The default placement: `/paddock/<app>/<id>`.
pub fn default_cgroups_path(app: &str, id: &str) -> String {
    format!("/{CGROUP_ROOT}/{app}/{id}")
}

/// Applies paddock's rules to a caller's spec.
pub fn plan(mut spec: Spec, id: &str, systemd: bool) -> Result<Plan> {
    let ann = parse_annotations(spec.annotations().as_ref())?;
    let mut linux = spec.linux().clone().unwrap_or_default();

    let (cgroups_path, app) = match linux.cgroups_path() {
        Some(p) => (normalize_cgroups_path(&p.to_string_lossy(), systemd)?, None),
        None => {
            let app = ann.app.clone().unwrap_or_else(|| DEFAULT_APP.to_string());
            (default_cgroups_path(&app, id), Some(app))
        }
    };
    linux.set_cgroups_path(Some(cgroups_path.clone().into()));
    if ann.app_memory.is_some() && app.is_none() {
        return Err(Error::Annotation {
            key: APP_MEMORY.into(),
            value: String::new(),
            reason: "needs paddock's placement: the spec names its own linux.cgroupsPath".into(),
        });
    }
    if ann.app_cpu.is_some() && app.is_none() {
        return Err(Error::Annotation {
            key: APP_CPU.into(),
            value: String::new(),
            reason: "needs paddock's placement: the spec names its own linux.cgroupsPath".into(),
        });
    }

    let mut resources: LinuxResources = linux.resources().clone().unwrap_or_default();
    if let Some(limit) = ann.pids {
        let pids = LinuxPidsBuilder::default()
            .limit(limit)
            .build()
            .map_err(|e| Error::Invalid(format!("pids limit {limit}: {e}")))?;
        resources.set_pids(Some(pids));
    }
    if let Some(memory) = *resources.memory() {
        resources.set_memory(Some(memory_contract(memory)?));
    }
    let cpu_request = cpu_contract(&mut resources, ann.cpu, app.is_some())?;
    linux.set_resources(Some(resources));
    apply_path_defaults(&mut linux);
    spec.set_linux(Some(linux));

    if let Some(mut process) = spec.process().clone() {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.to_string());
            process.set_env(Some(env));
        }
        apply_seccomp_default(&mut spec, &mut process);
        spec.set_process(Some(process));
    }
    if ann.disk.is_none() && (ann.disk_inodes.is_some() || ann.disk_path.is_some()) {
        return Err(Error::Annotation {
            key: DISK.into(),
            value: String::new(),
            reason: "io.paddock.disk.inodes and io.paddock.disk.path need a disk size".into(),
        });
    }
    let has_userns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    if ann.userns && has_userns {
        return Err(Error::Annotation {
            key: USERNS.into(),
            value: "true".into(),
            reason: "the spec already has a user namespace".into(),
        });
    }
    if !ann.acl_deny.is_empty() && ann.spec_user && !ann.userns {
        return Err(Error::Annotation {
            key: ACL_DENY.into(),
            value: String::new(),
            reason: "needs a pool identity (io.paddock.user=spec keeps the spec's user)".into(),
        });
    }
    let disk = ann.disk.map(|bytes| Disk {
        bytes,
        inodes: ann.disk_inodes,
        path: ann.disk_path.clone(),
    });
    Ok(Plan {
        spec,
        cgroups_path,
        app,
        app_memory: ann.app_memory,
        oom: ann.oom,
        disk,
        pool_user: !ann.spec_user,
        userns: ann.userns,
        deny: ann.acl_deny,
        cpu: ann.cpu,
        cpu_request,
        app_cpu: ann.app_cpu,
    })
}

/// Takes the spec's CPU list as a request within the node's pool (the node decides the final
/// cpuset) and, in paddock's placement, drops its weight: every instance there weighs the same.
fn cpu_contract(
    resources: &mut LinuxResources,
    mode: CpuMode,
    paddock_placement: bool,
) -> Result<Option<CpuSet>> {
    let Some(mut cpu) = resources.cpu().clone() else {
        return Ok(None);
    };
    let request = match cpu.cpus().as_deref().map(str::trim) {
        None | Some("") => None,
        Some(list) => {
            let set = CpuSet::parse(list)
                .map_err(|e| Error::Invalid(format!("linux.resources.cpu.cpus {list:?}: {e}")))?;
            if let CpuMode::Exclusive(k) = mode {
                return Err(Error::Annotation {
                    key: CPU.into(),
                    value: format!("exclusive:{k}"),
                    reason: format!("conflicts with linux.resources.cpu.cpus {list:?}: exclusive CPUs are chosen by the node"),
                });
            }
            Some(set)
        }
    };
    if paddock_placement && cpu.shares().is_some() {
        tracing::debug!("linux.resources.cpu.shares replaced by the equal share");
        cpu.set_shares(None);
    }
    resources.set_cpu(Some(cpu));
    Ok(request)
}

/// Kernel paths hidden from a sandbox whose spec names none (runc's and Docker's list).
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Kernel paths a sandbox whose spec names none may read but not write.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Makes the sandbox's process run as a leased pool identity: uid and gid from the lease, no
/// supplementary groups (they could reach host groups' files), no capabilities in any set and
/// `no_new_privs`, so that nothing inside (a setuid binary, file capabilities) raises it.
pub fn run_as(spec: &mut Spec, uid: u32, gid: u32) {
    if let Some(mut process) = spec.process().clone() {
        let mut user = process.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        user.set_additional_gids(None);
        process.set_user(user);
        spec.set_process(Some(process));
    }
    unprivileged(spec);
}

/// Puts the sandbox in a user namespace over the leased range `base .. base + count`: container
/// id 0 is host id `base`. The process keeps the spec's user (an id inside the namespace) and,
/// as a pool identity does, runs with no capabilities and `no_new_privs`.
pub fn map_userns(spec: &mut Spec, base: u32, count: u32) -> Result<()> {
    let map = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(base)
        .size(count)
        .build()
        .map_err(|e| Error::Invalid(format!("user namespace mapping {base}+{count}: {e}")))?;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let mut user_ns = LinuxNamespace::default();
    user_ns.set_typ(LinuxNamespaceType::User);
    namespaces.push(user_ns);
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(vec![map]));
    linux.set_gid_mappings(Some(vec![map]));
    spec.set_linux(Some(linux));
    unprivileged(spec);
    Ok(())
}

/// The host uid and gid the sandbox's process runs as: its spec user, through the user
/// namespace's mappings when it has them (an unmapped id is `None`).
pub fn host_user(spec: &Spec) -> Option<(u32, u32)> {
    let user = spec.process().as_ref()?.user().clone();
    let linux = spec.linux().as_ref();
    let through = |id: u32, maps: Option<&Vec<LinuxIdMapping>>| match maps {
        Some(maps) if !maps.is_empty() => maps.iter().find_map(|m| {
            let off = id.checked_sub(m.container_id())?;
            (off < m.size())
                .then(|| m.host_id().checked_add(off))
                .flatten()
        }),
        _ => Some(id),
    };
    Some((
        through(user.uid(), linux.and_then(|l| l.uid_mappings().as_ref()))?,
        through(user.gid(), linux.and_then(|l| l.gid_mappings().as_ref()))?,
    ))
}

/// No capabilities in any set, `no_new_privs`, umask 077.
fn unprivileged(spec: &mut Spec) {
    if let Some(mut process) = spec.process().clone() {
        let mut user = process.user().clone();
        user.set_umask(Some(0o077));
        process.set_user(user);
        let none = oci_spec::runtime::Capabilities::new();
        let mut caps = process.capabilities().clone().unwrap_or_default();
        caps.set_bounding(Some(none.clone()));
        caps.set_effective(Some(none.clone()));
        caps.set_permitted(Some(none.clone()));
        caps.set_inheritable(Some(none.clone()));
        caps.set_ambient(Some(none));
        process.set_capabilities(Some(caps));
        process.set_no_new_privileges(Some(true));
        spec.set_process(Some(process));
    }
}

/// A spec that says nothing about masked or read-only paths gets the defaults; one that lists
/// them, even as an empty list, is taken at its word.
fn apply_path_defaults(linux: &mut oci_spec::runtime::Linux) {
    let owned = |l: &[&str]| l.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    if linux.masked_paths().is_none() {
        linux.set_masked_paths(Some(owned(DEFAULT_MASKED_PATHS)));
    }
    if linux.readonly_paths().is_none() {
        linux.set_readonly_paths(Some(owned(DEFAULT_READONLY_PATHS)));
    }
}

/// A spec without `linux.seccomp` gets paddock's default profile (Docker's, with the
/// capability-gated calls its bounding set allows). The filter is installed after
/// libcontainer has dropped capabilities, so a process that will lack CAP_SYS_ADMIN needs
/// `no_new_privs` for the install to be allowed: it gets it.
fn apply_seccomp_default(spec: &mut Spec, process: &mut oci_spec::runtime::Process) {
    let mut linux = spec.linux().clone().unwrap_or_default();
    if linux.seccomp().is_none() {
        let caps: oci_spec::runtime::Capabilities = process
            .capabilities()
            .as_ref()
            .and_then(|c| c.bounding().clone())
            .unwrap_or_default();
        linux.set_seccomp(Some(crate::seccomp::default_profile_for(&caps)));
        spec.set_linux(Some(linux));
    }
    if crate::seccomp::requires_no_new_privs(process) {
        process.set_no_new_privileges(Some(true));
    }
}

/// Checks a memory section and applies the no-swap default. `-1` means unlimited, as in OCI.
pub fn memory_contract(mut memory: LinuxMemory) -> Result<LinuxMemory> {
    let bad = |what: &str, v: i64, reason: &str| {
        Err(Error::Invalid(format!(
            "linux.resources.memory.{what} {v}: {reason}"
        )))
    };
    let limit = memory.limit();
    match limit {
        Some(l) if l < -1 || l == 0 => return bad("limit", l, "must be positive or -1"),
        _ => {}
    }
    match (limit, memory.swap()) {
        (_, Some(s)) if s < -1 || s == 0 => return bad("swap", s, "must be positive or -1"),
        (Some(l), Some(s)) if l > 0 && s != -1 && s < l => {
            return bad("swap", s, &format!("smaller than the memory limit {l}"))
        }
        (Some(l), None) if l > 0 => {
            memory.set_swap(Some(l));
        }
        _ => {}
    }
    if let Some(r) = memory.reservation() {
        if r < -1 {
            return bad("reservation", r, "must be positive or -1");
        }
    }
    Ok(memory)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, SpecBuilder};

    fn spec_with(annotations: &[(&str, &str)], cgroups_path: Option<&str>) -> Spec {
        let mut linux = LinuxBuilder::default();
        if let Some(p) = cgroups_path {
            linux = linux.cgroups_path(p);
        }
        let mut b = SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(vec!["sh".to_string()])
                    .env(vec!["TERM=xterm".to_string()])
                    .build()
                    .unwrap_or_default(),
            )
            .linux(linux.build().unwrap_or_default());
        if !annotations.is_empty() {
            b = b.annotations(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
            );
        }
        b.build().unwrap_or_default()
    }

    #[test]
    fn default_placement_uses_app() {
        let p = plan(spec_with(&[], None), "web-0", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.cgroups_path, "/paddock/default/web-0");
        assert_eq!(p.app.as_deref(), Some("default"));
        let p = plan(spec_with(&[(APP, "shop")], None), "web-1", false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.cgroups_path, "/paddock/shop/web-1");
        let got = p
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone());
        assert_eq!(got, Some("/paddock/shop/web-1".into()));
    }

    #[test]
    fn explicit_path_is_honoured() {
        let p = plan(
            spec_with(&[(APP, "shop")], Some("/k8s/pod1/c1")),
            "c1",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.cgroups_path, "/k8s/pod1/c1");
        assert_eq!(p.app, None);
        let p = plan(spec_with(&[], Some("rel/x")), "x", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.cgroups_path, "/rel/x");
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["/a/../b", "/", "", "a:b:c"] {
            assert!(normalize_cgroups_path(p, false).is_err(), "{p}");
        }
        assert!(normalize_cgroups_path("a.slice:b", true).is_err());
        assert!(normalize_cgroups_path("bad:b:c", true).is_err());
    }

    #[test]
    fn systemd_paths_expand() {
        assert_eq!(
            normalize_cgroups_path("kubepods-besteffort.slice:cri-containerd:abc", true).ok(),
            Some("/kubepods.slice/kubepods-besteffort.slice/cri-containerd-abc.scope".to_string())
        );
        assert_eq!(
            normalize_cgroups_path(":paddock:x", true).ok(),
            Some("/system.slice/paddock-x.scope".to_string())
        );
    }

    #[test]
    fn path_env_is_injected_once() {
        let p = plan(spec_with(&[], None), "a", false).unwrap_or_else(|e| panic!("{e}"));
        let env = p
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default();
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        let again = plan(p.spec, "a", false).unwrap_or_else(|e| panic!("{e}"));
        let env = again
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default();
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
    }

    #[test]
    fn pids_annotation_sets_limit() {
        let p =
            plan(spec_with(&[(PIDS, "64")], None), "a", false).unwrap_or_else(|e| panic!("{e}"));
        let limit = p
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.pids().as_ref())
            .map(|p| p.limit());
        assert_eq!(limit, Some(64));
    }

    #[test]
    fn bad_annotations_name_the_key() {
        for (k, v) in [
            (PIDS, "-1"),
            (PIDS, "0"),
            (PIDS, "lots"),
            (APP, ""),
            (APP, "a/b"),
            (APP, ".."),
            ("io.paddock.bogus", "1"),
        ] {
            let err = match plan(spec_with(&[(k, v)], None), "a", false) {
                Ok(_) => panic!("{k}={v} accepted"),
                Err(e) => e.to_string(),
            };
            assert!(err.contains(k), "{err}");
        }
    }

    fn with_memory(limit: Option<i64>, swap: Option<i64>) -> Result<Plan> {
        let mut spec = spec_with(&[], None);
        let mut m = LinuxMemory::default();
        m.set_limit(limit);
        m.set_swap(swap);
        let mut r = LinuxResources::default();
        r.set_memory(Some(m));
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_resources(Some(r));
        spec.set_linux(Some(linux));
        plan(spec, "m", false)
    }

    fn swap_of(p: &Plan) -> Option<i64> {
        p.spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.memory().as_ref())
            .and_then(|m| m.swap())
    }

    #[test]
    fn no_swap_unless_asked() {
        let p = with_memory(Some(64 << 20), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(swap_of(&p), Some(64 << 20));
        let p = with_memory(Some(64 << 20), Some(128 << 20)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(swap_of(&p), Some(128 << 20));
        let p = with_memory(Some(64 << 20), Some(-1)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(swap_of(&p), Some(-1));
        let p = with_memory(Some(-1), None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(swap_of(&p), None);
    }

    #[test]
    fn bad_memory_values() {
        for (l, s, want) in [
            (Some(-5), None, "limit -5"),
            (Some(0), None, "limit 0"),
            (
                Some(64 << 20),
                Some(32 << 20),
                "smaller than the memory limit",
            ),
            (Some(64 << 20), Some(-2), "swap -2"),
        ] {
            match with_memory(l, s) {
                Ok(_) => panic!("{l:?}/{s:?} accepted"),
                Err(e) => assert!(e.to_string().contains(want), "{e}"),
            }
        }
    }

    #[test]
    fn oom_and_app_memory_annotations() {
        let p = plan(
            spec_with(&[(OOM, "kernel"), (APP_MEMORY, "256M")], None),
            "a",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.oom, OomPolicy::Kernel);
        assert_eq!(p.app_memory, Some(256 << 20));
        let p = plan(spec_with(&[], None), "a", false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.oom, OomPolicy::Kill);
        for (k, v) in [
            (OOM, "maybe"),
            (APP_MEMORY, "-1"),
            (APP_MEMORY, "1Q"),
            (APP_MEMORY, "0"),
        ] {
            assert!(
                plan(spec_with(&[(k, v)], None), "a", false).is_err(),
                "{k}={v}"
            );
        }
        let explicit = plan(spec_with(&[(APP_MEMORY, "1G")], Some("/k8s/x")), "x", false);
        assert!(explicit.is_err(), "app memory with a caller's cgroupsPath");
    }

    #[test]
    fn default_seccomp_and_no_new_privs() {
        let p = plan(spec_with(&[], None), "a", false).unwrap_or_else(|e| panic!("{e}"));
        let seccomp = p.spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        assert!(seccomp.is_some(), "no default profile");
        let nnp = p
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.no_new_privileges());
        assert_eq!(nnp, Some(true));
        let arch = crate::seccomp::native_arch().unwrap_or_else(|e| panic!("{e}"));
        let profile = seccomp.unwrap_or_default();
        assert!(crate::seccomp::compile(&profile, arch).is_ok());
    }

    #[test]
    fn disk_annotations() {
        let p = plan(
            spec_with(
                &[(DISK, "512M"), (DISK_INODES, "1000"), (DISK_PATH, "/data")],
                None,
            ),
            "a",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.disk,
            Some(Disk {
                bytes: 512 << 20,
                inodes: Some(1000),
                path: Some("/data".into())
            })
        );
        for (k, v) in [
            (DISK, "-1"),
            (DISK, "1Q"),
            (DISK, "0"),
            (DISK, ""),
            (DISK_PATH, "rel"),
            (DISK_PATH, "/a/../b"),
        ] {
            let with_size: Vec<(&str, &str)> = if k == DISK {
                vec![(k, v)]
            } else {
                vec![(DISK, "1G"), (k, v)]
            };
            match plan(spec_with(&with_size, None), "a", false) {
                Ok(_) => panic!("{k}={v} accepted"),
                Err(e) => assert!(e.to_string().contains(k), "{e}"),
            }
        }
        assert!(plan(spec_with(&[(DISK_INODES, "10")], None), "a", false).is_err());
    }

    #[test]
    fn masked_and_readonly_defaults_only_when_absent() {
        let p = plan(spec_with(&[], None), "a", false).unwrap_or_else(|e| panic!("{e}"));
        let linux = p.spec.linux().clone().unwrap_or_default();
        let masked = linux.masked_paths().clone().unwrap_or_default();
        assert!(masked.iter().any(|m| m == "/proc/kcore"));
        let ro = linux.readonly_paths().clone().unwrap_or_default();
        assert!(ro.iter().any(|m| m == "/proc/sys"));
        let mut spec = spec_with(&[], None);
        let mut l = spec.linux().clone().unwrap_or_default();
        l.set_masked_paths(Some(vec![]));
        spec.set_linux(Some(l));
        let p = plan(spec, "a", false).unwrap_or_else(|e| panic!("{e}"));
        let linux = p.spec.linux().clone().unwrap_or_default();
        assert_eq!(
            linux.masked_paths().clone(),
            Some(vec![]),
            "an explicit empty list stands"
        );
    }

    #[test]
    fn user_annotation() {
        let p = plan(spec_with(&[], None), "a", false).unwrap_or_else(|e| panic!("{e}"));
        assert!(p.pool_user);
        let p =
            plan(spec_with(&[(USER, "spec")], None), "a", false).unwrap_or_else(|e| panic!("{e}"));
        assert!(!p.pool_user);
        assert!(plan(spec_with(&[(USER, "root")], None), "a", false).is_err());
        let mut spec = spec_with(&[], None);
        run_as(&mut spec, 2_010_000_007, 2_010_000_007);
        let user = spec
            .process()
            .as_ref()
            .map(|p| p.user().clone())
            .unwrap_or_default();
        assert_eq!((user.uid(), user.gid()), (2_010_000_007, 2_010_000_007));
        assert_eq!(user.additional_gids(), &None);
        let process = spec.process().clone().unwrap_or_default();
        let caps = process.capabilities().clone().unwrap_or_default();
        for set in [
            caps.bounding(),
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient(),
        ] {
            assert_eq!(set.as_ref().map(|s| s.len()), Some(0));
        }
        assert_eq!(process.no_new_privileges(), Some(true));
    }

    #[test]
    fn cpu_annotations() {
        let p = plan(
            spec_with(&[(CPU, "exclusive:2"), (APP_CPU, "1.5")], None),
            "a",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.cpu, CpuMode::Exclusive(2));
        assert_eq!(p.app_cpu, Some(1500));
        let p = plan(spec_with(&[(APP_CPU, "250m")], None), "a", false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.cpu, p.app_cpu), (CpuMode::Equal, Some(250)));
        assert_eq!(millicpus("2"), Ok(2000));
        assert_eq!(millicpus("0.05"), Ok(50));
        for (k, v) in [
            (CPU, "fast"),
            (CPU, "exclusive:0"),
            (CPU, "exclusive:two"),
            (CPU, "exclusive:"),
            (APP_CPU, "0"),
            (APP_CPU, "-1"),
            (APP_CPU, "abc"),
            (APP_CPU, "1.2.3"),
            (APP_CPU, "0.0001"),
            (APP_CPU, "m"),
        ] {
            match plan(spec_with(&[(k, v)], None), "a", false) {
                Ok(_) => panic!("{k}={v} accepted"),
                Err(e) => assert!(e.to_string().contains(k), "{k}={v}: {e}"),
            }
        }
        let explicit = plan(spec_with(&[(APP_CPU, "1")], Some("/k8s/x")), "x", false);
        assert!(explicit.is_err(), "app cpu with a caller's cgroupsPath");
    }

    fn with_cpus(annotations: &[(&str, &str)], cpus: &str, shares: Option<u64>) -> Result<Plan> {
        let mut spec = spec_with(annotations, None);
        let mut c = oci_spec::runtime::LinuxCpu::default();
        c.set_cpus(Some(cpus.into()));
        c.set_shares(shares);
        let mut r = LinuxResources::default();
        r.set_cpu(Some(c));
        let mut linux = spec.linux().clone().unwrap_or_default();
        linux.set_resources(Some(r));
        spec.set_linux(Some(linux));
        plan(spec, "c", false)
    }

    #[test]
    fn spec_cpus_become_a_request() {
        let p = with_cpus(&[], "0-1", Some(4096)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.cpu_request.map(|s| s.to_string()), Some("0-1".into()));
        let shares = p
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.cpu().as_ref())
            .and_then(|c| c.shares());
        assert_eq!(
            shares, None,
            "paddock's placement weighs every instance the same"
        );
        let e = with_cpus(&[], "0-x", None).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("linux.resources.cpu.cpus")));
        let e = with_cpus(&[(CPU, "exclusive:1")], "0", None)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains(CPU) && e.contains("conflicts")));
    }

    #[test]
    fn deny_list_annotation() {
        let p = plan(
            spec_with(&[(ACL_DENY, " /usr/bin/su, /opt/x ,/usr/bin/su")], None),
            "a",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.deny,
            vec![
                std::path::PathBuf::from("/usr/bin/su"),
                std::path::PathBuf::from("/opt/x")
            ]
        );
        assert!(parse_deny_list("  ")
            .unwrap_or_else(|e| panic!("{e}"))
            .is_empty());
        for (value, want) in [
            ("usr/bin/su", "usr/bin/su is not an absolute path"),
            ("/a,,/b", "entry 2 is empty"),
            ("/a,", "entry 2 is empty"),
            ("/usr/../etc/shadow", "has a . or .. component"),
            ("/usr/./bin", "has a . or .. component"),
            ("/", "/ cannot be denied"),
        ] {
            match plan(spec_with(&[(ACL_DENY, value)], None), "a", false) {
                Ok(_) => panic!("{value} accepted"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(e.starts_with("annotation io.paddock.acl.deny="), "{e}");
                    assert!(e.ends_with(want), "{e} (wanted {want})");
                }
            }
        }
        let e = plan(
            spec_with(&[(ACL_DENY, "/x"), (USER, "spec")], None),
            "a",
            false,
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("needs a pool identity"), "{e}");
    }

    #[test]
    fn userns_annotation_and_mapping() {
        let p = plan(spec_with(&[(USERNS, "true")], None), "a", false)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(p.userns);
        assert!(!plan(spec_with(&[], None), "a", false)
            .map(|p| p.userns)
            .unwrap_or(true));
        assert!(plan(spec_with(&[(USERNS, "yes")], None), "a", false).is_err());
        // A deny list applies with a user namespace too (to container root's host id).
        let p = plan(
            spec_with(&[(USERNS, "true"), (ACL_DENY, "/usr/bin/cc")], None),
            "a",
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.deny, vec![std::path::PathBuf::from("/usr/bin/cc")]);

        let mut spec = p.spec;
        assert_eq!(host_user(&spec), Some((0, 0)), "no mapping: the spec's ids");
        ok(map_userns(&mut spec, 2_139_029_504, 65536));
        let linux = spec.linux().clone().unwrap_or_default();
        let ns = linux.namespaces().clone().unwrap_or_default();
        assert_eq!(
            ns.iter()
                .filter(|n| n.typ() == LinuxNamespaceType::User)
                .count(),
            1
        );
        for maps in [linux.uid_mappings(), linux.gid_mappings()] {
            let m = maps.clone().unwrap_or_default();
            assert_eq!(m.len(), 1);
            assert_eq!(
                (m[0].container_id(), m[0].host_id(), m[0].size()),
                (0, 2_139_029_504, 65536)
            );
        }
        assert_eq!(host_user(&spec), Some((2_139_029_504, 2_139_029_504)));
        let mut process = spec.process().clone().unwrap_or_default();
        let caps = process.capabilities().clone().unwrap_or_default();
        assert_eq!(caps.bounding().as_ref().map(|s| s.len()), Some(0));
        assert_eq!(process.no_new_privileges(), Some(true));
        let mut user = process.user().clone();
        user.set_uid(1000);
        user.set_gid(70000);
        process.set_user(user);
        spec.set_process(Some(process));
        assert_eq!(host_user(&spec), None, "gid 70000 is not mapped");

        // A spec with its own user namespace cannot get paddock's.
        let mut own = spec_with(&[(USERNS, "true")], None);
        let mut l = own.linux().clone().unwrap_or_default();
        let mut user_ns = LinuxNamespace::default();
        user_ns.set_typ(LinuxNamespaceType::User);
        l.set_namespaces(Some(vec![user_ns]));
        own.set_linux(Some(l));
        let e = plan(own, "a", false)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("already has a user namespace"), "{e}");
    }

    fn ok<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn foreign_annotations_pass() {
        let p = plan(
            spec_with(&[("io.kubernetes.cri.sandbox-id", "x")], None),
            "a",
            false,
        );
        assert!(p.is_ok());
    }
}
