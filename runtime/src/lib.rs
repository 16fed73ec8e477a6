//! paddock's sandbox engine.
//!
//! A library first: the `paddock` binary (runc's command line) and the containerd shim are thin
//! fronts over it. Sandboxes are created, started and torn down through [`sandbox`]; the pure
//! decisions (id rules, annotation policy, signal names, cgroup placement) live in their own
//! modules and are unit-tested without root.
//!
//! ```no_run
//! use paddock_runtime::sandbox::{self, CreateOptions};
//! use std::path::Path;
//!
//! let root = Path::new("/run/paddock");
//! let created = sandbox::create(root, "web-0", &CreateOptions::new("/srv/bundles/web"))?;
//! sandbox::start(root, "web-0")?;
//! sandbox::kill(root, "web-0", "TERM", true)?;
//! sandbox::delete(root, "web-0", true)?;
//! # let _ = created;
//! # Ok::<(), paddock_runtime::Error>(())
//! ```

pub mod access;
pub mod acl;
pub mod bundle;
pub mod cgroups;
pub mod config;
pub mod cpu;
pub mod cpu_pool;
pub mod disk;
pub mod error;
pub mod executor;
pub mod id;
pub mod identity;
pub mod memory;
pub mod migration;
pub mod monitor;
pub mod network;
pub mod nss;
pub mod oom;
pub mod policy;
pub mod proc_events;
pub mod sandbox;
pub mod seccomp;
pub mod signal;
pub mod stats;
pub mod store;
pub mod teardown;
pub mod tenant;
pub mod userns;

pub use error::Error;

/// Where sandbox state lives when the caller gives no `--root`.
pub const DEFAULT_ROOT: &str = "/run/paddock";
