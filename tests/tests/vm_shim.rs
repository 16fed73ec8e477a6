//! paddock's containerd shim (`io.containerd.paddock.v2`) on cgroup v2, for real: the VM group
//! (cargo feature `vm`; `scripts/vm-test.sh` runs it in a Debian 12 guest, since this machine
//! kind is cgroup v1 hybrid). A private containerd drives the shim; what containerd gets back
//! is checked against the sandbox's files in the one v2 tree: `Stats` as containerd's
//! `io.containerd.cgroups.v2.Metrics` (ctr prints that type's own rows; pids, cpu, memory,
//! io and `memory.events` against the cgroup's files), `Pids` against
//! `cgroup.procs`, `Pause`/`Resume` through `cgroup.freeze`, `Update` in `memory.max`,
//! `pids.max` and `memory.swap.max`, and OOM kills read from `memory.events` published once
//! as `TaskOOM`, before the `TaskExit` of the killed process, with both OOM policies.
//! Without the feature these tests are ignored and say why; with it, a host that is not
//! cgroup v2 fails them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use paddock_tests::containerd::{
    containerd_ready, paddock_shim_dir, task_status, wait_task_stopped, Containerd,
    ContainerdConfig, Events,
};
use paddock_tests::{cgroup_v2, flat_counter, read_trimmed};

const MIB: u64 = 1 << 20;
/// Grows a shell string until the kernel kills it.
const HOG: &str = "x=a; while :; do x=\"$x$x\"; done";

/// A private containerd with paddock's shim and the busybox image, on a cgroup v2 host.
fn start() -> (Containerd, String) {
    assert!(
        cgroup_v2(),
        "/sys/fs/cgroup is not cgroup v2: run the VM group in the guest (scripts/vm-test.sh)"
    );
    assert!(containerd_ready().unwrap(), "the VM group runs as root");
    let ctd = Containerd::start(ContainerdConfig::paddock_shim(&paddock_shim_dir())).unwrap();
    let image = ctd.import_busybox().unwrap();
    (ctd, image)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The sandbox's directory in the v2 tree (containerd asks for `/<namespace>/<id>`).
fn cgroup(ctd: &Containerd, id: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(ctd.namespace()).join(id)
}

/// The pids in `cgroup.procs` of `dir` and below, sorted.
fn procs(dir: &Path) -> Vec<u32> {
    let mut out: Vec<u32> = read_trimmed(&dir.join("cgroup.procs"))
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            out.extend(procs(&e.path()));
        }
    }
    out.sort_unstable();
    out
}

/// `ctr task metrics --format json`: the decoded Metrics.
fn metrics(ctd: &Containerd, id: &str) -> serde_json::Value {
    let json = ctd.ctr_ok(&["tasks", "metrics", "--format", "json", id]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("metrics of {id}: {e}: {json}"))
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// containerd's `Tasks.Update` over its socket (tests/src/bin/task-update.rs).
fn task_update(ctd: &Containerd, id: &str, resources: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_task-update"))
        .arg(ctd.address())
        .arg(ctd.namespace())
        .arg(id)
        .arg(resources)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "update {id} {resources}: {}\n{}",
        text(&out.stderr),
        ctd.log_tail(30)
    );
}

/// SIGKILL to every process, then task delete and container rm.
fn remove(ctd: &Containerd, id: &str) {
    ctd.ctr_ok(&["tasks", "kill", "--all", "-s", "SIGKILL", id]);
    wait_task_stopped(ctd, id, Duration::from_secs(10)).unwrap();
    ctd.ctr_ok(&["tasks", "delete", id]);
    ctd.ctr_ok(&["containers", "rm", id]);
}

