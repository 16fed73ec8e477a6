//! Where a sandbox's cgroup lives on this host: one directory per v1 hierarchy (hybrid layout)
//! or one directory in the unified v2 tree. Mount parsing is pure and unit-tested; reading the
//! host's mount table is one call.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount_point: PathBuf,
    /// `true` for cgroup2.
    pub unified: bool,
    /// v1 controllers (and `name=...`) of the hierarchy; empty for v2.
    pub controllers: Vec<String>,
}

/// The cgroup layout of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub hierarchies: Vec<Hierarchy>,
}

/// A sandbox's cgroup: the same relative path in every hierarchy.
#[derive(Debug, Clone)]
pub struct SandboxCgroup {
    pub layout: Layout,
    pub path: String,
}

impl Layout {
    /// Reads the layout from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self> {
        let text = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
        Ok(Self::from_mountinfo(&text))
    }

    /// Parses mountinfo lines, keeping cgroup and cgroup2 mounts (first mount of each
    /// hierarchy wins, as the kernel lists the host's own mounts first).
    pub fn from_mountinfo(text: &str) -> Self {
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let left: Vec<&str> = left.split_whitespace().collect();
            let right: Vec<&str> = right.split_whitespace().collect();
            let (Some(mount_point), Some(fstype)) = (left.get(4), right.first()) else {
                continue;
            };
            let mount_point = PathBuf::from(unescape(mount_point));
            let h = match *fstype {
                "cgroup2" => Hierarchy {
                    mount_point,
                    unified: true,
                    controllers: Vec::new(),
                },
                "cgroup" => {
                    let opts = right.get(2).copied().unwrap_or("");
                    let controllers: Vec<String> = opts
                        .split(',')
                        .filter(|o| is_v1_controller(o))
                        .map(str::to_string)
                        .collect();
                    Hierarchy {
                        mount_point,
                        unified: false,
                        controllers,
                    }
                }
                _ => continue,
            };
            let dup = hierarchies.iter().any(|x| {
                x.unified == h.unified && (x.controllers == h.controllers)
                    || x.mount_point == h.mount_point
            });
            if !dup {
                hierarchies.push(h);
            }
        }
        Layout { hierarchies }
    }

    /// True when cgroup v2 is the only hierarchy (no v1 controller is mounted).
    pub fn is_unified(&self) -> bool {
        self.hierarchies.iter().all(|h| h.unified) && !self.hierarchies.is_empty()
    }

    /// The v1 hierarchy carrying `controller`.
    pub fn v1(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .find(|h| !h.unified && h.controllers.iter().any(|c| c == controller))
    }

    /// The v2 hierarchy, if mounted.
    pub fn v2(&self) -> Option<&Hierarchy> {
        self.hierarchies.iter().find(|h| h.unified)
    }
}

fn is_v1_controller(opt: &str) -> bool {
    matches!(
        opt,
        "cpu"
            | "cpuacct"
            | "cpuset"
            | "memory"
            | "devices"
            | "freezer"
            | "blkio"
            | "pids"
            | "hugetlb"
            | "perf_event"
            | "net_cls"
            | "net_prio"
            | "rdma"
            | "misc"
    ) || opt.starts_with("name=")
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SandboxCgroup {
    pub fn new(layout: Layout, path: &str) -> Self {
        Self {
            layout,
            path: path.trim_start_matches('/').to_string(),
        }
    }

    /// The sandbox directory in every hierarchy, existing or not.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.layout
            .hierarchies
            .iter()
            .map(|h| h.mount_point.join(&self.path))
            .collect()
    }

    /// The sandbox directory in the v1 hierarchy of `controller`.
    pub fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        self.layout
            .v1(controller)
            .map(|h| h.mount_point.join(&self.path))
    }

    /// The sandbox directory in the unified hierarchy, when the host is cgroup v2 only.
    pub fn v2_dir(&self) -> Option<PathBuf> {
        if self.layout.is_unified() {
            self.layout.v2().map(|h| h.mount_point.join(&self.path))
        } else {
            None
        }
    }

    /// Whether any process is left, looking at one hierarchy (processes leave every
    /// hierarchy at once when they exit): the cheap check for teardown's wait loop. On v2 it
    /// is the subtree's "populated" flag in `cgroup.events`, else the tree's `cgroup.procs`.
    /// (v1 `pids.current` would be cheaper but counts zombies nobody reaps yet, which neither
    /// `cgroup.procs` nor rmdir counts.)
    pub fn is_empty(&self) -> bool {
        if let Some(dir) = self.v2_dir() {
            if let Ok(events) = fs::read_to_string(dir.join("cgroup.events")) {
                return !populated(&events);
            }
        }
        let dir = ["pids", "freezer", "memory"]
            .iter()
            .find_map(|c| self.v1_dir(c))
            .or_else(|| self.v2_dir())
            .or_else(|| self.dirs().into_iter().next());
        match dir {
            Some(d) => tree_is_empty(&d),
            None => true,
        }
    }

    /// The sandbox directory that `teardown::freeze` freezes: the v2 directory on a unified
    /// host, else the v1 freezer's.
    pub fn freezer_dir(&self) -> Option<PathBuf> {
        self.v2_dir().or_else(|| self.v1_dir("freezer"))
    }

    /// The pids of the frozen hierarchy's tree alone. Under a freeze nothing in it can fork,
    /// so this list is complete for that hierarchy and costs one read per directory instead of
    /// one per hierarchy.
    pub fn freezer_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Some(dir) = self.freezer_dir() {
            collect_pids(&dir, &mut pids);
        }
        pids
    }

    /// Every pid in the sandbox's cgroup trees, in any hierarchy, without duplicates.
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in self.dirs() {
            collect_pids(&dir, &mut pids);
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }
}

