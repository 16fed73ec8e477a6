//! CPU arithmetic of the node, free of I/O except reading a topology tree it is given: CPU
//! lists, the topology (which logical CPUs share a physical core), the choice of exclusive CPUs
//! (`same-core` packs sibling hyperthreads, `spread` takes one thread per physical core), the
//! shared pool (all − reserved − exclusive) and the cap of each capped instance (pool / N).
//!
//! The registry of live sandboxes ([`Registry`]) is plain data too: `cpu_node` loads it under
//! the node lock, lets these functions decide, saves it and writes the cgroups.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The CFS period paddock uses for every quota it writes, in µs.
pub const PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts, in µs.
pub const MIN_QUOTA_US: u64 = 1_000;
/// CPU ids above this are refused when parsing (a typo like `0-4000000000` must not allocate).
const MAX_CPU_ID: u32 = 1 << 16;

/// A set of logical CPUs, written as the kernel writes it (`0-3,8,10-11`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CpuSet(BTreeSet<u32>);

impl CpuSet {
    /// Parses a kernel CPU list. An empty string is the empty set.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for part in text
            .trim()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (cpu_id(a)?, cpu_id(b)?),
                None => {
                    let c = cpu_id(part)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(format!("range {part} runs backwards"));
            }
            set.extend(lo..=hi);
        }
        Ok(Self(set))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu);
    }

    pub fn union(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.union(&other.0).copied().collect())
    }

    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.difference(&other.0).copied().collect())
    }

    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        Self(self.0.intersection(&other.0).copied().collect())
    }

    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

fn cpu_id(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a CPU number"))?;
    if n > MAX_CPU_ID {
        return Err(format!("CPU {n} is out of range"));
    }
    Ok(n)
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut iter = self.0.iter().copied().peekable();
        while let Some(lo) = iter.next() {
            let mut hi = lo;
            while iter.peek() == Some(&(hi + 1)) {
                hi += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl From<CpuSet> for String {
    fn from(s: CpuSet) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for CpuSet {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CpuSet::parse(&s)
    }
}

/// The node's online CPUs grouped by physical core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Each physical core's online threads, sorted; cores sorted by their first thread.
    cores: Vec<Vec<u32>>,
}

impl Topology {
    /// A topology from explicit cores (each a list of sibling threads).
    pub fn from_cores(cores: Vec<Vec<u32>>) -> Self {
        let mut cores: Vec<Vec<u32>> = cores
            .into_iter()
            .map(|mut c| {
                c.sort_unstable();
                c.dedup();
                c
            })
            .filter(|c| !c.is_empty())
            .collect();
        cores.sort();
        Self { cores }
    }

    /// Reads a tree shaped like `/sys/devices/system/cpu`: `online`, and for each online CPU
    /// `cpuN/topology/thread_siblings_list`. A CPU without topology files is its own core.
    pub fn read(dir: &Path) -> std::io::Result<Self> {
        let online = match std::fs::read_to_string(dir.join("online")) {
            Ok(text) => CpuSet::parse(&text).map_err(|e| invalid(&dir.join("online"), &e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => listed_cpus(dir)?,
            Err(e) => return Err(e),
        };
        let mut seen = CpuSet::default();
        let mut cores = Vec::new();
        for cpu in online.iter() {
            if seen.contains(cpu) {
                continue;
            }
            let file = dir.join(format!("cpu{cpu}/topology/thread_siblings_list"));
            let siblings = match std::fs::read_to_string(&file) {
                Ok(text) => CpuSet::parse(&text).map_err(|e| invalid(&file, &e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => [cpu].into_iter().collect(),
                Err(e) => return Err(e),
            };
            let mut core = siblings.intersection(&online);
            core.insert(cpu);
            seen = seen.union(&core);
            cores.push(core.iter().collect());
        }
        if cores.is_empty() {
            return Err(invalid(dir, "no online CPU"));
        }
        Ok(Self::from_cores(cores))
    }

    /// Every online CPU.
    pub fn cpus(&self) -> CpuSet {
        self.cores.iter().flatten().copied().collect()
    }

    pub fn cores(&self) -> &[Vec<u32>] {
        &self.cores
    }
}

fn invalid(path: &Path, what: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

/// `cpuN` directories, for trees without an `online` file.
fn listed_cpus(dir: &Path) -> std::io::Result<CpuSet> {
    let mut set = CpuSet::default();
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) {
            set.insert(n);
        }
    }
    Ok(set)
}

/// How exclusive CPUs are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Sibling hyperthreads together: as few physical cores as possible, whole cores first.
    #[default]
    SameCore,
    /// One thread per physical core, on cores that hold no other exclusive CPU first.
    Spread,
}

/// A share of the node's CPUs, `num/den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    pub num: u64,
    pub den: u64,
}

impl Ratio {
    /// Parses `2/3`, `0.5` or `1`; the share must lie in [0, 1].
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let r = if let Some((a, b)) = t.split_once('/') {
            let num = a.trim().parse::<u64>().map_err(|_| bad_ratio(t))?;
            let den = b.trim().parse::<u64>().map_err(|_| bad_ratio(t))?;
            Ratio { num, den }
        } else {
            let (int, frac) = t.split_once('.').unwrap_or((t, ""));
            if frac.len() > 6 || (int.is_empty() && frac.is_empty()) {
                return Err(bad_ratio(t));
            }
            let digits = |s: &str| s.is_empty() || s.bytes().all(|b| b.is_ascii_digit());
            if !digits(int) || !digits(frac) {
                return Err(bad_ratio(t));
            }
            let den = 10u64.pow(frac.len() as u32);
            let int: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| bad_ratio(t))?
            };
            let frac: u64 = if frac.is_empty() {
                0
            } else {
                frac.parse().map_err(|_| bad_ratio(t))?
            };
            Ratio {
                num: int.saturating_mul(den).saturating_add(frac),
                den,
            }
        };
        if r.den == 0 || r.num > r.den {
            return Err(format!("{t:?}: a share between 0 and 1 is needed"));
        }
        Ok(r)
    }

    /// The whole number of CPUs this share of `total` allows (rounded down).
    pub fn of(&self, total: usize) -> usize {
        (total as u64 * self.num / self.den) as usize
    }
}

