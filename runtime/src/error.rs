//! The engine's error type: every variant names the operation and the path or id it concerns,
//! so that one line on stderr tells an operator what failed and where.

use std::path::PathBuf;

/// Errors of the paddock engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid sandbox id {id:?}: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("sandbox {0} already exists")]
    Exists(String),
    #[error("sandbox {0} does not exist")]
    NotFound(String),
    #[error("sandbox {id} is {status}: {action} needs it {wanted}")]
    WrongState {
        id: String,
        status: String,
        action: &'static str,
        wanted: &'static str,
    },
    #[error("bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },
    #[error("config {path}: {reason}")]
    Spec { path: PathBuf, reason: String },
    #[error("annotation {key}={value:?}: {reason}")]
    Annotation {
        key: String,
        value: String,
        reason: String,
    },
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    CgroupsPath { path: String, reason: &'static str },
    #[error("invalid signal {0:?}")]
    Signal(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("teardown of {path}: {reason}")]
    Teardown { path: PathBuf, reason: String },
    #[error("{op} sandbox {id}: {reason}")]
    Container {
        op: &'static str,
        id: String,
        reason: String,
    },
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Quota(#[from] paddock_quota::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Acl(#[from] crate::acl::AclError),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn sys(op: &'static str, source: nix::Error) -> Self {
        Error::Sys { op, source }
    }

    /// Wraps an error of libcontainer, whose top-level messages ("io error") say little:
    /// the whole source chain goes into the one line.
    pub(crate) fn container(
        op: &'static str,
        id: &str,
        err: &(dyn std::error::Error + 'static),
    ) -> Self {
        Error::Container {
            op,
            id: id.to_string(),
            reason: chain(err),
        }
    }
}

/// Renders an error and its sources as one line, `outer: inner: innermost`, skipping repeats.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ").replace('\n', " ")
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_sources_on_one_line() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Error::io("read", "/x/config.json", inner);
        assert_eq!(chain(&err), "read /x/config.json: no such file");
    }
}
