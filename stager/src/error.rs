//! The stager's error type: every variant names the step and the thing (path, app, instance)
//! it failed on, so that one line on stderr tells an operator what went wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach containerd at {address}: {reason} (is containerd running? set --address or CONTAINERD_ADDRESS)")]
    Unreachable { address: PathBuf, reason: String },
    #[error("containerd {step} {what}: {status}")]
    Containerd {
        step: &'static str,
        what: String,
        status: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("app {app}: {reason}")]
    App { app: String, reason: String },
    #[error("no start command in {dir}: add a Procfile with a `web:` line, an executable `start` script, or pass --command")]
    NoStartCommand { dir: PathBuf },
    #[error("droplet {0} not found (run `paddock-stager stage` first; droplets are the directories under <data-dir>/droplets)")]
    NoDroplet(String),
    #[error("network {step}: {reason}")]
    Network { step: String, reason: String },
    #[error("{what} failed ({status}): {stderr}")]
    Command {
        what: String,
        status: String,
        stderr: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(step: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            step,
            path: path.into(),
            source,
        }
    }

    pub fn containerd(step: &'static str, what: impl Into<String>, status: &tonic::Status) -> Self {
        let msg = status.message();
        Error::Containerd {
            step,
            what: what.into(),
            status: if msg.is_empty() {
                format!("{:?}", status.code())
            } else {
                msg.to_string()
            },
        }
    }

    pub fn app(app: &str, reason: impl Into<String>) -> Self {
        Error::App {
            app: app.to_string(),
            reason: reason.into(),
        }
    }
}
