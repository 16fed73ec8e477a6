//! Node policy: `/etc/paddock/config.toml`.
//!
//! Every key has a built-in default, so a node needs no file at all; a file names only what it
//! changes. Unknown keys are refused (a typo must not silently fall back to a default), and a
//! malformed file is one error line naming the file, the line and the key.
//!
//! ```toml
//! [identity]
//! base = 2010000000        # first host uid/gid of the sandbox pool
//! size = 130000000         # ids in the pool
//! lease_dir = "/run/paddock/leases"
//!
//! [acl]
//! admin_gid = 2000         # platform admin group granted rwx on every sandbox directory
//! deny = ["/usr/bin/su", "/usr/bin/gcc"]
//!
//! [cpu]
//! state_dir = "/run/paddock/cpu"   # the node's CPU registry
//! reserved = "0"           # CPUs left to the system: neither exclusive nor shared
//! max_exclusive = "2/3"    # share of all CPUs that exclusive instances may hold together
//! placement = "same-core"  # or "spread": how exclusive CPUs are chosen
//! ```
//!
//! To add a section (quota, cpu, …): a struct with `#[serde(default, deny_unknown_fields)]` and a
//! `Default` impl holding the built-in values, a field of that type in [`NodeConfig`], and its
//! checks in [`NodeConfig::validate`].
//!
//! ```no_run
//! use paddock_runtime::config::{NodeConfig, DEFAULT_PATH};
//!
//! let config = NodeConfig::load(DEFAULT_PATH)?;
//! println!("pool starts at {}", config.identity.base);
//! # Ok::<(), paddock_runtime::config::ConfigError>(())
//! ```

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the node config lives.
pub const DEFAULT_PATH: &str = "/etc/paddock/config.toml";

/// Ids of one user namespace range (and the alignment of such ranges in the pool).
pub const USERNS_RANGE: u32 = 65536;

/// The first id of the default pool.
///
/// Chosen to collide with nothing a Linux node already uses:
/// - regular and system accounts (0–60000), systemd's dynamic users (61184–65519), `nobody`
///   (65534) and the 16-bit `-1` (65535) are far below;
/// - Debian's and Ubuntu's `/etc/subuid` ranges (100000 + 65536·N, `SUB_UID_MAX` 600100000) and
///   systemd-nspawn's container ranges (524288–1879048191) are below;
/// - SSSD's AD id-mapping default (200000–2000200000) and FreeIPA's random id ranges (at most
///   2000000000 + 200000) end below it, which is why it is not 2000000000;
/// - systemd's foreign-uid range (0x7FFE0000 = 2147352576 and up) and everything at or above
///   2^31 (which tools storing ids as signed 32-bit integers get wrong) are above the pool's end.
///
/// In decimal so an operator recognises a paddock identity (`2010000042`) in `ps` and `ls -n`.
pub const DEFAULT_POOL_BASE: u32 = 2_010_000_000;
/// The size of the default pool: 2010000000..=2139999999, below 0x7FFE0000. Room for 1982 aligned
/// user-namespace ranges of 65536 ids beside the single ids.
pub const DEFAULT_POOL_SIZE: u32 = 130_000_000;
/// Where the identity leases live: `/run` is a tmpfs, so leases end with the sandboxes at reboot.
pub const DEFAULT_LEASE_DIR: &str = "/run/paddock/leases";

/// Paths a sandbox identity may neither read nor execute unless the config says otherwise
/// (warden's ban on system commands): identity switching, mounting, account changes and the
/// toolchain. Only the paths that exist on the node (or in the rootfs) are applied.
pub const DEFAULT_DENY: &[&str] = &[
    "/bin/su",
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/pkexec",
    "/bin/mount",
    "/usr/bin/mount",
    "/bin/umount",
    "/usr/bin/umount",
    "/usr/bin/passwd",
    "/usr/bin/chsh",
    "/usr/bin/chfn",
    "/usr/bin/gpasswd",
    "/usr/bin/newgrp",
    "/usr/bin/cc",
    "/usr/bin/c++",
    "/usr/bin/gcc",
    "/usr/bin/g++",
    "/usr/bin/cpp",
    "/usr/bin/clang",
    "/usr/bin/clang++",
    "/usr/bin/tcc",
    "/usr/bin/as",
    "/usr/bin/ld",
];

/// The whole node config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    pub identity: IdentityConfig,
    pub acl: AclConfig,
    pub quota: QuotaConfig,
    pub cpu: CpuConfig,
}

