//! The node's identity pool (warden's vcap-user pool): every sandbox leases a host uid (and the
//! gid of the same number), or for a user namespace an aligned range of 65536 ids, unique among
//! live sandboxes and returned on delete.
//!
//! Leases are files in the lease directory (`/run/paddock/leases`, a tmpfs: leases end with the
//! sandboxes at reboot), created with `O_CREAT|O_EXCL` while holding the node lock exclusively:
//!
//! - `uid-<uid>` (one id) or `uid-<uid>+<count>` (a range) holds the sandbox id: the lease;
//! - `id-<sandbox>` holds the name of its `uid-` file: the index by sandbox.
//!
//! The index is written first and the uid file second, so the id is taken only once the index
//! names it. A `lease` that dies half-way leaves at most an index (and perhaps an empty uid file):
//! `release` of that sandbox, or a new `lease` of it, clears them. Writers only run under the
//! exclusive lock, so nothing half-written is ever someone's work in progress. An index is trusted
//! only when the uid file it names holds the same sandbox id: a stale index never releases another
//! sandbox's identity. Leasing reads the directory listing, not the files, so it stays cheap with
//! many live sandboxes.
//!
//! Which id comes next is a pure function, [`next_free`]: single ids are taken from the bottom of
//! the pool upwards, user-namespace ranges from the top downwards (keeping the two apart leaves
//! the aligned 64K blocks whole), and ids of host accounts (`/etc/passwd`, `/etc/group`) are
//! never handed out.
//!
//! `lease` and `release` take the node lock exclusively, `lookup` and `live` shared. Call none of
//! them while this process already holds the node lock through another open file (`flock` locks
//! belong to open files, so the second would wait for the first forever), and keep the exclusive
//! hold short: it waits for every shared holder to finish.
//!
//! ```no_run
//! use paddock_runtime::config::NodeConfig;
//! use paddock_runtime::identity::{LeaseKind, Pool};
//!
//! let config = NodeConfig::load(paddock_runtime::config::DEFAULT_PATH)?;
//! let pool = Pool::from_config(&config.identity);
//! let lease = pool.lease("web-0", LeaseKind::Single)?;
//! println!("web-0 runs as {}:{}", lease.uid, lease.gid);
//! pool.release("web-0")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::config::{IdentityConfig, USERNS_RANGE};

const UID_PREFIX: &str = "uid-";
const ID_PREFIX: &str = "id-";
/// Longest sandbox id whose index file name fits in NAME_MAX.
const MAX_ID_LEN: usize = 255 - ID_PREFIX.len();
/// Never handed out, whatever the pool: root, nobody, 16-bit and 32-bit `-1`.
const RESERVED: [u32; 4] = [0, 65534, 65535, u32::MAX];

/// What a sandbox leases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseKind {
    /// One uid, and the gid of the same number.
    Single,
    /// 65536 consecutive ids whose first is a multiple of 65536, for a user namespace: the
    /// sandbox's root maps to the first.
    Userns,
}

impl LeaseKind {
    /// Number of ids of a lease of this kind.
    pub fn count(self) -> u32 {
        match self {
            LeaseKind::Single => 1,
            LeaseKind::Userns => USERNS_RANGE,
        }
    }
}

/// A leased identity: host uid and gid (the same number) and, for a user namespace, the number of
/// ids from there on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

impl Lease {
    fn new(uid: u32, kind: LeaseKind) -> Self {
        Self {
            uid,
            gid: uid,
            count: kind.count(),
        }
    }

    pub fn kind(&self) -> LeaseKind {
        if self.count == 1 {
            LeaseKind::Single
        } else {
            LeaseKind::Userns
        }
    }

    /// The last id of the lease.
    pub fn last(&self) -> u32 {
        self.uid.saturating_add(self.count.saturating_sub(1))
    }

    fn span(&self) -> (u64, u64) {
        let start = u64::from(self.uid);
        (start, start + u64::from(self.count))
    }

    /// `uid-<uid>` or `uid-<uid>+<count>`.
    fn file_name(&self) -> String {
        if self.count == 1 {
            format!("{UID_PREFIX}{}", self.uid)
        } else {
            format!("{UID_PREFIX}{}+{}", self.uid, self.count)
        }
    }

    fn from_file_name(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(UID_PREFIX)?;
        let (uid, count) = match rest.split_once('+') {
            Some((uid, count)) => (uid.parse().ok()?, count.parse().ok()?),
            None => (rest.parse().ok()?, 1),
        };
        (count >= 1 && u64::from(uid) + u64::from(count) <= u64::from(u32::MAX)).then_some(Self {
            uid,
            gid: uid,
            count,
        })
    }
}

/// The ids of the pool: `base ..= base + size - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRange {
    pub base: u32,
    pub size: u32,
}