fn bad_ratio(t: &str) -> String {
    format!("{t:?}: expected a fraction like 2/3 or 0.5")
}

/// The CPU mode of an instance (`io.paddock.cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuMode {
    /// Equal weight, no hard limit.
    #[default]
    Equal,
    /// Equal weight and a quota of (shared CPUs) / (capped instances).
    Cap,
    /// This many CPUs for the instance alone.
    Exclusive(u32),
}

impl CpuMode {
    /// Parses `equal`, `cap` or `exclusive:K` (K ≥ 1).
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "equal" => Ok(CpuMode::Equal),
            "cap" => Ok(CpuMode::Cap),
            t => {
                let Some(k) = t.strip_prefix("exclusive:") else {
                    return Err("expected equal, cap or exclusive:K".into());
                };
                match k.trim().parse::<u32>() {
                    Ok(0) => Err("exclusive needs at least 1 CPU".into()),
                    Ok(k) => Ok(CpuMode::Exclusive(k)),
                    Err(_) => Err(format!("{k:?} is not a whole number of CPUs")),
                }
            }
        }
    }
}

/// The node's CPU policy as the arithmetic needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePolicy {
    pub topology: Topology,
    /// CPUs left to the system: neither exclusive nor in the shared pool.
    pub reserved: CpuSet,
    /// The share of all CPUs that exclusive instances may hold together.
    pub max_exclusive: Ratio,
    pub placement: Placement,
}

/// Why exclusive CPUs could not be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{asked} exclusive CPUs asked, {held} already exclusive: more than the node's maximum exclusive share of {max} of its {total} CPUs")]
    OverShare {
        asked: usize,
        held: usize,
        max: usize,
        total: usize,
    },
    #[error("{asked} exclusive CPUs asked, only {free} are free and the shared pool must keep at least one")]
    NotEnough { asked: usize, free: usize },
    #[error("{asked} exclusive CPUs asked with placement spread, only {cores} physical cores have a free thread")]
    NotEnoughCores { asked: usize, cores: usize },
}