/// `[cpu]`: the node's CPU policy (see `cpu_pool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CpuConfig {
    /// Where the registry of live sandboxes' CPU modes and exclusive CPUs lives (a tmpfs).
    pub state_dir: PathBuf,
    /// CPUs left to the system, as a kernel CPU list (`0`, `0-1`); empty: none.
    pub reserved: String,
    /// The share of all CPUs that exclusive instances may hold together (`2/3`, `0.5`).
    pub max_exclusive: String,
    /// How exclusive CPUs are chosen.
    pub placement: crate::cpu_pool::Placement,
}

/// Default directory of the CPU registry.
pub const DEFAULT_CPU_STATE_DIR: &str = "/run/paddock/cpu";

impl Default for CpuConfig {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_CPU_STATE_DIR),
            reserved: String::new(),
            max_exclusive: "2/3".into(),
            placement: crate::cpu_pool::Placement::SameCore,
        }
    }
}

impl CpuConfig {
    /// The reserved CPUs, parsed (checked by [`NodeConfig::validate`]).
    pub fn reserved_cpus(&self) -> Result<crate::cpu_pool::CpuSet, String> {
        crate::cpu_pool::CpuSet::parse(&self.reserved)
    }

    /// The maximum exclusive share, parsed (checked by [`NodeConfig::validate`]).
    pub fn max_exclusive_share(&self) -> Result<crate::cpu_pool::Ratio, String> {
        crate::cpu_pool::Ratio::parse(&self.max_exclusive)
    }
}

/// `[quota]`: where per-instance disk volumes live and which backend limits them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// The quota store: images, volumes and their records.
    pub store: PathBuf,
    /// `loop` or `project` to force a backend; absent, paddock probes the store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Where a sandbox sees its volume unless `io.paddock.disk.path` says otherwise.
    pub mount_path: PathBuf,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        Self {
            store: PathBuf::from(DEFAULT_QUOTA_STORE),
            backend: None,
            mount_path: PathBuf::from(DEFAULT_DISK_PATH),
        }
    }
}

/// Default quota store.
pub const DEFAULT_QUOTA_STORE: &str = "/var/lib/paddock/quota";
/// Default mount point of an instance's volume (warden's home of the app user).
pub const DEFAULT_DISK_PATH: &str = "/home/vcap";
/// Environment variable naming another config file (tests, operators trying a setting).
pub const CONFIG_ENV: &str = "PADDOCK_CONFIG";

impl NodeConfig {
    /// The node config from `$PADDOCK_CONFIG` or [`DEFAULT_PATH`].
    pub fn load_default() -> Result<Self, ConfigError> {
        match std::env::var_os(CONFIG_ENV) {
            Some(p) => Self::load(PathBuf::from(p)),
            None => Self::load(DEFAULT_PATH),
        }
    }
}

/// `[identity]`: the pool of host uids/gids leased to sandboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// First id of the pool.
    pub base: u32,
    /// Number of ids in the pool (`base + size - 1` is the last).
    pub size: u32,
    /// Directory of the lease files; it should be on a tmpfs.
    pub lease_dir: PathBuf,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            base: DEFAULT_POOL_BASE,
            size: DEFAULT_POOL_SIZE,
            lease_dir: PathBuf::from(DEFAULT_LEASE_DIR),
        }
    }
}

impl IdentityConfig {
    /// The last id of the pool.
    pub fn last(&self) -> u32 {
        self.base.saturating_add(self.size.saturating_sub(1))
    }
}

/// `[acl]`: who besides the sandbox may use its directories, and what it may not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// The platform's admin group, granted rwx on every sandbox directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_gid: Option<u32>,
    /// Paths every sandbox identity is denied (`user:<uid>:---`), besides `io.paddock.acl.deny`.
    pub deny: Vec<PathBuf>,
}

impl Default for AclConfig {
    fn default() -> Self {
        Self {
            admin_gid: None,
            deny: DEFAULT_DENY.iter().map(PathBuf::from).collect(),
        }
    }
}

/// Errors of loading the node config. Each names the file; a parse error also names the line and
/// the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read node config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("node config {path}{}{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default(), key.as_ref().map(|k| format!(", key {k}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        key: Option<String>,
        message: String,
    },
    #[error("node config {path}, key {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        reason: String,
    },
}

