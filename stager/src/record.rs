//! An instance as containerd remembers it: the stager keeps no database of its own; each
//! instance's facts (app, index, guid, droplet, host port, limits, desired state, restarts,
//! OOM kills) are labels on its containerd container.

use std::collections::HashMap;

use crate::limits::{CpuMode, Limits};

pub const APP: &str = "paddock.stager/app";
pub const INDEX: &str = "paddock.stager/index";
pub const GUID: &str = "paddock.stager/guid";
pub const DROPLET: &str = "paddock.stager/droplet";
pub const HOST_PORT: &str = "paddock.stager/host-port";
pub const PORT: &str = "paddock.stager/port";
pub const IP: &str = "paddock.stager/ip";
pub const MEMORY: &str = "paddock.stager/memory";
pub const DISK: &str = "paddock.stager/disk";
pub const CPU: &str = "paddock.stager/cpu";
pub const DESIRED: &str = "paddock.stager/desired";
pub const RESTARTS: &str = "paddock.stager/restarts";
pub const OOM_KILLS: &str = "paddock.stager/oom-kills";
pub const LAST_EXIT: &str = "paddock.stager/last-exit";
/// `true` once the instance's port has answered (routers send it requests only then).
pub const READY: &str = "paddock.stager/ready";

/// What the stager wants of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Running,
    /// Being stopped on purpose: an exit is expected, not a crash.
    Stopped,
    /// Crashed more often than the restart budget allows: left down.
    Crashed,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Crashed => "crashed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "stopped" => Desired::Stopped,
            "crashed" => Desired::Crashed,
            _ => Desired::Running,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub app: String,
    pub index: u32,
    pub guid: String,
    pub droplet: String,
    pub host_port: u16,
    pub port: u16,
    pub ip: String,
    pub limits: Limits,
    pub desired: Desired,
    pub restarts: u32,
    pub oom_kills: u32,
    pub last_exit: String,
    pub ready: bool,
}

impl Record {
    pub fn labels(&self) -> HashMap<String, String> {
        [
            (APP, self.app.clone()),
            (INDEX, self.index.to_string()),
            (GUID, self.guid.clone()),
            (DROPLET, self.droplet.clone()),
            (HOST_PORT, self.host_port.to_string()),
            (PORT, self.port.to_string()),
            (IP, self.ip.clone()),
            (MEMORY, self.limits.memory.to_string()),
            (DISK, self.limits.disk.to_string()),
            (CPU, self.limits.cpu.as_str().to_string()),
            (DESIRED, self.desired.as_str().to_string()),
            (RESTARTS, self.restarts.to_string()),
            (OOM_KILLS, self.oom_kills.to_string()),
            (LAST_EXIT, self.last_exit.clone()),
            (READY, self.ready.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The record of a container, `None` if it is not one of the stager's instances.
    pub fn from_labels(id: &str, labels: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| labels.get(k).cloned();
        let num = |k: &str| get(k).and_then(|v| v.parse::<u64>().ok());
        Some(Record {
            id: id.to_string(),
            app: get(APP)?,
            index: u32::try_from(num(INDEX)?).ok()?,
            guid: get(GUID).unwrap_or_default(),
            droplet: get(DROPLET).unwrap_or_default(),
            host_port: u16::try_from(num(HOST_PORT)?).ok()?,
            port: num(PORT).and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
            ip: get(IP).unwrap_or_default(),
            limits: Limits {
                memory: num(MEMORY).unwrap_or(0),
                disk: num(DISK).unwrap_or(0),
                cpu: CpuMode::parse(&get(CPU).unwrap_or_default()).unwrap_or_default(),
            },
            desired: Desired::parse(&get(DESIRED).unwrap_or_default()),
            restarts: num(RESTARTS)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            oom_kills: num(OOM_KILLS)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            last_exit: get(LAST_EXIT).unwrap_or_default(),
            ready: get(READY).is_some_and(|v| v == "true"),
        })
    }
}

/// How an init process ended, from its wait status as containerd reports it (128+signal for a
/// signal, as a shell would).
pub fn describe_exit(status: u32, oom: bool) -> String {
    if oom {
        return "oom".into();
    }
    match status {
        0 => "exit 0".into(),
        s if s > 128 && s < 128 + 65 => format!("signal {}", s - 128),
        s => format!("exit {s}"),
    }
}

/// An app name: the first part of container ids and the cgroup parent of its instances.
pub fn valid_app(app: &str) -> bool {
    (1..=40).contains(&app.len())
        && app
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && app
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip() {
        let r = Record {
            id: "hello-0-abcd1234".into(),
            app: "hello".into(),
            index: 0,
            guid: "abcd1234".into(),
            droplet: "d".into(),
            host_port: 61000,
            port: 8080,
            ip: "10.89.0.2".into(),
            limits: Limits {
                memory: 1 << 27,
                disk: 1 << 28,
                cpu: CpuMode::Cap,
            },
            desired: Desired::Crashed,
            restarts: 3,
            oom_kills: 2,
            last_exit: "oom".into(),
            ready: true,
        };
        assert_eq!(Record::from_labels(&r.id, &r.labels()), Some(r.clone()));
        assert_eq!(Record::from_labels("x", &HashMap::new()), None);
    }

    #[test]
    fn exits_and_names() {
        assert_eq!(describe_exit(137, false), "signal 9");
        assert_eq!(describe_exit(137, true), "oom");
        assert_eq!(describe_exit(3, false), "exit 3");
        assert!(valid_app("hello-2"));
        assert!(!valid_app("Hello"));
        assert!(!valid_app("-x"));
        assert!(!valid_app(""));
        assert!(!valid_app("a/b"));
    }
}