/// Exactly one `/tasks/oom` among `topics`, and before the `/tasks/exit`.
#[track_caller]
fn assert_one_oom_before_exit(topics: &[String], whose: &str) {
    let oom: Vec<usize> = topics
        .iter()
        .enumerate()
        .filter(|(_, t)| *t == "/tasks/oom")
        .map(|(i, _)| i)
        .collect();
    let exit = topics.iter().position(|t| t == "/tasks/exit");
    assert!(
        oom.len() == 1 && exit.is_some_and(|e| oom[0] < e),
        "want one /tasks/oom before {whose} /tasks/exit: {topics:?}"
    );
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    assert!(
        paddock_tests::eventually(Duration::from_secs(10), &mut f),
        "{what}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn shim_stats_pids_pause_and_update_on_the_v2_tree() {
    let (ctd, image) = start();
    let id = "v2task";
    // a directory on the guest's disk (the rootfs is on /run, a tmpfs): 4 MiB written there
    // with fsync are block I/O of the sandbox's cgroup
    let data = tempfile::tempdir_in("/var/tmp").unwrap();
    fs::set_permissions(data.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        data.path().display()
    );
    ctd.ctr_run_ok(&[
        "-d",
        "--memory-limit",
        &(64 * MIB).to_string(),
        "--annotation",
        "io.paddock.pids=40",
        "--mount",
        &mount,
        &image,
        id,
        "sh",
        "-c",
        "dd if=/dev/zero of=/data/io bs=1048576 count=4 conv=fsync 2>/dev/null && \
             touch /data/written; sleep 100000 & exec sleep 100001",
    ]);
    wait_until("the sandbox wrote /data/io", || {
        data.path().join("written").exists()
    });
    let dir = cgroup(&ctd, id);
    assert_eq!(
        read_trimmed(&dir.join("memory.max")),
        (64 * MIB).to_string()
    );
    assert_eq!(read_trimmed(&dir.join("memory.swap.max")), "0", "no swap");
    assert_eq!(read_trimmed(&dir.join("pids.max")), "40");

    // Pids: what containerd lists is what the v2 tree holds
    wait_until("two processes in the sandbox", || procs(&dir).len() == 2);
    let (init, _) = task_status(&ctd, id).unwrap();
    let mut pids = ctd.task_pids(id);
    pids.sort_unstable();
    assert_eq!(
        pids,
        procs(&dir),
        "ctr task ps vs cgroup.procs of {}",
        dir.display()
    );
    assert!(pids.contains(&init), "{pids:?} lacks the init {init}");

    // Stats: containerd decodes the v2 type; ctr prints its own rows for each type
    let table = ctd.ctr_ok(&["tasks", "metrics", id]);
    for row in [
        "pids.current",
        "cpu.usage_usec",
        "memory.usage",
        "memory.usage_limit",
    ] {
        assert!(table.contains(row), "no {row} row (v2 Metrics): {table}");
    }
    assert!(
        !table.contains("memory.usage_in_bytes"),
        "v1 rows in the metrics of a v2 sandbox: {table}"
    );
    let m = metrics(&ctd, id);
    eprintln!("ctr task metrics (v2): {m}");
    assert_eq!(u(&m["pids"]["current"]), 2, "{m}");
    assert_eq!(
        u(&m["pids"]["current"]),
        read_trimmed(&dir.join("pids.current"))
            .parse::<u64>()
            .unwrap()
    );
    assert_eq!(u(&m["pids"]["limit"]), 40, "{m}");
    assert_eq!(u(&m["memory"]["usage_limit"]), 64 * MIB, "{m}");
    let usage = u(&m["memory"]["usage"]);
    assert!(usage > 0 && usage < 64 * MIB, "memory.usage {usage}: {m}");
    assert!(u(&m["cpu"]["usage_usec"]) > 0, "cpu.usage_usec: {m}");
    assert!(
        u(&m["cpu"]["usage_usec"]) >= u(&m["cpu"]["user_usec"]),
        "usage < user: {m}"
    );
    assert!(
        u(&m["memory"]["anon"]) + u(&m["memory"]["file"]) > 0,
        "memory.stat: {m}"
    );
    assert_eq!(u(&m["memory_events"]["oom_kill"]), 0, "{m}");
    // io: the device the 4 MiB went to, as io.stat has it
    let io_stat = read_trimmed(&dir.join("io.stat"));
    let written = m["io"]["usage"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| u(&d["wbytes"]) >= 4 * MIB)
        .unwrap_or_else(|| {
            panic!("no device with 4 MiB written in the metrics: {m}\nio.stat: {io_stat}")
        });
    let device = format!("{}:{} ", u(&written["major"]), u(&written["minor"]));
    let line = io_stat
        .lines()
        .find(|l| l.starts_with(&device))
        .unwrap_or_else(|| panic!("{device} not in io.stat: {io_stat}"));
    let wbytes: u64 = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("wbytes=")?.parse().ok())
        .unwrap();
    assert!(
        u(&written["wbytes"]) <= wbytes,
        "metrics {written} vs io.stat {line}"
    );

    // Pause / Resume: cgroup.freeze, and the kernel says the tree is frozen
    ctd.ctr_ok(&["tasks", "pause", id]);
    assert_eq!(task_status(&ctd, id).unwrap().1, "PAUSED");
    assert_eq!(read_trimmed(&dir.join("cgroup.freeze")), "1");
    wait_until("cgroup.events says frozen 1", || {
        flat_counter(&dir.join("cgroup.events"), "frozen") == 1
    });
    ctd.ctr_ok(&["tasks", "resume", id]);
    assert_eq!(task_status(&ctd, id).unwrap().1, "RUNNING");
    assert_eq!(read_trimmed(&dir.join("cgroup.freeze")), "0");
    wait_until("cgroup.events says frozen 0", || {
        flat_counter(&dir.join("cgroup.events"), "frozen") == 0
    });

    // Update: the v2 files change, swap stays off
    task_update(
        &ctd,
        id,
        &format!(
            r#"{{"memory":{{"limit":{}}},"pids":{{"limit":33}}}}"#,
            48 * MIB
        ),
    );
    assert_eq!(
        read_trimmed(&dir.join("memory.max")),
        (48 * MIB).to_string()
    );
    assert_eq!(
        read_trimmed(&dir.join("memory.swap.max")),
        "0",
        "no swap after update"
    );
    assert_eq!(read_trimmed(&dir.join("pids.max")), "33");
    let m = metrics(&ctd, id);
    assert_eq!(u(&m["memory"]["usage_limit"]), 48 * MIB, "{m}");
    assert_eq!(u(&m["pids"]["limit"]), 33, "{m}");

    remove(&ctd, id);
    let left = ctd.wait_containers_gone(&[id], Duration::from_secs(10));
    assert!(left.is_empty(), "leftovers: {left:#?}");
    assert!(!dir.exists(), "{} survived the delete", dir.display());
    ctd.stop_and_assert_clean();
}

