//! The escape suite: attacks run from inside a sandbox as its pool identity, each one test,
//! each asserting the attack fails and how. The sandbox is paddock's defaults plus what a PaaS
//! instance gets: a memory limit, a pids limit and a disk quota.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use paddock_tests::*;

const APP: &str = "t-escape";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `script` in a fresh sandbox (pool identity, 64 MiB, 64 pids, 8 MiB disk) and returns
/// its combined output.
fn attack(
    w: &World,
    name: &str,
    script: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let b = w.bundle(
        name,
        &[
            "--memory",
            "67108864",
            "--pids",
            "64",
            "--",
            "sh",
            "-c",
            &format!("{script} 2>&1"),
        ],
    );
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP, "io.paddock.disk": "8M"});
        edit(v);
    });
    let r = w.paddock(&["run", "--bundle", s(&b), name]);
    format!("{}{}", r.stdout, r.stderr)
}

fn no_edit(_: &mut serde_json::Value) {}

#[test]
fn runs_as_an_unprivileged_pool_identity() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "whoami",
        "id -u; grep -E '^(Cap|NoNewPrivs)' /proc/self/status",
        no_edit,
    );
    let uid: u64 = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(uid >= 2_000_000_000, "{out}");
    // The spec asked for CAP_KILL, CAP_NET_BIND_SERVICE and CAP_AUDIT_WRITE; a pool identity
    // gets none, in any set, and no_new_privs.
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "{set}: {out}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
}

#[test]
fn mounting_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "mount",
        "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m; echo rc=$?",
        no_edit,
    );
    // busybox words EPERM from mount(2) as "permission denied (are you root?)".
    assert!(
        out.contains("permission denied") && out.contains("rc=1"),
        "{out}"
    );
}

#[test]
fn loading_a_module_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "insmod",
        "echo x > /tmp/evil.ko; insmod /tmp/evil.ko; echo rc=$?",
        no_edit,
    );
    assert!(
        out.contains("Operation not permitted") && !out.contains("rc=0"),
        "{out}"
    );
}

#[test]
fn writing_proc_sys_and_sys_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "procsys",
        "echo 1 > /proc/sys/vm/drop_caches; echo a=$?; echo 1 > /sys/kernel/profiling; echo b=$?",
        no_edit,
    );
    assert!(out.contains("a=1") && out.contains("b=1"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
}

#[test]
fn creating_device_nodes_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(&w, "mknod", "mknod /tmp/sda b 8 0; echo rc=$?", no_edit);
    assert!(
        out.contains("Operation not permitted") && out.contains("rc=1"),
        "{out}"
    );
}

#[test]
fn a_new_user_namespace_gives_no_capabilities_back() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(&w, "userns", "unshare -U -r id -u; echo rc=$?", no_edit);
    assert!(
        out.contains("Operation not permitted") && out.contains("rc=1"),
        "{out}"
    );
}

#[test]
fn a_setuid_binary_raises_nothing() {
    if !require_root() {
        return;
    }
    let w = World::new();
    // A setuid-root copy of busybox (named busybox, so it takes the applet from argv[1]).
    let b = w.bundle(
        "suid",
        &[
            "--",
            "sh",
            "-c",
            "/opt/busybox id -u; /opt/busybox grep CapEff /proc/self/status",
        ],
    );
    std::fs::create_dir_all(b.join("rootfs/opt")).unwrap();
    let suid = b.join("rootfs/opt/busybox");
    std::fs::copy(b.join("rootfs/bin/busybox"), &suid).unwrap();
    std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    let r = w.paddock(&["run", "--bundle", s(&b), "suid"]);
    let uid: u64 = r
        .stdout
        .lines()
        .next()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        uid >= 2_000_000_000,
        "setuid root took effect: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("CapEff:\t0000000000000000"),
        "{}",
        r.stdout
    );
}

#[test]
fn host_processes_are_invisible_and_unreachable() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let me = std::process::id();
    let out = attack(
        &w,
        "pids",
        &format!("ls -d /proc/[0-9]* | wc -l; kill -9 {me}; echo rc=$?; ls /proc/{me} >/dev/null; echo seen=$?"),
        no_edit,
    );
    let count: u64 = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(count < 10, "sees {count} processes: {out}");
    assert!(out.contains("rc=1") && out.contains("seen=1"), "{out}");
    assert!(alive(me as i32));
}

#[test]
fn raw_sockets_are_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "raw",
        "arping -c 1 -I lo 127.0.0.1; echo rc=$?",
        no_edit,
    );
    assert!(
        out.contains("Operation not permitted") && !out.contains("rc=0"),
        "{out}"
    );
}

#[test]
fn the_hosts_hostname_cannot_change() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = attack(&w, "uts", "hostname evil; echo rc=$?", no_edit);
    assert!(out.contains("rc=1"), "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        before
    );
}

#[test]
fn escaping_the_cgroup_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "cgroup",
        "echo $$ > /sys/fs/cgroup/memory/cgroup.procs; echo a=$?; echo $$ > /sys/fs/cgroup/cgroup.procs; echo b=$?",
        |v| {
            v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "ro"]}
            ));
        },
    );
    assert!(out.contains("a=1") && out.contains("b=1"), "{out}");
}

#[test]
fn filling_the_disk_stops_at_the_quota() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "disk",
        "dd if=/dev/zero of=/home/vcap/f bs=1M count=64; echo rc=$?",
        no_edit,
    );
    assert!(
        out.contains("No space left on device") && out.contains("rc=1"),
        "{out}"
    );
}

#[test]
fn a_fork_bomb_stays_inside() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(
        &w,
        "bomb",
        "i=0; while [ $i -lt 200 ]; do sleep 5 & i=$((i+1)); done; echo started",
        no_edit,
    );
    assert!(out.contains("can't fork"), "{out}");
    let host_can_fork = std::process::Command::new("true")
        .status()
        .unwrap()
        .success();
    assert!(host_can_fork);
}