impl PoolRange {
    /// One past the last id (u64: the pool may end at `u32::MAX`).
    fn end(self) -> u64 {
        u64::from(self.base) + u64::from(self.size)
    }

    /// The last id of the pool.
    pub fn last(self) -> u32 {
        self.base.saturating_add(self.size.saturating_sub(1))
    }
}

impl From<&IdentityConfig> for PoolRange {
    fn from(c: &IdentityConfig) -> Self {
        Self {
            base: c.base,
            size: c.size,
        }
    }
}

/// The id a new lease of `kind` starts at, or `None` when the pool has no room: the lowest free id
/// for a single id, the highest free aligned block for a user namespace. Free means in the pool,
/// in no lease, not a host account's id and not reserved (0, 65534, 65535, 4294967295).
pub fn next_free(
    pool: PoolRange,
    kind: LeaseKind,
    leased: &[Lease],
    host: &BTreeSet<u32>,
) -> Option<u32> {
    let blocked = merge(
        leased
            .iter()
            .map(Lease::span)
            .chain(host.iter().chain(&RESERVED).map(|&id| {
                let id = u64::from(id);
                (id, id + 1)
            }))
            .collect(),
    );
    let (base, end) = (u64::from(pool.base), pool.end());
    let found = match kind {
        LeaseKind::Single => {
            let mut cand = base;
            for &(start, stop) in &blocked {
                if start > cand {
                    break;
                }
                cand = cand.max(stop);
            }
            (cand < end).then_some(cand)
        }
        LeaseKind::Userns => {
            let r = u64::from(USERNS_RANGE);
            let first = base.div_ceil(r) * r;
            if end < r || first + r > end {
                return None;
            }
            let mut cand = (end - r) / r * r;
            for &(start, stop) in blocked.iter().rev() {
                if start >= cand + r {
                    continue;
                }
                if stop <= cand {
                    break;
                }
                if start < first + r {
                    return None;
                }
                cand = (start - r) / r * r;
            }
            (cand >= first).then_some(cand)
        }
    };
    found.and_then(|id| u32::try_from(id).ok())
}

/// Sorts half-open spans and merges those that overlap or touch.
fn merge(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    spans.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (start, stop) in spans {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(stop),
            _ => out.push((start, stop)),
        }
    }
    out
}

/// The uids and gids named in an `/etc/passwd` text (fields 3 and 4). Comments, NIS `+`/`-`
/// lines and malformed lines are skipped.
pub fn parse_passwd(text: &str) -> BTreeSet<u32> {
    account_lines(text)
        .flat_map(|fields| {
            [2, 3]
                .into_iter()
                .filter_map(move |i| fields.get(i).and_then(|f| f.trim().parse().ok()))
        })
        .collect()
}

/// The gids named in an `/etc/group` text (field 3).
pub fn parse_group(text: &str) -> BTreeSet<u32> {
    account_lines(text)
        .filter_map(|fields| fields.get(2).and_then(|f| f.trim().parse().ok()))
        .collect()
}

fn account_lines(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(['+', '-']))
        .map(|l| l.split(':').collect())
}