#[test]
#[cfg_attr(
    not(feature = "vm"),
    ignore = "needs cgroup v2: the VM group (scripts/vm-test.sh)"
)]
fn shim_reports_v2_oom_kills_once_before_the_exit() {
    let (ctd, image) = start();
    let events = Events::watch(&ctd).unwrap();
    let limit = (32 * MIB).to_string();

    // io.paddock.oom=kernel: an exec'd hog is the victim, the init lives on
    let id = "survivor";
    ctd.ctr_run_ok(&[
        "-d",
        "--memory-limit",
        &limit,
        "--annotation",
        "io.paddock.oom=kernel",
        &image,
        id,
        "sleep",
        "100000",
    ]);
    let dir = cgroup(&ctd, id);
    assert_eq!(read_trimmed(&dir.join("memory.oom.group")), "0");
    let out = ctd.ctr_exec(&[], id, "hog", &["sh", "-c", HOG]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "the hog: {out:?}\n{}",
        ctd.log_tail(30)
    );
    assert_eq!(flat_counter(&dir.join("memory.events"), "oom_kill"), 1);
    assert_eq!(
        task_status(&ctd, id).unwrap().1,
        "RUNNING",
        "the init survives"
    );
    let m = metrics(&ctd, id);
    let counted = &m["memory_events"];
    assert_eq!(u(&counted["oom_kill"]), 1, "{m}");
    assert!(u(&counted["oom"]) >= 1 && u(&counted["max"]) >= 1, "{m}");
    assert_eq!(u(&counted["oom_group_kill"]), 0, "{m}");
    // one OOM published for one kill, before the exec's exit
    let got = events.wait_for(id, "/tasks/exit", Duration::from_secs(10));
    assert_one_oom_before_exit(&got, "the exec's");
    remove(&ctd, id);

    // the default policy (kill, memory.oom.group): the kernel counts the one victim twice in
    // oom_kill; containerd still hears of one OOM, before the init's exit
    let id = "grouped";
    let out = ctd.ctr_run(&[
        "--rm",
        "--memory-limit",
        &limit,
        &image,
        id,
        "sh",
        "-c",
        HOG,
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "OOM-killed init: {out:?}\n{}",
        ctd.log_tail(30)
    );
    let got = events.wait_for(id, "/tasks/delete", Duration::from_secs(10));
    assert_one_oom_before_exit(&got, "the init's");
    drop(events);
    let left = ctd.wait_containers_gone(&["survivor", id], Duration::from_secs(10));
    assert!(left.is_empty(), "leftovers: {left:#?}");
    ctd.stop_and_assert_clean();
}