impl NodeConfig {
    /// Loads the node config: built-in defaults when the file does not exist, an error when it
    /// cannot be read, does not parse or holds a value out of range.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses the text of a config file; `path` only names it in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let parse_error = |key: Option<String>, err: &toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            line: err.span().map(|s| line_of(text, s.start)),
            key,
            message: err.message().trim().replace('\n', " "),
        };
        let de = toml::de::Deserializer::parse(text).map_err(|e| parse_error(None, &e))?;
        let config: Self = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = (key != ".").then_some(key);
            parse_error(key, e.inner())
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks what the types alone do not; `path` only names the file in errors.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            reason,
        };
        let id = &self.identity;
        if id.size == 0 {
            return Err(invalid(
                "identity.size",
                "the pool needs at least one id".into(),
            ));
        }
        let last = u64::from(id.base) + u64::from(id.size) - 1;
        if last >= u64::from(u32::MAX) {
            return Err(invalid(
                "identity.size",
                format!(
                    "pool {}..{last} goes past 4294967294 (4294967295 is (uid_t)-1)",
                    id.base
                ),
            ));
        }
        for (special, what) in [(0, "root"), (65534, "nobody"), (65535, "(uint16_t)-1")] {
            if u64::from(id.base) <= special && special <= last {
                return Err(invalid(
                    "identity.base",
                    format!("pool {}..{last} contains {special} ({what})", id.base),
                ));
            }
        }
        if !id.lease_dir.is_absolute() {
            return Err(invalid(
                "identity.lease_dir",
                format!("{} is not an absolute path", id.lease_dir.display()),
            ));
        }
        if let Some(p) = self.acl.deny.iter().find(|p| !p.is_absolute()) {
            return Err(invalid(
                "acl.deny",
                format!("{} is not an absolute path", p.display()),
            ));
        }
        if !self.quota.store.is_absolute() {
            return Err(invalid(
                "quota.store",
                format!("{} is not an absolute path", self.quota.store.display()),
            ));
        }
        if let Some(b) = &self.quota.backend {
            if b != "loop" && b != "project" {
                return Err(invalid(
                    "quota.backend",
                    format!("{b:?}: expected loop or project"),
                ));
            }
        }
        if !self.quota.mount_path.is_absolute() {
            return Err(invalid(
                "quota.mount_path",
                format!(
                    "{} is not an absolute path",
                    self.quota.mount_path.display()
                ),
            ));
        }
        if !self.cpu.state_dir.is_absolute() {
            return Err(invalid(
                "cpu.state_dir",
                format!("{} is not an absolute path", self.cpu.state_dir.display()),
            ));
        }
        self.cpu
            .reserved_cpus()
            .map_err(|e| invalid("cpu.reserved", e))?;
        self.cpu
            .max_exclusive_share()
            .map_err(|e| invalid("cpu.max_exclusive", e))?;
        Ok(())
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(Path::new("/etc/paddock/config.toml"), text)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("accepted {text:?} as {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, NodeConfig::default());
        assert_eq!(c.identity.base, 2_010_000_000);
        assert_eq!(c.identity.last(), 2_139_999_999);
        assert_eq!(c.identity.lease_dir, Path::new("/run/paddock/leases"));
        assert_eq!(c.acl.admin_gid, None);
        assert!(c.acl.deny.contains(&PathBuf::from("/usr/bin/su")));
    }

    #[test]
    fn missing_file_is_the_defaults() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let c = NodeConfig::load(dir.path().join("config.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, NodeConfig::default());
    }

    #[test]
    fn load_reads_the_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[acl]\nadmin_gid = 2000\n").unwrap_or_else(|e| panic!("{e}"));
        let c = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.acl.admin_gid, Some(2000));
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        match NodeConfig::load(dir.path()) {
            Err(e @ ConfigError::Read { .. }) => {
                assert!(e
                    .to_string()
                    .starts_with(&format!("read node config {}: ", dir.path().display())));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_section_overrides_only_what_it_names() {
        let c = parse("[identity]\nsize = 16\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.identity.base, DEFAULT_POOL_BASE);
        assert_eq!(c.identity.size, 16);
        assert_eq!(c.acl, AclConfig::default());
    }

    #[test]
    fn full_file() {
        let c = parse(
            "[identity]\nbase = 3000000\nsize = 1000\nlease_dir = \"/tmp/l\"\n\
             [acl]\nadmin_gid = 4242\ndeny = [\"/usr/bin/su\"]\n\
             [quota]\nstore = \"/srv/q\"\nbackend = \"loop\"\nmount_path = \"/app\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c,
            NodeConfig {
                identity: IdentityConfig {
                    base: 3_000_000,
                    size: 1000,
                    lease_dir: "/tmp/l".into()
                },
                acl: AclConfig {
                    admin_gid: Some(4242),
                    deny: vec!["/usr/bin/su".into()]
                },
                quota: QuotaConfig {
                    store: "/srv/q".into(),
                    backend: Some("loop".into()),
                    mount_path: "/app".into(),
                },
                cpu: CpuConfig::default(),
            }
        );
        for bad in [
            "[quota]\nstore = \"rel\"\n",
            "[quota]\nbackend = \"zfs\"\n",
            "[quota]\nmount_path = \"home\"\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_section() {
        let c = parse("[cpu]\nstate_dir = \"/tmp/cpu\"\nreserved = \"0-1\"\nmax_exclusive = \"0.5\"\nplacement = \"spread\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.cpu.reserved_cpus().map(|s| s.len()), Ok(2));
        assert_eq!(c.cpu.placement, crate::cpu_pool::Placement::Spread);
        assert_eq!(NodeConfig::default().cpu.max_exclusive, "2/3");
        for (bad, key) in [
            ("[cpu]\nreserved = \"x\"\n", "cpu.reserved"),
            ("[cpu]\nmax_exclusive = \"3/2\"\n", "cpu.max_exclusive"),
            ("[cpu]\nstate_dir = \"rel\"\n", "cpu.state_dir"),
            ("[cpu]\nplacement = \"packed\"\n", "cpu.placement"),
        ] {
            let e = error(bad);
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn an_empty_deny_list_denies_nothing() {
        let c = parse("[acl]\ndeny = []\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(c.acl.deny.is_empty());
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        assert_eq!(
            error("[identity]\nbase = \"high\"\n"),
            "node config /etc/paddock/config.toml, line 2, key identity.base: \
             invalid type: string \"high\", expected u32"
        );
    }

    #[test]
    fn out_of_range_number_names_the_key() {
        let e = error("[identity]\nsize = 5000000000\n");
        assert!(e.contains("line 2, key identity.size"), "{e}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        assert_eq!(
            error("[identity]\nbse = 5\n"),
            "node config /etc/paddock/config.toml, line 2, key identity.bse: \
             unknown field `bse`, expected one of `base`, `size`, `lease_dir`"
        );
        assert_eq!(
            error("[identiti]\n"),
            "node config /etc/paddock/config.toml, line 1, key identiti: \
             unknown field `identiti`, expected one of `identity`, `acl`, `quota`, `cpu`"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let e = error("[identity]\nbase = = 3\n");
        assert!(
            e.starts_with("node config /etc/paddock/config.toml, line 2: "),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = error("[identity]\nbase = 1\nbase = 2\n");
        assert!(e.contains("line 3: duplicate key"), "{e}");
    }

    #[test]
    fn deny_entries_must_be_absolute_paths() {
        let e = error("[acl]\ndeny = [\"/usr/bin/su\", \"gcc\"]\n");
        assert_eq!(
            e,
            "node config /etc/paddock/config.toml, key acl.deny: gcc is not an absolute path"
        );
        let e = error("[acl]\ndeny = [1]\n");
        assert!(e.contains("key acl.deny[0]"), "{e}");
    }

    #[test]
    fn pool_must_fit_and_avoid_special_ids() {
        let e = error("[identity]\nbase = 4294967000\nsize = 1000\n");
        assert!(
            e.contains("key identity.size: pool 4294967000..4294967999 goes past"),
            "{e}"
        );
        let e = error("[identity]\nbase = 4294967295\nsize = 1\n");
        assert!(e.contains("goes past 4294967294"), "{e}");
        assert!(parse("[identity]\nbase = 4294967293\nsize = 2\n").is_ok());
        let e = error("[identity]\nbase = 60000\nsize = 10000\n");
        assert!(e.contains("contains 65534 (nobody)"), "{e}");
        let e = error("[identity]\nbase = 0\nsize = 10\n");
        assert!(e.contains("contains 0 (root)"), "{e}");
        let e = error("[identity]\nsize = 0\n");
        assert!(
            e.contains("key identity.size: the pool needs at least one id"),
            "{e}"
        );
        let e = error("[identity]\nlease_dir = \"run/leases\"\n");
        assert!(e.contains("key identity.lease_dir"), "{e}");
    }

    #[test]
    fn default_pool_is_clear_of_known_ranges() {
        let c = IdentityConfig::default();
        let last = u64::from(c.last());
        assert!(u64::from(c.base) > 2_000_200_000, "SSSD/FreeIPA id ranges");
        assert!(last < 0x7FFE_0000, "systemd foreign uid range");
        assert!(last < 1 << 31, "signed 32-bit ids");
        assert!(c.size / USERNS_RANGE >= 1024, "room for user namespaces");
    }

    #[test]
    fn defaults_serialize_back_to_what_parses() {
        let c = NodeConfig::default();
        let json = serde_json::to_string(&c).unwrap_or_else(|e| panic!("{e}"));
        let back: NodeConfig = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, c);
    }
}