/// Whether a v2 `cgroup.events` says the subtree has processes.
fn populated(events: &str) -> bool {
    events.lines().any(|l| l.trim() == "populated 1")
}

fn tree_is_empty(dir: &Path) -> bool {
    match fs::read(dir.join("cgroup.procs")) {
        Ok(b) if !b.is_empty() => return false,
        Ok(_) => {}
        Err(_) => return true,
    }
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .all(|e| tree_is_empty(&e.path())),
        Err(_) => true,
    }
}

/// Appends the pids of `dir` and its descendants; a directory that vanished counts as empty.
pub fn collect_pids(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
36 30 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
40 20 0:30 / /mnt/again rw - cgroup cgroup rw,memory
";

    const UNIFIED: &str = "\
25 20 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn parses_hybrid_layout() {
        let l = Layout::from_mountinfo(HYBRID);
        assert_eq!(l.hierarchies.len(), 6, "{l:?}");
        assert!(!l.is_unified());
        assert_eq!(
            l.v1("cpuacct").map(|h| h.mount_point.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(
            l.v1("memory").map(|h| h.mount_point.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        let cg = SandboxCgroup::new(l, "/paddock/default/a");
        assert_eq!(cg.v2_dir(), None);
        assert_eq!(
            cg.v1_dir("freezer"),
            Some(PathBuf::from("/sys/fs/cgroup/freezer/paddock/default/a"))
        );
        assert_eq!(cg.dirs().len(), 6);
        assert_eq!(cg.freezer_dir(), cg.v1_dir("freezer"));
    }

    #[test]
    fn parses_unified_layout() {
        let l = Layout::from_mountinfo(UNIFIED);
        assert!(l.is_unified());
        let cg = SandboxCgroup::new(l, "/paddock/app/x");
        assert_eq!(
            cg.v2_dir(),
            Some(PathBuf::from("/sys/fs/cgroup/paddock/app/x"))
        );
        assert_eq!(cg.v1_dir("memory"), None);
        assert_eq!(cg.freezer_dir(), cg.v2_dir());
    }

    #[test]
    fn freezer_pids_read_the_frozen_tree_alone() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let info = format!(
            "35 30 0:31 / {0}/freezer rw - cgroup cgroup rw,freezer\n\
             36 30 0:32 / {0}/pids rw - cgroup cgroup rw,pids\n",
            tmp.path().display()
        );
        let cg = SandboxCgroup::new(Layout::from_mountinfo(&info), "/paddock/app/x");
        let write = |rel: &str, pids: &str| {
            let dir = tmp.path().join(rel);
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(dir.join("cgroup.procs"), pids).unwrap_or_else(|e| panic!("{e}"));
        };
        write("freezer/paddock/app/x", "10\n11\n");
        write("freezer/paddock/app/x/sub", "12\n");
        write("pids/paddock/app/x", "10\n11\n12\n99\n");
        let mut frozen = cg.freezer_pids();
        frozen.sort_unstable();
        assert_eq!(frozen, vec![10, 11, 12]);
        assert_eq!(cg.pids(), vec![10, 11, 12, 99]);
        assert!(!cg.is_empty());
    }

    #[test]
    fn v2_emptiness_is_the_populated_flag() {
        assert!(populated("populated 1\nfrozen 0\n"));
        assert!(!populated("populated 0\nfrozen 1\n"));
        assert!(!populated(""));
    }

    #[test]
    fn unescapes_mount_points() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }
}
