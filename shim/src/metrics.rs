//! The runtime's statistics (runc's `events` format, read in-process through the library) in
//! containerd's cgroup Metrics types, so `ctr task metrics` and the CRI read them: v1
//! (`io.containerd.cgroups.v1.Metrics`) where the sandbox's cgroups are v1 controllers, v2
//! (`io.containerd.cgroups.v2.Metrics`) on the unified hierarchy. The disk quota has no field
//! in either type; `paddock events` reports it.

use std::collections::{BTreeMap, HashMap};

use containerd_shim::protos::cgroups::metrics as m1;
use containerd_shim::protos::cgroups_v2::metrics as m2;
use containerd_shim::protos::protobuf::MessageField;
use paddock_runtime::stats::{MemoryEntry, Stats};

fn raw(s: &Stats, key: &str) -> u64 {
    s.memory.raw.get(key).copied().unwrap_or(0)
}

fn entry(e: &MemoryEntry) -> m1::MemoryEntry {
    m1::MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max,
        failcnt: e.failcnt,
        ..Default::default()
    }
}

/// cgroup v1 metrics; `oom_kills` from the instance's `memory.oom_control`.
pub fn v1(s: &Stats, oom_kills: Option<u64>) -> m1::Metrics {
    let r = |k: &str| raw(s, k);
    let memory = m1::MemoryStat {
        cache: r("cache"),
        rss: r("rss"),
        rss_huge: r("rss_huge"),
        mapped_file: r("mapped_file"),
        dirty: r("dirty"),
        writeback: r("writeback"),
        pg_pg_in: r("pgpgin"),
        pg_pg_out: r("pgpgout"),
        pg_fault: r("pgfault"),
        pg_maj_fault: r("pgmajfault"),
        inactive_anon: r("inactive_anon"),
        active_anon: r("active_anon"),
        inactive_file: r("inactive_file"),
        active_file: r("active_file"),
        unevictable: r("unevictable"),
        hierarchical_memory_limit: r("hierarchical_memory_limit"),
        hierarchical_swap_limit: r("hierarchical_memsw_limit"),
        total_cache: r("total_cache"),
        total_rss: r("total_rss"),
        total_rss_huge: r("total_rss_huge"),
        total_mapped_file: r("total_mapped_file"),
        total_dirty: r("total_dirty"),
        total_writeback: r("total_writeback"),
        total_pg_pg_in: r("total_pgpgin"),
        total_pg_pg_out: r("total_pgpgout"),
        total_pg_fault: r("total_pgfault"),
        total_pg_maj_fault: r("total_pgmajfault"),
        total_inactive_anon: r("total_inactive_anon"),
        total_active_anon: r("total_active_anon"),
        total_inactive_file: r("total_inactive_file"),
        total_active_file: r("total_active_file"),
        total_unevictable: r("total_unevictable"),
        usage: MessageField::some(entry(&s.memory.usage)),
        swap: MessageField::some(entry(&s.memory.swap)),
        kernel: MessageField::some(entry(&s.memory.kernel)),
        kernel_tcp: MessageField::some(entry(&s.memory.kernel_tcp)),
        ..Default::default()
    };
    let cpu = m1::CPUStat {
        usage: MessageField::some(m1::CPUUsage {
            total: s.cpu.usage.total,
            kernel: s.cpu.usage.kernel,
            user: s.cpu.usage.user,
            per_cpu: s.cpu.usage.percpu.clone(),
            ..Default::default()
        }),
        throttling: MessageField::some(m1::Throttle {
            periods: s.cpu.throttling.periods,
            throttled_periods: s.cpu.throttling.throttled_periods,
            throttled_time: s.cpu.throttling.throttled_time,
            ..Default::default()
        }),
        ..Default::default()
    };
    let blk = |v: &[paddock_runtime::stats::BlkioEntry]| {
        v.iter()
            .map(|e| m1::BlkIOEntry {
                op: e.op.clone(),
                major: e.major,
                minor: e.minor,
                value: e.value,
                ..Default::default()
            })
            .collect()
    };
    m1::Metrics {
        hugetlb: sorted(&s.hugetlb)
            .map(|(size, h)| m1::HugetlbStat {
                usage: h.usage,
                max: h.max,
                failcnt: h.failcnt,
                pagesize: size.clone(),
                ..Default::default()
            })
            .collect(),
        pids: MessageField::some(m1::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(cpu),
        memory: MessageField::some(memory),
        blkio: MessageField::some(m1::BlkIOStat {
            io_service_bytes_recursive: blk(&s.blkio.io_service_bytes_recursive),
            io_serviced_recursive: blk(&s.blkio.io_serviced_recursive),
            ..Default::default()
        }),
        memory_oom_control: match oom_kills {
            Some(n) => MessageField::some(m1::MemoryOomControl {
                oom_kill: n,
                ..Default::default()
            }),
            None => MessageField::none(),
        },
        ..Default::default()
    }
}

fn sorted<V>(map: &HashMap<String, V>) -> impl Iterator<Item = (&String, &V)> {
    let mut v: Vec<_> = map.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v.into_iter()
}

/// `memory.events` of a v2 cgroup as containerd's MemoryEvents. `oom_kill` counts processes
/// killed, as on v1: the kernel's `oom_kill` less the second count it gives the victim of each
/// group kill (`memory.oom.group`, [`paddock_runtime::oom::v2_kills`]); the other counters as
/// the kernel keeps them. `None` if the text has no `oom_kill` line.
pub fn memory_events(text: &str) -> Option<m2::MemoryEvents> {
    use paddock_runtime::oom::parse_counter;
    let c = |key: &str| parse_counter(text, key).unwrap_or(0);
    Some(m2::MemoryEvents {
        low: c("low"),
        high: c("high"),
        max: c("max"),
        oom: c("oom"),
        oom_kill: paddock_runtime::oom::v2_kills(text)?,
        oom_group_kill: c("oom_group_kill"),
        ..Default::default()
    })
}

/// v2 `io.stat` (which the library reports as blkio entries with the ops `read` and `write`,
/// bytes and operations) as containerd's IOStat: one entry per device.
fn io(s: &Stats) -> m2::IOStat {
    let mut devices: BTreeMap<(u64, u64), m2::IOEntry> = BTreeMap::new();
    let mut add = |entries: &[paddock_runtime::stats::BlkioEntry], bytes: bool| {
        for e in entries {
            let d = devices
                .entry((e.major, e.minor))
                .or_insert_with(|| m2::IOEntry {
                    major: e.major,
                    minor: e.minor,
                    ..Default::default()
                });
            let field = match (e.op.to_ascii_lowercase().as_str(), bytes) {
                ("read", true) => &mut d.rbytes,
                ("write", true) => &mut d.wbytes,
                ("read", false) => &mut d.rios,
                ("write", false) => &mut d.wios,
                _ => continue,
            };
            *field = field.saturating_add(e.value);
        }
    };
    add(&s.blkio.io_service_bytes_recursive, true);
    add(&s.blkio.io_serviced_recursive, false);
    m2::IOStat {
        usage: devices.into_values().collect(),
        ..Default::default()
    }
}

/// cgroup v2 metrics (the library reports v2 CPU times in microseconds, as `cpu.stat` does);
/// `events`: the cgroup's [`memory_events`].
pub fn v2(s: &Stats, events: Option<m2::MemoryEvents>) -> m2::Metrics {
    let r = |k: &str| raw(s, k);
    let memory = m2::MemoryStat {
        anon: r("anon"),
        file: r("file"),
        kernel_stack: r("kernel_stack"),
        slab: r("slab"),
        sock: r("sock"),
        shmem: r("shmem"),
        file_mapped: r("file_mapped"),
        file_dirty: r("file_dirty"),
        file_writeback: r("file_writeback"),
        anon_thp: r("anon_thp"),
        inactive_anon: r("inactive_anon"),
        active_anon: r("active_anon"),
        inactive_file: r("inactive_file"),
        active_file: r("active_file"),
        unevictable: r("unevictable"),
        slab_reclaimable: r("slab_reclaimable"),
        slab_unreclaimable: r("slab_unreclaimable"),
        pgfault: r("pgfault"),
        pgmajfault: r("pgmajfault"),
        workingset_refault: r("workingset_refault"),
        workingset_activate: r("workingset_activate"),
        workingset_nodereclaim: r("workingset_nodereclaim"),
        pgrefill: r("pgrefill"),
        pgscan: r("pgscan"),
        pgsteal: r("pgsteal"),
        pgactivate: r("pgactivate"),
        pgdeactivate: r("pgdeactivate"),
        pglazyfree: r("pglazyfree"),
        pglazyfreed: r("pglazyfreed"),
        thp_fault_alloc: r("thp_fault_alloc"),
        thp_collapse_alloc: r("thp_collapse_alloc"),
        usage: s.memory.usage.usage,
        usage_limit: s.memory.usage.limit,
        max_usage: s.memory.usage.max,
        swap_usage: s.memory.swap.usage,
        swap_limit: s.memory.swap.limit,
        swap_max_usage: s.memory.swap.max,
        ..Default::default()
    };
    m2::Metrics {
        pids: MessageField::some(m2::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        }),
        cpu: MessageField::some(m2::CPUStat {
            usage_usec: s.cpu.usage.total,
            user_usec: s.cpu.usage.user,
            system_usec: s.cpu.usage.kernel,
            nr_periods: s.cpu.throttling.periods,
            nr_throttled: s.cpu.throttling.throttled_periods,
            throttled_usec: s.cpu.throttling.throttled_time,
            ..Default::default()
        }),
        memory: MessageField::some(memory),
        hugetlb: sorted(&s.hugetlb)
            .map(|(size, h)| m2::HugeTlbStat {
                current: h.usage,
                max: h.max,
                pagesize: size.clone(),
                ..Default::default()
            })
            .collect(),
        io: MessageField::some(io(s)),
        memory_events: events.into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Stats {
        let mut s = Stats::default();
        s.cpu.usage.total = 1000;
        s.cpu.usage.user = 600;
        s.cpu.usage.kernel = 400;
        s.cpu.usage.percpu = vec![700, 300];
        s.memory.usage.usage = 4096;
        s.memory.usage.limit = 64 << 20;
        s.memory.raw.insert("rss".into(), 2048);
        s.memory.raw.insert("total_rss".into(), 2048);
        s.memory.raw.insert("anon".into(), 1024);
        s.pids.current = 3;
        s.pids.limit = 100;
        s
    }

    #[test]
    fn v1_fields() {
        let m = v1(&sample(), Some(2));
        assert_eq!(m.cpu.usage.total, 1000);
        assert_eq!(m.cpu.usage.per_cpu, vec![700, 300]);
        assert_eq!(m.memory.usage.usage, 4096);
        assert_eq!(m.memory.usage.limit, 64 << 20);
        assert_eq!(m.memory.rss, 2048);
        assert_eq!(m.memory.total_rss, 2048);
        assert_eq!((m.pids.current, m.pids.limit), (3, 100));
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        assert!(v1(&sample(), None).memory_oom_control.is_none());
    }

    #[test]
    fn v2_fields() {
        let events = memory_events("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        let m = v2(&sample(), events);
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (1000, 600, 400)
        );
        assert_eq!(m.memory.usage, 4096);
        assert_eq!(m.memory.usage_limit, 64 << 20);
        assert_eq!(m.memory.anon, 1024);
        assert_eq!(m.pids.current, 3);
        assert_eq!((m.memory_events.max, m.memory_events.oom_kill), (3, 1));
        assert!(v2(&sample(), None).memory_events.is_none());
    }

    #[test]
    fn v2_memory_events_count_a_group_kills_victim_once() {
        // memory.oom.group: the victim counted as victim and as group member
        let e = memory_events("low 1\nhigh 2\nmax 9\noom 1\noom_kill 2\noom_group_kill 1\n")
            .map(|e| (e.low, e.high, e.max, e.oom, e.oom_kill, e.oom_group_kill));
        assert_eq!(e, Some((1, 2, 9, 1, 1, 1)));
        // a group kill of four processes
        let kills = |text: &str| memory_events(text).map(|e| e.oom_kill);
        assert_eq!(kills("oom 1\noom_kill 5\noom_group_kill 1\n"), Some(4));
        // kernels before oom_group_kill was counted
        assert_eq!(kills("oom 2\noom_kill 2\n"), Some(2));
        assert!(memory_events("").is_none());
        assert!(memory_events("oom 1\n").is_none());
    }

    #[test]
    fn v2_io_is_one_entry_per_device() {
        let mut s = sample();
        let e = |major, minor, op: &str, value| paddock_runtime::stats::BlkioEntry {
            major,
            minor,
            op: op.into(),
            value,
        };
        s.blkio.io_service_bytes_recursive = vec![
            e(254, 0, "read", 4096),
            e(254, 0, "write", 1 << 22),
            e(7, 1, "read", 512),
            e(7, 1, "write", 0),
            e(254, 0, "discard", 99),
        ];
        s.blkio.io_serviced_recursive = vec![e(254, 0, "read", 1), e(254, 0, "write", 32)];
        let io = v2(&s, None).io;
        let got: Vec<_> = io
            .usage
            .iter()
            .map(|d| (d.major, d.minor, d.rbytes, d.wbytes, d.rios, d.wios))
            .collect();
        assert_eq!(
            got,
            vec![(7, 1, 512, 0, 0, 0), (254, 0, 4096, 1 << 22, 1, 32)]
        );
        assert!(v2(&sample(), None).io.usage.is_empty());
    }
}