impl NodePolicy {
    /// The shared pool: every online CPU that is neither reserved nor held exclusively.
    pub fn pool(&self, exclusive: &CpuSet) -> CpuSet {
        self.topology
            .cpus()
            .difference(&self.reserved)
            .difference(exclusive)
    }

    /// Chooses `k` CPUs for one instance, given those already held exclusively.
    pub fn allocate(&self, k: usize, held: &CpuSet) -> Result<CpuSet, AllocError> {
        let total = self.topology.cpus().len();
        let max = self.max_exclusive.of(total);
        if held.len() + k > max {
            return Err(AllocError::OverShare {
                asked: k,
                held: held.len(),
                max,
                total,
            });
        }
        let free = self.pool(held);
        // The pool must keep a CPU for the shared instances.
        if k >= free.len() {
            return Err(AllocError::NotEnough {
                asked: k,
                free: free.len().saturating_sub(1),
            });
        }
        let free_by_core: Vec<Vec<u32>> = self
            .topology
            .cores()
            .iter()
            .map(|c| c.iter().copied().filter(|t| free.contains(*t)).collect())
            .collect();
        match self.placement {
            Placement::SameCore => Ok(same_core(&free_by_core, k)),
            Placement::Spread => spread(self.topology.cores(), &free_by_core, held, k),
        }
    }
}

/// Packs `k` threads onto as few cores as possible: a core whose free threads match what is
/// still needed exactly first, then the fullest cores that fit whole, then part of the smallest
/// core that covers the rest (so the fewest cores are split).
fn same_core(free_by_core: &[Vec<u32>], k: usize) -> CpuSet {
    let mut taken = CpuSet::default();
    let mut used = vec![false; free_by_core.len()];
    let mut need = k;
    while need > 0 {
        let candidates = || {
            free_by_core
                .iter()
                .enumerate()
                .filter(|(i, c)| !used[*i] && !c.is_empty())
        };
        let exact = candidates().find(|(_, c)| c.len() == need);
        let whole = candidates()
            .filter(|(_, c)| c.len() < need)
            .max_by_key(|(i, c)| (c.len(), std::cmp::Reverse(*i)));
        let partial = candidates()
            .filter(|(_, c)| c.len() > need)
            .min_by_key(|(i, c)| (c.len(), *i));
        let Some((i, core)) = exact.or(whole).or(partial) else {
            break;
        };
        used[i] = true;
        for &t in core.iter().take(need) {
            taken.insert(t);
        }
        need -= core.len().min(need);
    }
    taken
}

/// One thread on each of `k` cores: cores with no exclusive thread yet first, then cores whose
/// other threads are exclusive, lowest first.
fn spread(
    cores: &[Vec<u32>],
    free_by_core: &[Vec<u32>],
    held: &CpuSet,
    k: usize,
) -> Result<CpuSet, AllocError> {
    let mut order: Vec<usize> = (0..cores.len())
        .filter(|&i| !free_by_core[i].is_empty())
        .collect();
    if order.len() < k {
        return Err(AllocError::NotEnoughCores {
            asked: k,
            cores: order.len(),
        });
    }
    order.sort_by_key(|&i| (cores[i].iter().any(|t| held.contains(*t)), i));
    Ok(order
        .iter()
        .take(k)
        .filter_map(|&i| free_by_core[i].first().copied())
        .collect())
}

/// The quota of each of `n` capped instances sharing `pool` CPUs, in µs per [`PERIOD_US`].
pub fn cap_quota(pool: usize, n: usize) -> u64 {
    if n == 0 {
        return PERIOD_US * pool as u64;
    }
    (PERIOD_US * pool as u64 / n as u64).max(MIN_QUOTA_US)
}

/// One live sandbox as the node's CPU registry knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// paddock's record directory of the sandbox: when it is gone, so is the sandbox.
    pub record_dir: PathBuf,
    /// The sandbox's cgroup, relative to each hierarchy's root.
    pub cgroups_path: String,
    pub mode: CpuMode,
    /// The CPUs the sandbox holds exclusively (empty unless pinned in mode exclusive).
    #[serde(default)]
    pub exclusive: CpuSet,
    /// The CPUs the spec asked for; a shared sandbox runs on these within the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<CpuSet>,
    /// The app cgroup above it, when paddock placed it (`/paddock/<app>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