/// Errors of the identity pool.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("invalid sandbox id {id:?} for an identity lease: {reason}")]
    InvalidId { id: String, reason: String },
    #[error("sandbox {id} already holds identity {} (release it first)", describe(.lease))]
    AlreadyLeased { id: String, lease: Lease },
    #[error(
        "identity pool {}..{} is exhausted ({} ids, {leased} leased{})",
        .pool.base, .pool.last(), .pool.size, host_note(*.host)
    )]
    Exhausted {
        pool: PoolRange,
        leased: u64,
        host: u64,
    },
    #[error(
        "identity pool {}..{} has no free range of 65536 ids aligned to 65536 for a user namespace ({} ids, {leased} leased{})",
        .pool.base, .pool.last(), .pool.size, host_note(*.host)
    )]
    NoUsernsRange {
        pool: PoolRange,
        leased: u64,
        host: u64,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("flock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

fn describe(lease: &Lease) -> String {
    if lease.count == 1 {
        lease.uid.to_string()
    } else {
        format!("{}..{}", lease.uid, lease.last())
    }
}

fn host_note(host: u64) -> String {
    if host == 0 {
        String::new()
    } else {
        format!(", {host} held by host accounts")
    }
}

fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> IdentityError + 'a {
    move |source| IdentityError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The pool of the node config, with its lock file beside the lease directory (leases need not
/// wait for creates holding the node lock).
pub fn pool(config: &IdentityConfig) -> Pool {
    let lock = config.lease_dir.with_extension("lock");
    Pool::from_config(config).with_lock_file(lock)
}

/// The node-wide pool: the range from the config, the lease directory and the node lock.
#[derive(Debug, Clone)]
pub struct Pool {
    range: PoolRange,
    lease_dir: PathBuf,
    lock_file: PathBuf,
    passwd: PathBuf,
    group: PathBuf,
}

impl Pool {
    /// A pool over `range` with its leases in `lease_dir`, guarded by the node lock
    /// (`/run/paddock/node.lock`) and avoiding the accounts of `/etc/passwd` and `/etc/group`.
    pub fn new(range: PoolRange, lease_dir: impl Into<PathBuf>) -> Self {
        Self {
            range,
            lease_dir: lease_dir.into(),
            lock_file: PathBuf::from(crate::sandbox::NODE_LOCK),
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
        }
    }

    /// The pool the node config describes.
    pub fn from_config(config: &IdentityConfig) -> Self {
        Self::new(config.into(), &config.lease_dir)
    }

    /// Uses another lock file (tests, or a node with its state elsewhere).
    pub fn with_lock_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock_file = path.into();
        self
    }

    /// Reads host accounts from other files than `/etc/passwd` and `/etc/group`.
    pub fn with_account_files(
        mut self,
        passwd: impl Into<PathBuf>,
        group: impl Into<PathBuf>,
    ) -> Self {
        self.passwd = passwd.into();
        self.group = group.into();
        self
    }

    pub fn range(&self) -> PoolRange {
        self.range
    }

    pub fn lease_dir(&self) -> &Path {
        &self.lease_dir
    }

    /// Leases an identity of `kind` to sandbox `id`. Fails if `id` already holds one, or when the
    /// pool has no room.
    pub fn lease(&self, id: &str, kind: LeaseKind) -> Result<Lease, IdentityError> {
        check_id(id)?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        self.create_dir()?;
        match self.indexed(id)? {
            Indexed::Live(lease) => {
                return Err(IdentityError::AlreadyLeased {
                    id: id.to_string(),
                    lease,
                })
            }
            // What a lease that died half-way left: its index, perhaps an empty uid file.
            Indexed::Unfinished(uid_file) => {
                if let Some(path) = uid_file {
                    remove_file(&path)?;
                }
                remove_file(&self.index_path(id))?;
            }
            Indexed::None => {}
        }
        let leases = self.scan()?;
        let host = self.host_ids()?;
        let Some(uid) = next_free(self.range, kind, &leases, &host) else {
            return Err(self.exhausted(kind, &leases, &host));
        };
        let lease = Lease::new(uid, kind);
        let index = self.index_path(id);
        create_exclusive(&index, &format!("{}\n", lease.file_name()))?;
        if let Err(e) =
            create_exclusive(&self.lease_dir.join(lease.file_name()), &format!("{id}\n"))
        {
            let _ = fs::remove_file(&index);
            return Err(e);
        }
        Ok(lease)
    }

    /// Returns the identity of sandbox `id` to the pool; `None` when it held none. Idempotent: a
    /// second release, or one after a crash in the middle of `lease`, finishes the job.
    pub fn release(&self, id: &str) -> Result<Option<Lease>, IdentityError> {
        check_id(id)?;
        let _lock = self.lock(FlockArg::LockExclusive)?;
        let released = match self.indexed(id)? {
            Indexed::Live(lease) => {
                remove_file(&self.lease_dir.join(lease.file_name()))?;
                Some(lease)
            }
            Indexed::Unfinished(Some(path)) => {
                remove_file(&path)?;
                None
            }
            Indexed::Unfinished(None) | Indexed::None => None,
        };
        remove_file(&self.index_path(id))?;
        Ok(released)
    }

    /// The identity sandbox `id` holds.
    pub fn lookup(&self, id: &str) -> Result<Option<Lease>, IdentityError> {
        check_id(id)?;
        let _lock = self.lock(FlockArg::LockShared)?;
        Ok(match self.indexed(id)? {
            Indexed::Live(lease) => Some(lease),
            Indexed::Unfinished(_) | Indexed::None => None,
        })
    }

    /// Every live lease with the sandbox holding it, in uid order.
    pub fn live(&self) -> Result<Vec<(String, Lease)>, IdentityError> {
        let _lock = self.lock(FlockArg::LockShared)?;
        if !self.lease_dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for lease in self.scan()? {
            if let Some(owner) = read_owner(&self.lease_dir.join(lease.file_name()))? {
                out.push((owner, lease));
            }
        }
        out.sort_by_key(|(_, l)| *l);
        Ok(out)
    }

    fn lock(&self, arg: FlockArg) -> Result<Flock<File>, IdentityError> {
        if let Some(dir) = self.lock_file.parent() {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_file)
            .map_err(io_err("open", &self.lock_file))?;
        Flock::lock(file, arg).map_err(|(_, source)| IdentityError::Lock {
            path: self.lock_file.clone(),
            source,
        })
    }

    fn create_dir(&self) -> Result<(), IdentityError> {
        if let Some(parent) = self.lease_dir.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(&self.lease_dir) {
            Err(e) if e.kind() != ErrorKind::AlreadyExists => {
                Err(io_err("create", &self.lease_dir)(e))
            }
            _ => Ok(()),
        }
    }

    fn index_path(&self, id: &str) -> PathBuf {
        self.lease_dir.join(format!("{ID_PREFIX}{id}"))
    }

    /// The leases, from the names of the uid files alone.
    fn scan(&self) -> Result<Vec<Lease>, IdentityError> {
        let dir = &self.lease_dir;
        let mut leases = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
            let entry = entry.map_err(io_err("read", dir))?;
            if let Some(lease) = entry.file_name().to_str().and_then(Lease::from_file_name) {
                leases.push(lease);
            }
        }
        Ok(leases)
    }

    /// What the index of `id` says. The index is written before the uid file, so an index whose
    /// uid file is missing or empty is a lease that died half-way (writers only run under the
    /// exclusive lock, so no live writer is in the middle of it); a uid file naming another
    /// sandbox means the index is stale and the id went to that sandbox since.
    fn indexed(&self, id: &str) -> Result<Indexed, IdentityError> {
        let index = self.index_path(id);
        let name = match fs::read_to_string(&index) {
            Ok(name) => name,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Indexed::None),
            Err(e) => return Err(io_err("read", &index)(e)),
        };
        let Some(lease) = Lease::from_file_name(name.trim_end()) else {
            return Ok(Indexed::Unfinished(None));
        };
        let uid_file = self.lease_dir.join(lease.file_name());
        Ok(match read_owner(&uid_file)? {
            Some(owner) if owner == id => Indexed::Live(lease),
            Some(_) => Indexed::Unfinished(None),
            None if uid_file.exists() => Indexed::Unfinished(Some(uid_file)),
            None => Indexed::Unfinished(None),
        })
    }

    fn host_ids(&self) -> Result<BTreeSet<u32>, IdentityError> {
        let mut ids = parse_passwd(&read_optional(&self.passwd)?);
        ids.extend(parse_group(&read_optional(&self.group)?));
        Ok(ids)
    }

    fn exhausted(&self, kind: LeaseKind, leases: &[Lease], host: &BTreeSet<u32>) -> IdentityError {
        let (base, end) = (u64::from(self.range.base), self.range.end());
        let leased = leases
            .iter()
            .map(|l| {
                let (s, e) = l.span();
                e.min(end).saturating_sub(s.max(base))
            })
            .sum();
        let host = host
            .iter()
            .map(|&id| u64::from(id))
            .filter(|id| (base..end).contains(id))
            .filter(|&id| {
                !leases
                    .iter()
                    .any(|l| (l.span().0..l.span().1).contains(&id))
            })
            .count() as u64;
        let pool = self.range;
        match kind {
            LeaseKind::Single => IdentityError::Exhausted { pool, leased, host },
            LeaseKind::Userns => IdentityError::NoUsernsRange { pool, leased, host },
        }
    }
}

