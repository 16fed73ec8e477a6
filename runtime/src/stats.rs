//! Sandbox statistics in runc's `events` format (`types.Stats` of runc), so tools written for
//! runc read paddock's output unchanged. Reading goes through libcgroups (v1 and v2).

use std::collections::HashMap;
use std::path::PathBuf;

use libcgroups::common::{CgroupConfig, CgroupManager};
use libcgroups::stats::{MemoryData, Stats as CgStats};
use serde::Serialize;

use crate::error::{Error, Result};

#[derive(Debug, Default, Serialize)]
pub struct Stats {
    pub cpu: Cpu,
    pub memory: Memory,
    pub pids: Pids,
    pub blkio: Blkio,
    pub hugetlb: HashMap<String, Hugetlb>,
    /// The disk-quota volume (paddock's addition; runc has no such field).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<Disk>,
    /// The rootfs tree's project quota, when the writable rootfs has one.
    #[serde(rename = "rootfsDisk", skip_serializing_if = "Option::is_none")]
    pub rootfs_disk: Option<Disk>,
}

#[derive(Debug, Default, Serialize)]
pub struct Disk {
    pub usage: u64,
    pub limit: u64,
    pub inodes: u64,
    #[serde(rename = "inodesLimit")]
    pub inodes_limit: u64,
}

impl From<paddock_quota::Usage> for Disk {
    fn from(u: paddock_quota::Usage) -> Self {
        Disk {
            usage: u.bytes_used,
            limit: u.bytes_limit,
            inodes: u.inodes_used,
            inodes_limit: u.inodes_limit,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

#[derive(Debug, Default, Serialize)]
pub struct CpuUsage {
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub percpu: Vec<u64>,
    #[serde(rename = "percpu_kernel", skip_serializing_if = "Vec::is_empty")]
    pub percpu_kernel: Vec<u64>,
    #[serde(rename = "percpu_user", skip_serializing_if = "Vec::is_empty")]
    pub percpu_user: Vec<u64>,
    pub kernel: u64,
    pub user: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Throttling {
    #[serde(skip_serializing_if = "is_zero")]
    pub periods: u64,
    #[serde(rename = "throttledPeriods", skip_serializing_if = "is_zero")]
    pub throttled_periods: u64,
    #[serde(rename = "throttledTime", skip_serializing_if = "is_zero")]
    pub throttled_time: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "is_zero")]
    pub cache: u64,
    pub usage: MemoryEntry,
    pub swap: MemoryEntry,
    pub kernel: MemoryEntry,
    #[serde(rename = "kernelTCP")]
    pub kernel_tcp: MemoryEntry,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub raw: HashMap<String, u64>,
}

#[derive(Debug, Default, Serialize)]
pub struct MemoryEntry {
    pub limit: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Pids {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub limit: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Blkio {
    #[serde(
        rename = "ioServiceBytesRecursive",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive", skip_serializing_if = "Vec::is_empty")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Default, Serialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Hugetlb {
    #[serde(skip_serializing_if = "is_zero")]
    pub usage: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub failcnt: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One line of `paddock events`: `{"type":"stats","id":…,"data":…}` or `{"type":"oom",…}`.
#[derive(Debug, Serialize)]
pub struct Event<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

/// Reads the statistics of the cgroup at `cgroups_path`.
pub fn read(cgroups_path: &str, id: &str) -> Result<Stats> {
    let manager = libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroups_path),
        systemd_cgroup: false,
        container_name: id.to_string(),
    })
    .map_err(|e| Error::container("read stats of", id, &e))?;
    let raw = manager
        .stats()
        .map_err(|e| Error::container("read stats of", id, &e))?;
    Ok(convert(raw))
}

fn entry(m: &MemoryData) -> MemoryEntry {
    MemoryEntry {
        limit: m.limit,
        usage: m.usage,
        max: m.max_usage,
        failcnt: m.fail_count,
    }
}

/// Maps libcgroups' statistics onto runc's field names.
pub fn convert(s: CgStats) -> Stats {
    let blk = |v: &[libcgroups::stats::BlkioDeviceStat]| {
        v.iter()
            .map(|d| BlkioEntry {
                major: d.major,
                minor: d.minor,
                op: d.op_type.clone().unwrap_or_default(),
                value: d.value,
            })
            .collect()
    };
    Stats {
        cpu: Cpu {
            usage: CpuUsage {
                total: s.cpu.usage.usage_total,
                percpu: s.cpu.usage.per_core_usage_total.clone(),
                percpu_kernel: s.cpu.usage.per_core_usage_kernel.clone(),
                percpu_user: s.cpu.usage.per_core_usage_user.clone(),
                kernel: s.cpu.usage.usage_kernel,
                user: s.cpu.usage.usage_user,
            },
            throttling: Throttling {
                periods: s.cpu.throttling.periods,
                throttled_periods: s.cpu.throttling.throttled_periods,
                throttled_time: s.cpu.throttling.throttled_time,
            },
        },
        memory: Memory {
            cache: s.memory.cache,
            usage: entry(&s.memory.memory),
            swap: entry(&s.memory.memswap),
            kernel: entry(&s.memory.kernel),
            kernel_tcp: entry(&s.memory.kernel_tcp),
            raw: s.memory.stats.clone(),
        },
        pids: Pids {
            current: s.pids.current,
            limit: s.pids.limit,
        },
        blkio: Blkio {
            io_service_bytes_recursive: blk(&s.blkio.service_bytes),
            io_serviced_recursive: blk(&s.blkio.serviced),
        },
        hugetlb: s
            .hugetlb
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Hugetlb {
                        usage: v.usage,
                        max: v.max_usage,
                        failcnt: v.fail_count,
                    },
                )
            })
            .collect(),
        disk: None,
        rootfs_disk: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_field_names() {
        let mut raw = CgStats::default();
        raw.cpu.usage.usage_total = 5;
        raw.memory.memory.limit = 64;
        raw.memory.memory.usage = 10;
        raw.pids.current = 3;
        let ev = Event {
            kind: "stats",
            id: "a",
            data: Some(convert(raw)),
        };
        let v = serde_json::to_value(&ev).unwrap_or_default();
        assert_eq!(v["type"], "stats");
        assert_eq!(v["data"]["cpu"]["usage"]["total"], 5);
        assert_eq!(v["data"]["memory"]["usage"]["limit"], 64);
        assert_eq!(v["data"]["memory"]["usage"]["usage"], 10);
        assert_eq!(v["data"]["pids"]["current"], 3);
        let oom: Event<'_, Stats> = Event {
            kind: "oom",
            id: "a",
            data: None,
        };
        assert_eq!(
            serde_json::to_string(&oom).unwrap_or_default(),
            r#"{"type":"oom","id":"a"}"#
        );
    }
}