impl Entry {
    /// Whether the sandbox runs on CPUs of its own (not on the pool).
    pub fn pinned(&self) -> bool {
        !self.exclusive.is_empty()
    }
}

/// What paddock writes into one sandbox's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Its cpuset.
    pub cpus: CpuSet,
    /// Its CFS quota per [`PERIOD_US`]; `None`: not paddock's to set.
    pub quota: Option<u64>,
}

/// Every live sandbox of the node, by node key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub sandboxes: BTreeMap<String, Entry>,
    /// The quota of each capped app cgroup, µs per [`PERIOD_US`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, u64>,
}

impl Registry {
    /// All CPUs held exclusively.
    pub fn exclusive(&self) -> CpuSet {
        self.sandboxes
            .values()
            .fold(CpuSet::default(), |acc, e| acc.union(&e.exclusive))
    }

    /// Adds a sandbox, choosing its exclusive CPUs in mode exclusive. On error the registry is
    /// unchanged.
    pub fn admit(
        &mut self,
        policy: &NodePolicy,
        key: &str,
        mut entry: Entry,
    ) -> Result<(), AllocError> {
        self.sandboxes.remove(key);
        entry.exclusive = match entry.mode {
            CpuMode::Exclusive(k) => policy.allocate(k as usize, &self.exclusive())?,
            _ => CpuSet::default(),
        };
        self.sandboxes.insert(key.to_string(), entry);
        Ok(())
    }