/// The state of a sandbox's index file.
enum Indexed {
    None,
    Live(Lease),
    /// An index without a finished lease, with the empty uid file to remove if there is one.
    Unfinished(Option<PathBuf>),
}

fn check_id(id: &str) -> Result<(), IdentityError> {
    let invalid = |reason: String| {
        Err(IdentityError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if let Err(crate::Error::InvalidId { reason, .. }) = crate::id::validate(id) {
        return invalid(reason.to_string());
    }
    if id.len() > MAX_ID_LEN {
        return invalid(format!("longer than {MAX_ID_LEN} bytes"));
    }
    Ok(())
}

/// Creates `path` with `O_CREAT|O_EXCL` and writes `content`; on a failed write the file goes.
fn create_exclusive(path: &Path, content: &str) -> Result<(), IdentityError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(io_err("create", path))?;
    if let Err(e) = file.write_all(content.as_bytes()) {
        let _ = fs::remove_file(path);
        return Err(io_err("write", path)(e));
    }
    Ok(())
}

/// The sandbox a uid file names; `None` when the file is gone or empty.
fn read_owner(path: &Path) -> Result<Option<String>, IdentityError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let owner = text.trim_end_matches('\n');
            Ok((!owner.is_empty()).then(|| owner.to_string()))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn read_optional(path: &Path) -> Result<String, IdentityError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn remove_file(path: &Path) -> Result<(), IdentityError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: u32 = USERNS_RANGE;

    fn pool(base: u32, size: u32) -> PoolRange {
        PoolRange { base, size }
    }

    fn single(uid: u32) -> Lease {
        Lease::new(uid, LeaseKind::Single)
    }

    fn userns(uid: u32) -> Lease {
        Lease::new(uid, LeaseKind::Userns)
    }

    fn none() -> BTreeSet<u32> {
        BTreeSet::new()
    }

    #[test]
    fn single_ids_come_from_the_bottom() {
        let p = pool(2_000_000_000, 16);
        assert_eq!(
            next_free(p, LeaseKind::Single, &[], &none()),
            Some(2_000_000_000)
        );
        let taken = [
            single(2_000_000_000),
            single(2_000_000_001),
            single(2_000_000_003),
        ];
        assert_eq!(
            next_free(p, LeaseKind::Single, &taken, &none()),
            Some(2_000_000_002)
        );
    }

    #[test]
    fn host_ids_are_skipped() {
        let p = pool(1000, 10);
        let host: BTreeSet<u32> = [1000, 1001, 1003].into();
        assert_eq!(
            next_free(p, LeaseKind::Single, &[single(1002)], &host),
            Some(1004)
        );
    }

    #[test]
    fn reserved_ids_are_skipped() {
        let p = pool(65533, 4);
        let taken = [single(65533)];
        assert_eq!(
            next_free(p, LeaseKind::Single, &taken, &none()),
            Some(65536)
        );
        let p = pool(u32::MAX - 1, 1);
        assert_eq!(
            next_free(p, LeaseKind::Single, &[], &none()),
            Some(u32::MAX - 1)
        );
        let p = pool(0, 1);
        assert_eq!(next_free(p, LeaseKind::Single, &[], &none()), None);
    }

    #[test]
    fn a_full_pool_has_nothing() {
        let p = pool(100, 3);
        let taken = [single(100), single(102)];
        let host: BTreeSet<u32> = [101].into();
        assert_eq!(next_free(p, LeaseKind::Single, &taken, &host), None);
    }

    #[test]
    fn leases_outside_the_pool_do_not_matter() {
        let p = pool(100, 2);
        let taken = [single(99), single(102), userns(2 * R)];
        assert_eq!(next_free(p, LeaseKind::Single, &taken, &none()), Some(100));
    }

    #[test]
    fn userns_ranges_are_aligned_and_come_from_the_top() {
        // 2010000000 is not aligned: the first aligned block is 30671 * 65536.
        let p = pool(2_010_000_000, 130_000_000);
        let top = next_free(p, LeaseKind::Userns, &[], &none());
        assert_eq!(top, Some(32652 * R));
        let Some(top) = top else { return };
        assert!(u64::from(top) + u64::from(R) <= u64::from(p.last()) + 1);
        let next = next_free(p, LeaseKind::Userns, &[userns(top)], &none());
        assert_eq!(next, Some(top - R));
    }

    #[test]
    fn userns_ranges_avoid_single_ids_and_host_ids_inside_a_block() {
        let p = pool(10 * R, 4 * R);
        // Blocks 10, 11, 12, 13. A single id in block 13, a host id in block 12.
        let taken = [single(13 * R + 5)];
        let host: BTreeSet<u32> = [12 * R + R - 1].into();
        assert_eq!(next_free(p, LeaseKind::Userns, &taken, &host), Some(11 * R));
        let taken = [single(13 * R + 5), userns(11 * R)];
        assert_eq!(next_free(p, LeaseKind::Userns, &taken, &host), Some(10 * R));
        let taken = [single(13 * R + 5), userns(11 * R), single(10 * R)];
        assert_eq!(next_free(p, LeaseKind::Userns, &taken, &host), None);
    }

    #[test]
    fn userns_needs_a_whole_aligned_block_inside_the_pool() {
        // One block's worth of ids, but not aligned.
        assert_eq!(
            next_free(pool(R + 1, R), LeaseKind::Userns, &[], &none()),
            None
        );
        assert_eq!(
            next_free(pool(R, R), LeaseKind::Userns, &[], &none()),
            Some(R)
        );
        assert_eq!(
            next_free(pool(R - 1, R + 1), LeaseKind::Userns, &[], &none()),
            Some(R)
        );
        assert_eq!(
            next_free(pool(100, 10), LeaseKind::Userns, &[], &none()),
            None
        );
        // Block 0 holds root and nobody; the top block holds 4294967295.
        assert_eq!(next_free(pool(1, R), LeaseKind::Userns, &[], &none()), None);
        assert_eq!(
            next_free(pool(u32::MAX - R, R), LeaseKind::Userns, &[], &none()),
            None
        );
    }

    #[test]
    fn singles_fill_in_around_userns_ranges() {
        let p = pool(R, 2 * R);
        let taken = [userns(R)];
        assert_eq!(
            next_free(p, LeaseKind::Single, &taken, &none()),
            Some(2 * R)
        );
    }

    #[test]
    fn merge_joins_touching_and_overlapping_spans() {
        assert_eq!(
            merge(vec![(5, 6), (1, 3), (3, 4), (2, 3), (10, 20), (12, 15)]),
            vec![(1, 4), (5, 6), (10, 20)]
        );
    }

    #[test]
    fn lease_file_names_round_trip() {
        for l in [single(2_010_000_000), userns(32652 * R)] {
            assert_eq!(Lease::from_file_name(&l.file_name()), Some(l));
        }
        assert_eq!(single(7).file_name(), "uid-7");
        assert_eq!(userns(R).file_name(), "uid-65536+65536");
        for bad in [
            "uid-",
            "uid-x",
            "uid-1+0",
            "uid-4294967295+2",
            "id-7",
            "7",
            "uid-1+",
        ] {
            assert_eq!(Lease::from_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn passwd_and_group_parsers() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # comment\n\
                      \n\
                      daemon:x:1:1::/:/usr/sbin/nologin\n\
                      app:x:2010000003:2010000009:,,,:/home/app:/bin/sh\n\
                      +nisuser::::::\n\
                      broken line\n\
                      bad:x:notanumber:12\n";
        assert_eq!(
            parse_passwd(passwd),
            [0, 1, 12, 2_010_000_003, 2_010_000_009].into()
        );
        let group = "root:x:0:\nstaff:x:50:alice,bob\nvcap:x:2010000011:\n-nis\nodd:x::\n";
        assert_eq!(parse_group(group), [0, 50, 2_010_000_011].into());
    }

    fn temp_pool(base: u32, size: u32) -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let pool = test_pool(dir.path(), base, size);
        (dir, pool)
    }

    fn test_pool(dir: &Path, base: u32, size: u32) -> Pool {
        Pool::new(pool(base, size), dir.join("leases"))
            .with_lock_file(dir.join("node.lock"))
            .with_account_files(dir.join("passwd"), dir.join("group"))
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(dir) {
            Ok(rd) => rd
                .map(|e| {
                    e.unwrap_or_else(|e| panic!("{e}"))
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            Err(e) => panic!("read {}: {e}", dir.display()),
        };
        names.sort();
        names
    }

    fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lease_lookup_live_release() {
        let (dir, pool) = temp_pool(2_000_000_000, 16);
        let a = ok(pool.lease("a", LeaseKind::Single));
        let b = ok(pool.lease("b", LeaseKind::Single));
        assert_eq!(
            a,
            Lease {
                uid: 2_000_000_000,
                gid: 2_000_000_000,
                count: 1
            }
        );
        assert_eq!(b.uid, 2_000_000_001);
        assert_eq!(ok(pool.lookup("a")), Some(a));
        assert_eq!(ok(pool.lookup("c")), None);
        assert_eq!(ok(pool.live()), vec![("a".into(), a), ("b".into(), b)]);
        let leases = dir.path().join("leases");
        assert_eq!(
            files(&leases),
            ["id-a", "id-b", "uid-2000000000", "uid-2000000001"]
        );
        assert_eq!(ok(fs::read_to_string(leases.join("uid-2000000000"))), "a\n");
        assert_eq!(
            ok(fs::read_to_string(leases.join("id-b"))),
            "uid-2000000001\n"
        );

        assert_eq!(ok(pool.release("a")), Some(a));
        assert_eq!(ok(pool.release("a")), None, "release is idempotent");
        assert_eq!(ok(pool.lookup("a")), None);
        // The freed id is the lowest again.
        assert_eq!(ok(pool.lease("c", LeaseKind::Single)).uid, 2_000_000_000);
        ok(pool.release("b"));
        ok(pool.release("c"));
        assert!(files(&leases).is_empty());
    }

    #[test]
    fn release_without_a_lease_dir_is_nothing() {
        let (_dir, pool) = temp_pool(2_000_000_000, 16);
        assert_eq!(ok(pool.release("x")), None);
        assert_eq!(ok(pool.lookup("x")), None);
        assert!(ok(pool.live()).is_empty());
    }

    #[test]
    fn a_sandbox_holds_one_lease() {
        let (_dir, pool) = temp_pool(2_000_000_000, 16);
        ok(pool.lease("a", LeaseKind::Single));
        let err = pool.lease("a", LeaseKind::Userns).map(|_| ()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("sandbox a already holds identity 2000000000 (release it first)")
        );
    }

    #[test]
    fn exhausted_pool_is_a_clear_error() {
        let (dir, pool) = temp_pool(2_000_000_000, 16);
        for i in 0..16 {
            ok(pool.lease(&format!("s{i}"), LeaseKind::Single));
        }
        let err = pool.lease("s16", LeaseKind::Single).map(|_| ()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some("identity pool 2000000000..2000000015 is exhausted (16 ids, 16 leased)")
        );
        // The failed lease left nothing behind.
        assert_eq!(files(&dir.path().join("leases")).len(), 32);
        ok(pool.release("s3"));
        assert_eq!(ok(pool.lease("s16", LeaseKind::Single)).uid, 2_000_000_003);
    }

    #[test]
    fn host_accounts_are_never_leased() {
        let (dir, pool) = temp_pool(2_000_000_000, 4);
        ok(fs::write(
            dir.path().join("passwd"),
            "app:x:2000000000:2000000001::/:/bin/sh\n",
        ));
        ok(fs::write(dir.path().join("group"), "grp:x:2000000003:\n"));
        assert_eq!(ok(pool.lease("a", LeaseKind::Single)).uid, 2_000_000_002);
        let err = pool.lease("b", LeaseKind::Single).map(|_| ()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(
                "identity pool 2000000000..2000000003 is exhausted \
                 (4 ids, 1 leased, 3 held by host accounts)"
            )
        );
    }

    #[test]
    fn userns_leases_beside_single_ones() {
        let (dir, pool) = temp_pool(10 * R - 3, 2 * R + 3);
        let a = ok(pool.lease("a", LeaseKind::Userns));
        assert_eq!(
            a,
            Lease {
                uid: 11 * R,
                gid: 11 * R,
                count: R
            }
        );
        let b = ok(pool.lease("b", LeaseKind::Single));
        assert_eq!(b.uid, 10 * R - 3);
        let c = ok(pool.lease("c", LeaseKind::Userns));
        assert_eq!(c.uid, 10 * R);
        let err = pool.lease("d", LeaseKind::Userns).map(|_| ()).err();
        assert_eq!(
            err.map(|e| e.to_string()).as_deref(),
            Some(
                "identity pool 655357..786431 has no free range of 65536 ids aligned to 65536 \
                 for a user namespace (131075 ids, 131073 leased)"
            )
        );
        assert_eq!(ok(pool.lease("d", LeaseKind::Single)).uid, 10 * R - 2);
        assert_eq!(
            ok(fs::read_to_string(dir.path().join("leases/id-a"))),
            format!("uid-{}+65536\n", 11 * R)
        );
        assert_eq!(ok(pool.lookup("a")), Some(a));
    }

    #[test]
    fn bad_ids_are_refused_before_touching_files() {
        let (dir, pool) = temp_pool(2_000_000_000, 4);
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(253)] {
            let err = pool.lease(bad, LeaseKind::Single).map(|_| ()).err();
            assert!(
                matches!(err, Some(IdentityError::InvalidId { .. })),
                "{bad}: {err:?}"
            );
            assert!(pool.release(bad).is_err());
        }
        assert!(!dir.path().join("leases").exists());
        assert!(pool.lease(&"x".repeat(252), LeaseKind::Single).is_ok());
    }

    #[test]
    fn a_lease_that_died_after_its_index_is_finished_by_release() {
        let (dir, pool) = temp_pool(2_000_000_000, 4);
        ok(pool.lease("a", LeaseKind::Single));
        let leases = dir.path().join("leases");
        // b died after writing its index: the id is not taken.
        ok(fs::write(leases.join("id-b"), "uid-2000000001\n"));
        assert_eq!(ok(pool.lookup("b")), None);
        assert_eq!(ok(pool.lease("c", LeaseKind::Single)).uid, 2_000_000_001);
        // b's stale index names c's id now: releasing b leaves c alone.
        assert_eq!(ok(pool.release("b")), None);
        assert_eq!(
            files(&leases),
            ["id-a", "id-c", "uid-2000000000", "uid-2000000001"]
        );
        assert_eq!(ok(pool.lookup("c")).map(|l| l.uid), Some(2_000_000_001));
    }

    #[test]
    fn a_lease_that_died_in_the_middle_of_a_write_is_finished() {
        let (dir, pool) = temp_pool(2_000_000_000, 4);
        let leases = dir.path().join("leases");
        ok(pool.lease("a", LeaseKind::Single));
        // b died after creating its uid file, before writing it.
        ok(fs::write(leases.join("id-b"), "uid-2000000001\n"));
        ok(fs::write(leases.join("uid-2000000001"), ""));
        // d died before writing its index.
        ok(fs::write(leases.join("id-d"), ""));
        assert_eq!(ok(pool.lease("c", LeaseKind::Single)).uid, 2_000_000_002);
        assert_eq!(ok(pool.lookup("b")), None);
        assert_eq!(ok(pool.release("b")), None);
        assert_eq!(ok(pool.release("d")), None);
        assert_eq!(
            files(&leases),
            ["id-a", "id-c", "uid-2000000000", "uid-2000000002"]
        );
        // A new create of b after the crash (no delete in between) gets a fresh lease.
        ok(fs::write(leases.join("id-b"), "uid-2000000001\n"));
        ok(fs::write(leases.join("uid-2000000001"), ""));
        assert_eq!(ok(pool.lease("b", LeaseKind::Single)).uid, 2_000_000_001);
        assert_eq!(ok(pool.lookup("b")).map(|l| l.uid), Some(2_000_000_001));
    }

    #[test]
    fn a_stale_index_never_releases_another_sandboxs_lease() {
        let (dir, pool) = temp_pool(2_000_000_000, 4);
        ok(pool.lease("a", LeaseKind::Single));
        let leases = dir.path().join("leases");
        ok(fs::write(leases.join("id-ghost"), "uid-2000000000\n"));
        assert_eq!(ok(pool.lookup("ghost")), None);
        assert_eq!(ok(pool.release("ghost")), None);
        assert_eq!(files(&leases), ["id-a", "uid-2000000000"]);
        assert_eq!(ok(pool.lookup("a")).map(|l| l.uid), Some(2_000_000_000));
    }

    const WORKER_ENV: &str = "PADDOCK_TEST_LEASE_WORKER";

    /// Not a test on its own: the body of one process of `two_hundred_processes_lease_at_once`.
    #[test]
    fn lease_worker() {
        let Ok(spec) = std::env::var(WORKER_ENV) else {
            return;
        };
        let parts: Vec<&str> = spec.split('\t').collect();
        let [op, dir, id] = parts[..] else {
            panic!("bad {WORKER_ENV}: {spec:?}")
        };
        let dir = Path::new(dir);
        let pool = test_pool(dir, 2_010_000_000, 300);
        let go = dir.join("go");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !go.exists() {
            assert!(std::time::Instant::now() < deadline, "never told to go");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        match op {
            "lease" => println!("LEASED {}", ok(pool.lease(id, LeaseKind::Single)).uid),
            _ => println!("RELEASED {:?}", ok(pool.release(id)).map(|l| l.uid)),
        }
    }

    fn run_workers(dir: &Path, op: &str, n: usize) -> Vec<String> {
        let exe = ok(std::env::current_exe());
        let _ = fs::remove_file(dir.join("go"));
        let children: Vec<_> = (0..n)
            .map(|i| {
                ok(std::process::Command::new(&exe)
                    .args(["--exact", "identity::tests::lease_worker", "--nocapture"])
                    .args(["--test-threads=1", "-q"])
                    .env(WORKER_ENV, format!("{op}\t{}\tsb-{i}", dir.display()))
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn())
            })
            .collect();
        ok(fs::write(dir.join("go"), ""));
        children
            .into_iter()
            .map(|c| {
                let out = ok(c.wait_with_output());
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "worker failed: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                stdout
                    .lines()
                    .find(|l| l.starts_with("LEASED ") || l.starts_with("RELEASED "))
                    .unwrap_or_else(|| panic!("no result from worker: {stdout}"))
                    .to_string()
            })
            .collect()
    }

    /// 200 processes lease at the same moment: 200 distinct ids, none of a host account, and
    /// releasing all of them (again 200 processes at once) leaves the lease directory empty.
    #[test]
    fn two_hundred_processes_lease_at_once() {
        let dir = ok(tempfile::tempdir());
        ok(fs::write(
            dir.path().join("passwd"),
            "a:x:2010000005:2010000006::/:/bin/sh\n",
        ));
        ok(fs::write(dir.path().join("group"), "g:x:2010000100:\n"));
        let host: BTreeSet<u32> = [2_010_000_005, 2_010_000_006, 2_010_000_100].into();

        let leased = run_workers(dir.path(), "lease", 200);
        let uids: BTreeSet<u32> = leased
            .iter()
            .map(|l| ok(l.trim_start_matches("LEASED ").parse::<u32>()))
            .collect();
        assert_eq!(uids.len(), 200, "two processes got the same id");
        assert!(uids.is_disjoint(&host));
        assert!(uids
            .iter()
            .all(|&u| (2_010_000_000..2_010_000_300).contains(&u)));
        let pool = test_pool(dir.path(), 2_010_000_000, 300);
        let live = ok(pool.live());
        assert_eq!(live.len(), 200);
        assert_eq!(
            live.iter().map(|(_, l)| l.uid).collect::<BTreeSet<_>>(),
            uids
        );
        // Lowest-first with 3 host ids skipped: exactly the first 203 ids less those.
        assert_eq!(uids.iter().max(), Some(&2_010_000_202));

        let released = run_workers(dir.path(), "release", 200);
        assert!(released.iter().all(|l| l.starts_with("RELEASED Some(")));
        assert!(files(&dir.path().join("leases")).is_empty());
    }
}
