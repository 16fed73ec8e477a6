//! What a router weighs, read from containerd's task metrics: the shim reports the cgroup's
//! statistics as `io.containerd.cgroups.v1.Metrics` (cgroup v1) or `…v2.Metrics` (cgroup v2).
//! Only the fields the stager shows are declared; prost skips the rest.

use prost::Message;
use prost_types::Any;

/// Memory in use, CPU time used, and the OOM kills the cgroup has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub memory_bytes: u64,
    pub cpu_ns: u64,
    pub oom_kills: u64,
}

pub const V1_TYPE: &str = "io.containerd.cgroups.v1.Metrics";
pub const V2_TYPE: &str = "io.containerd.cgroups.v2.Metrics";

pub mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "3")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
        #[prost(message, optional, tag = "9")]
        pub memory_oom_control: Option<MemoryOomControl>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(message, optional, tag = "1")]
        pub usage: Option<CpuUsage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuUsage {
        #[prost(uint64, tag = "1")]
        pub total: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(message, optional, tag = "33")]
        pub usage: Option<MemoryEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryEntry {
        #[prost(uint64, tag = "1")]
        pub limit: u64,
        #[prost(uint64, tag = "2")]
        pub usage: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryOomControl {
        #[prost(uint64, tag = "3")]
        pub oom_kill: u64,
    }
}

pub mod v2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "2")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
        #[prost(message, optional, tag = "8")]
        pub memory_events: Option<MemoryEvents>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(uint64, tag = "1")]
        pub usage_usec: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(uint64, tag = "32")]
        pub usage: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryEvents {
        #[prost(uint64, tag = "5")]
        pub oom_kill: u64,
    }
}

/// Decodes a metric's data; `None` for a type the stager does not know.
pub fn decode(any: &Any) -> Option<Usage> {
    let url = any.type_url.trim_start_matches("types.googleapis.com/");
    match url {
        V1_TYPE => {
            let m = v1::Metrics::decode(any.value.as_slice()).ok()?;
            Some(Usage {
                memory_bytes: m.memory.and_then(|m| m.usage).map_or(0, |u| u.usage),
                cpu_ns: m.cpu.and_then(|c| c.usage).map_or(0, |u| u.total),
                oom_kills: m.memory_oom_control.map_or(0, |o| o.oom_kill),
            })
        }
        V2_TYPE => {
            let m = v2::Metrics::decode(any.value.as_slice()).ok()?;
            Some(Usage {
                memory_bytes: m.memory.map_or(0, |m| m.usage),
                cpu_ns: m.cpu.map_or(0, |c| c.usage_usec.saturating_mul(1000)),
                oom_kills: m.memory_events.map_or(0, |e| e.oom_kill),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2() {
        let m = v1::Metrics {
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage { total: 42 }),
            }),
            memory: Some(v1::MemoryStat {
                usage: Some(v1::MemoryEntry {
                    limit: 100,
                    usage: 7,
                }),
            }),
            memory_oom_control: Some(v1::MemoryOomControl { oom_kill: 2 }),
        };
        let any = Any {
            type_url: V1_TYPE.into(),
            value: m.encode_to_vec(),
        };
        assert_eq!(
            decode(&any),
            Some(Usage {
                memory_bytes: 7,
                cpu_ns: 42,
                oom_kills: 2
            })
        );
        let m = v2::Metrics {
            cpu: Some(v2::CpuStat { usage_usec: 3 }),
            memory: Some(v2::MemoryStat { usage: 9 }),
            memory_events: Some(v2::MemoryEvents { oom_kill: 1 }),
        };
        let any = Any {
            type_url: V2_TYPE.into(),
            value: m.encode_to_vec(),
        };
        assert_eq!(
            decode(&any),
            Some(Usage {
                memory_bytes: 9,
                cpu_ns: 3000,
                oom_kills: 1
            })
        );
        assert_eq!(
            decode(&Any {
                type_url: "x".into(),
                value: vec![]
            }),
            None
        );
    }
}