    /// Gives an exclusive sandbox's CPUs back to the pool (`pinned = false`) or pins it again.
    /// Returns whether anything changed.
    pub fn set_pinned(
        &mut self,
        policy: &NodePolicy,
        key: &str,
        pinned: bool,
    ) -> Result<bool, AllocError> {
        let held = self.exclusive();
        let Some(entry) = self.sandboxes.get_mut(key) else {
            return Ok(false);
        };
        let CpuMode::Exclusive(k) = entry.mode else {
            return Ok(false);
        };
        match (pinned, entry.pinned()) {
            (true, false) => entry.exclusive = policy.allocate(k as usize, &held)?,
            (false, true) => entry.exclusive = CpuSet::default(),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Removes a sandbox, and its app's quota with the app's last sandbox.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let gone = self.sandboxes.remove(key)?;
        if let Some(app) = &gone.app {
            if !self.sandboxes.values().any(|e| e.app.as_ref() == Some(app)) {
                self.apps.remove(app);
            }
        }
        Some(gone)
    }

    /// What every sandbox gets: exclusive ones their CPUs; shared ones the pool (within what
    /// their spec asked, when that still meets the pool); capped ones also pool / N, never more
    /// than their app's quota (cgroup v1 refuses a child quota above its parent's).
    pub fn assignments(&self, policy: &NodePolicy) -> BTreeMap<String, Assignment> {
        let pool = policy.pool(&self.exclusive());
        let capped = self
            .sandboxes
            .values()
            .filter(|e| e.mode == CpuMode::Cap)
            .count();
        let quota = cap_quota(pool.len(), capped);
        self.sandboxes
            .iter()
            .map(|(key, e)| {
                let cpus = if e.pinned() {
                    e.exclusive.clone()
                } else {
                    match &e.request {
                        Some(r) if !r.intersection(&pool).is_empty() => r.intersection(&pool),
                        _ => pool.clone(),
                    }
                };
                let app_quota = e.app.as_ref().and_then(|a| self.apps.get(a)).copied();
                let quota = (e.mode == CpuMode::Cap).then(|| match app_quota {
                    Some(a) => quota.min(a),
                    None => quota,
                });
                (key.clone(), Assignment { cpus, quota })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> CpuSet {
        CpuSet::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `n` CPUs numbered like Linux on x86: thread 0 of every core first, then thread 1
    /// (cpu i and cpu i + n/2 are siblings).
    fn ht(n: u32) -> Topology {
        Topology::from_cores((0..n / 2).map(|c| vec![c, c + n / 2]).collect())
    }

    fn node(topology: Topology, placement: Placement) -> NodePolicy {
        NodePolicy {
            topology,
            reserved: CpuSet::default(),
            max_exclusive: Ratio { num: 2, den: 3 },
            placement,
        }
    }

    fn entry(id: &str, mode: CpuMode) -> Entry {
        Entry {
            id: id.into(),
            record_dir: format!("/r/{id}").into(),
            cgroups_path: format!("/paddock/default/{id}"),
            mode,
            exclusive: CpuSet::default(),
            request: None,
            app: Some("/paddock/default".into()),
        }
    }

    #[test]
    fn cpu_lists_round_trip() {
        for s in ["", "0", "0-3", "0-3,8,10-11", "1,3,5"] {
            assert_eq!(set(s).to_string(), s);
        }
        assert_eq!(set("3,0-2\n").to_string(), "0-3");
        assert_eq!(set(" 0 , 2 ").to_string(), "0,2");
        for bad in ["a", "3-1", "0-", "-1", "0-99999999"] {
            assert!(CpuSet::parse(bad).is_err(), "{bad}");
        }
        let json = serde_json::to_string(&set("0-2,5")).unwrap_or_default();
        assert_eq!(json, "\"0-2,5\"");
    }

    #[test]
    fn ratios() {
        assert_eq!(Ratio::parse("2/3").map(|r| r.of(2)), Ok(1));
        assert_eq!(Ratio::parse("2/3").map(|r| r.of(8)), Ok(5));
        assert_eq!(Ratio::parse("2/3").map(|r| r.of(64)), Ok(42));
        assert_eq!(Ratio::parse("0.5").map(|r| r.of(64)), Ok(32));
        assert_eq!(Ratio::parse("1").map(|r| r.of(8)), Ok(8));
        assert_eq!(Ratio::parse(".25").map(|r| r.of(8)), Ok(2));
        for bad in ["", "3/2", "1/0", "1.5", "x", "-1", "0.1234567", "."] {
            assert!(Ratio::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(CpuMode::parse("equal"), Ok(CpuMode::Equal));
        assert_eq!(CpuMode::parse("cap"), Ok(CpuMode::Cap));
        assert_eq!(CpuMode::parse("exclusive:3"), Ok(CpuMode::Exclusive(3)));
        for bad in [
            "",
            "exclusive",
            "exclusive:0",
            "exclusive:-1",
            "exclusive:x",
            "share",
        ] {
            assert!(CpuMode::parse(bad).is_err(), "{bad}");
        }
    }

    fn write(path: &Path, text: &str) {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    }

    /// A sysfs-shaped tree for `topology` with `online` online.
    fn sysfs(topology: &Topology, online: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write(&tmp.path().join("online"), &format!("{online}\n"));
        write(&tmp.path().join("possible"), "0-255\n");
        for core in topology.cores() {
            let siblings: CpuSet = core.iter().copied().collect();
            for t in core {
                write(
                    &tmp.path()
                        .join(format!("cpu{t}/topology/thread_siblings_list")),
                    &format!("{siblings}\n"),
                );
            }
        }
        tmp
    }

    #[test]
    fn reads_sysfs_trees_of_2_8_and_64_cpus() {
        for n in [2u32, 8, 64] {
            let t = ht(n);
            let tree = sysfs(&t, &format!("0-{}", n - 1));
            let read = Topology::read(tree.path()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(read, t, "{n} CPUs");
            assert_eq!(read.cpus().len(), n as usize);
            assert_eq!(read.cores().len(), n as usize / 2);
        }
        // 2 CPUs without hyperthreads, as on this machine kind: two cores of one thread.
        let t = Topology::from_cores(vec![vec![0], vec![1]]);
        let read = Topology::read(sysfs(&t, "0-1").path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.cores(), &[vec![0], vec![1]]);
    }

    #[test]
    fn offline_cpus_and_missing_topology() {
        let tree = sysfs(&ht(8), "0-2,4-6");
        let read = Topology::read(tree.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.cpus().to_string(), "0-2,4-6");
        assert_eq!(read.cores(), &[vec![0, 4], vec![1, 5], vec![2, 6]]);
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for c in ["cpu0", "cpu1", "cpufreq"] {
            std::fs::create_dir_all(tmp.path().join(c)).unwrap_or_else(|e| panic!("{e}"));
        }
        let read = Topology::read(tmp.path()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.cores(), &[vec![0], vec![1]]);
        write(&tmp.path().join("online"), "zero\n");
        assert!(Topology::read(tmp.path()).is_err());
    }

    #[test]
    fn same_core_packs_siblings() {
        // 8 CPUs: cores {0,4} {1,5} {2,6} {3,7}.
        let p = node(ht(8), Placement::SameCore);
        assert_eq!(
            p.allocate(2, &CpuSet::default()).map(|s| s.to_string()),
            Ok("0,4".into())
        );
        assert_eq!(
            p.allocate(1, &CpuSet::default()).map(|s| s.to_string()),
            Ok("0".into())
        );
        // One thread of core 0 taken: a single CPU goes to its sibling, leaving cores whole.
        assert_eq!(
            p.allocate(1, &set("0")).map(|s| s.to_string()),
            Ok("4".into())
        );
        assert_eq!(
            p.allocate(3, &set("0")).map(|s| s.to_string()),
            Ok("1,4-5".into())
        );
        // 64 CPUs: 4 CPUs are two whole cores.
        let p = node(ht(64), Placement::SameCore);
        assert_eq!(
            p.allocate(4, &set("0,32")).map(|s| s.to_string()),
            Ok("1-2,33-34".into())
        );
    }

    #[test]
    fn spread_takes_one_thread_per_core() {
        let p = node(ht(8), Placement::Spread);
        assert_eq!(
            p.allocate(2, &CpuSet::default()).map(|s| s.to_string()),
            Ok("0-1".into())
        );
        // Cores without exclusive threads come first.
        assert_eq!(
            p.allocate(2, &set("0")).map(|s| s.to_string()),
            Ok("1-2".into())
        );
        assert_eq!(
            p.allocate(4, &set("0")).map(|s| s.to_string()),
            Ok("1-4".into())
        );
        let p = node(ht(64), Placement::Spread);
        let got = p.allocate(32, &CpuSet::default()).unwrap_or_default();
        assert_eq!(got.to_string(), "0-31");
        // 33 on 32 cores: not possible one per core... but the share allows 42.
        assert_eq!(
            p.allocate(33, &CpuSet::default()),
            Err(AllocError::NotEnoughCores {
                asked: 33,
                cores: 32
            })
        );
    }

    #[test]
    fn share_and_pool_limits() {
        // 2 CPUs, 2/3: one exclusive CPU at most, and the pool keeps the other.
        let p = node(ht(2), Placement::SameCore);
        assert_eq!(
            p.allocate(1, &CpuSet::default()).map(|s| s.to_string()),
            Ok("0".into())
        );
        assert_eq!(
            p.allocate(2, &CpuSet::default()),
            Err(AllocError::OverShare {
                asked: 2,
                held: 0,
                max: 1,
                total: 2
            })
        );
        assert!(matches!(
            p.allocate(1, &set("0")),
            Err(AllocError::OverShare { .. })
        ));
        // Reserved CPUs are in neither the pool nor what can be taken.
        let mut p = node(ht(8), Placement::SameCore);
        p.reserved = set("0,4");
        assert_eq!(p.pool(&CpuSet::default()).to_string(), "1-3,5-7");
        assert_eq!(
            p.allocate(2, &CpuSet::default()).map(|s| s.to_string()),
            Ok("1,5".into())
        );
        assert_eq!(p.pool(&set("1,5")).to_string(), "2-3,6-7");
        p.max_exclusive = Ratio { num: 1, den: 1 };
        assert_eq!(
            p.allocate(6, &CpuSet::default()),
            Err(AllocError::NotEnough { asked: 6, free: 5 })
        );
        // 64 CPUs: 42 at most (2/3), in any number of instances.
        let p = node(ht(64), Placement::SameCore);
        let a = p.allocate(40, &CpuSet::default()).unwrap_or_default();
        assert_eq!(a.len(), 40);
        assert_eq!(p.allocate(2, &a).map(|s| s.len()), Ok(2));
        assert!(matches!(
            p.allocate(3, &a),
            Err(AllocError::OverShare { max: 42, .. })
        ));
        assert_eq!(p.pool(&a).len(), 24);
    }

    #[test]
    fn caps_divide_the_pool() {
        assert_eq!(cap_quota(2, 1), 200_000);
        assert_eq!(cap_quota(2, 2), 100_000);
        assert_eq!(cap_quota(2, 3), 66_666);
        assert_eq!(cap_quota(1, 4), 25_000);
        assert_eq!(cap_quota(64, 3), 2_133_333);
        assert_eq!(cap_quota(1, 1000), MIN_QUOTA_US);
    }

    #[test]
    fn registry_rebalances_as_sandboxes_come_and_go() {
        let p = node(ht(8), Placement::SameCore);
        let mut r = Registry::default();
        let ok = |r: Result<(), AllocError>| r.unwrap_or_else(|e| panic!("{e}"));
        ok(r.admit(&p, "a", entry("a", CpuMode::Cap)));
        ok(r.admit(&p, "b", entry("b", CpuMode::Equal)));
        let got = r.assignments(&p);
        assert_eq!(got["a"].quota, Some(800_000));
        assert_eq!(got["a"].cpus.to_string(), "0-7");
        assert_eq!(got["b"].quota, None);
        ok(r.admit(&p, "c", entry("c", CpuMode::Cap)));
        ok(r.admit(&p, "x", entry("x", CpuMode::Exclusive(2))));
        let got = r.assignments(&p);
        assert_eq!(got["x"].cpus.to_string(), "0,4");
        for k in ["a", "b", "c"] {
            assert_eq!(got[k].cpus.to_string(), "1-3,5-7", "{k}");
        }
        assert_eq!(got["a"].quota, Some(300_000));
        assert_eq!(got["c"].quota, Some(300_000));
        // Too many: refused, registry unchanged.
        let before = r.clone();
        assert!(r.admit(&p, "y", entry("y", CpuMode::Exclusive(4))).is_err());
        assert_eq!(r, before);
        // Release and restore the pinning.
        assert_eq!(r.set_pinned(&p, "x", false), Ok(true));
        assert_eq!(r.assignments(&p)["x"].cpus.to_string(), "0-7");
        assert_eq!(r.assignments(&p)["a"].quota, Some(400_000));
        assert_eq!(r.set_pinned(&p, "x", false), Ok(false));
        assert_eq!(r.set_pinned(&p, "x", true), Ok(true));
        assert_eq!(r.assignments(&p)["b"].cpus.to_string(), "1-3,5-7");
        assert_eq!(r.set_pinned(&p, "a", false), Ok(false));
        // Delete: the pool grows back, the caps follow.
        r.remove("x");
        r.remove("c");
        let got = r.assignments(&p);
        assert_eq!(got["b"].cpus.to_string(), "0-7");
        assert_eq!(got["a"].quota, Some(800_000));
        // An app's quota bounds its capped instances; it goes with the app's last instance.
        r.apps.insert("/paddock/default".into(), 150_000);
        assert_eq!(r.assignments(&p)["a"].quota, Some(150_000));
        r.remove("a");
        assert!(r.apps.contains_key("/paddock/default"));
        r.remove("b");
        assert!(r.apps.is_empty());
    }

    #[test]
    fn requests_stay_within_the_pool() {
        let p = node(ht(2), Placement::SameCore);
        let mut r = Registry::default();
        let mut e = entry("a", CpuMode::Equal);
        e.request = Some(set("0"));
        let ok = |r: Result<(), AllocError>| r.unwrap_or_else(|e| panic!("{e}"));
        ok(r.admit(&p, "a", e));
        assert_eq!(r.assignments(&p)["a"].cpus.to_string(), "0");
        ok(r.admit(&p, "x", entry("x", CpuMode::Exclusive(1))));
        // Its request is all exclusive now: it falls back to the pool.
        assert_eq!(r.assignments(&p)["a"].cpus.to_string(), "1");
        assert_eq!(r.assignments(&p)["x"].cpus.to_string(), "0");
    }
}