#[test]
fn exhausting_memory_kills_only_the_sandbox() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let b: PathBuf = w.bundle(
        "mem",
        &[
            "--memory",
            "33554432",
            "--",
            "sh",
            "-c",
            "x=a; while :; do x=\"$x$x\"; done",
        ],
    );
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    w.paddock(&["run", "-d", "--bundle", s(&b), "mem"]).ok();
    w.wait_status("mem", "stopped");
    assert_eq!(w.state("mem")["ended"]["reason"], "oom");
    w.paddock(&["delete", "mem"]).ok();
}

#[test]
fn another_sandboxs_files_are_out_of_reach() {
    if !require_root() {
        return;
    }
    let w = World::new();
    // B keeps a secret in its volume; A sees the host directory holding every volume.
    let b = w.bundle(
        "victim",
        &[
            "--",
            "sh",
            "-c",
            "echo secret > /home/vcap/secret; sleep 1000",
        ],
    );
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP, "io.paddock.disk": "4M"})
    });
    w.paddock(&["run", "-d", "--bundle", s(&b), "victim"]).ok();
    let volumes = w.path().join("quota/volumes");
    assert!(eventually(std::time::Duration::from_secs(5), || {
        std::fs::read_dir(&volumes)
            .map(|d| d.flatten().any(|e| e.path().join("secret").exists()))
            .unwrap_or(false)
    }));
    let vol = std::fs::read_dir(&volumes)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .file_name();
    let vol = vol.to_string_lossy().into_owned();
    let out = attack(
        &w,
        "thief",
        &format!("cat /shared/{vol}/secret; echo r=$?; ls /shared/{vol}; echo l=$?; touch /shared/{vol}/x; echo w=$?"),
        |v| {
            v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                {"destination": "/shared", "type": "bind", "source": volumes, "options": ["rbind", "rw"]}
            ));
        },
    );
    assert!(out.contains("Permission denied"), "{out}");
    assert!(
        out.contains("r=1") && out.contains("l=1") && out.contains("w=1"),
        "{out}"
    );
    w.paddock(&["delete", "--force", "victim"]).ok();
}

/// Builds `tests/fixtures/attack.c` static into a bundle's rootfs as `/bin/attack`: busybox has
/// no way to call ptrace or process_vm_readv.
fn install_attack(bundle: &Path) {
    gcc_fixture("attack", &["-static"], &bundle.join("rootfs/bin/attack"));
}

#[test]
fn ptracing_or_signalling_host_and_neighbour_processes_is_refused() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let v = w.bundle("neighbour", &["--", "sleep", "1000"]);
    w.edit_spec(&v, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    w.paddock(&["run", "-d", "--bundle", s(&v), "neighbour"])
        .ok();
    let neighbour = w.state("neighbour")["pid"].as_i64().unwrap();
    let host = std::process::id();
    // The attacker shares the host's pid namespace, so it can name both targets: only its
    // identity stands in the way. Attaching to its own child is the control that must work.
    let script = format!(
        "for t in {host} {neighbour}; do for a in ptrace vmread signal; do attack $a $t; done; done; attack ptrace-child"
    );
    let b = w.bundle("tracer", &["--", "sh", "-c", &format!("{script} 2>&1")]);
    install_attack(&b);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP});
        let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    let r = w.paddock(&["run", "--bundle", s(&b), "tracer"]);
    let out = format!("{}{}", r.stdout, r.stderr);
    for t in [host as i64, neighbour] {
        for a in ["ptrace", "vmread", "signal"] {
            assert!(out.contains(&format!("{a} {t}: EPERM")), "{a} {t}: {out}");
        }
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("ptrace-child ") && l.ends_with(": ok")),
        "{out}"
    );
    assert!(alive(neighbour as i32), "the neighbour was killed: {out}");
    w.paddock(&["delete", "--force", "neighbour"]).ok();
}

#[test]
fn dev_holds_only_the_default_devices() {
    if !require_root() {
        return;
    }
    let w = World::new();
    let out = attack(&w, "devs", "ls /dev", no_edit);
    let mut names: Vec<&str> = out.split_whitespace().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
            "stdout", "tty", "urandom", "zero"
        ],
        "{out}"
    );
}

#[test]
fn a_device_outside_the_default_set_cannot_be_opened() {
    if !require_root() {
        return;
    }
    let w = World::new();
    // Root inside (io.paddock.user=spec), so file modes allow the open and only the device
    // cgroup can refuse it; a second sandbox whose spec allows the device is the control.
    let run = |name: &str, allow: bool| {
        let b = w.bundle(
            name,
            &["--", "sh", "-c", "cat /dev/loop-control 2>&1; echo rc=$?"],
        );
        w.edit_spec(&b, |v| {
            v["annotations"] = serde_json::json!({"io.paddock.app": APP, "io.paddock.user": "spec"});
            v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                {"destination": "/dev/loop-control", "type": "bind", "source": "/dev/loop-control", "options": ["bind"]}
            ));
            if allow {
                v["linux"]["resources"]["devices"] = serde_json::json!(
                    [{"allow": true, "type": "c", "major": 10, "minor": 237, "access": "rw"}]
                );
            }
        });
        let r = w.paddock(&["run", "--bundle", s(&b), name]);
        format!("{}{}", r.stdout, r.stderr)
    };
    let denied = run("nodev", false);
    assert!(
        denied.contains("can't open '/dev/loop-control': Operation not permitted"),
        "{denied}"
    );
    let allowed = run("withdev", true);
    assert!(
        !allowed.contains("can't open") && allowed.contains("rc="),
        "{allowed}"
    );
}
