//! The private-containerd harness, proven with the stock runc: containerd's runc shim
//! (`io.containerd.runc.v2`) with `BinaryName` = `/usr/sbin/runc`, and once more through a
//! logging wrapper that records every runtime call the shim makes.
//!
//! Root required (skipped with a message otherwise). Run with
//! `cargo test -p paddock-tests --test containerd_runc -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use paddock_tests::containerd::{
    ensure_packages, exercise_runc_shim, exercise_runc_shim_extras, is_root, logging_wrapper,
    mounts_under, stock_runc, task_status, Containerd, ContainerdConfig,
};

fn runc() -> Option<PathBuf> {
    if !is_root() {
        eprintln!("skipped: containerd tests need root");
        return None;
    }
    ensure_packages(&["containerd", "runc"]).unwrap();
    Some(stock_runc().expect("runc installed but not found in /usr/sbin, /usr/bin"))
}

#[test]
fn runc_shim_with_stock_runc() {
    let Some(runc) = runc() else { return };
    let report = exercise_runc_shim(&runc).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("runc shim with {}: {report:#?}", runc.display());
}

#[test]
fn runc_shim_extras_with_stock_runc() {
    let Some(runc) = runc() else { return };
    exercise_runc_shim_extras(&runc).unwrap_or_else(|e| panic!("{e}"));
}

/// The same exercises with `BinaryName` pointing at a wrapper that logs argv and stdio, then
/// execs runc: shows exactly what the shim asks of a runc-compatible runtime.
#[test]
fn runc_shim_calls_recorded() {
    let Some(runc) = runc() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let (wrapper, log) = logging_wrapper(tmp.path(), &runc).unwrap();
    exercise_runc_shim(&wrapper).unwrap_or_else(|e| panic!("{e}"));
    exercise_runc_shim_extras(&wrapper).unwrap_or_else(|e| panic!("{e}"));
    let calls = fs::read_to_string(&log).unwrap();
    eprintln!("runtime calls made by containerd-shim-runc-v2:\n{calls}");
    for verb in [
        "[create]", "[start]", "[kill]", "[delete]", "[exec]", "[ps]", "[pause]", "[resume]",
    ] {
        assert!(calls.contains(verb), "no {verb} call recorded:\n{calls}");
    }
    for line in calls.lines() {
        assert!(
            line.contains("[--root]") && line.contains("[--log-format] [json]"),
            "call without --root/--log-format json: {line}"
        );
    }
}

/// The harness's own teardown when things went wrong: the shim of a running container is
/// SIGKILLed (containerd notices and cleans up after it).
#[test]
fn teardown_after_shim_crash() {
    crash_then_stop(false);
}

/// Worse: containerd is SIGKILLed, then the shim: nobody but the harness is left to kill the
/// container, unmount its rootfs, remove the shim socket in /run/containerd/s and the cgroups.
#[test]
fn teardown_after_containerd_and_shim_crash() {
    crash_then_stop(true);
}

fn crash_then_stop(kill_containerd: bool) {
    let Some(runc) = runc() else { return };
    let ctd = Containerd::start(ContainerdConfig {
        runc_binary: Some(runc),
        ..ContainerdConfig::default()
    })
    .unwrap();
    let image = ctd.import_busybox().unwrap();
    let out = ctd.ctr_run(&["-d", &image, "orphan", "sleep", "1000"]);
    assert!(out.status.success(), "{out:?}");
    let (pid, status) = task_status(&ctd, "orphan").unwrap();
    assert_eq!(status, "RUNNING");
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim expected: {shims:?}");
    let socket = ctd.shim_socket(ctd.namespace(), "orphan").unwrap();
    assert!(socket.exists(), "shim socket {} missing", socket.display());
    if kill_containerd {
        let ctd_pid = i32::try_from(ctd.pid().unwrap()).unwrap();
        kill(Pid::from_raw(ctd_pid), Signal::SIGKILL).unwrap();
    }
    kill(Pid::from_raw(shims[0]), Signal::SIGKILL).unwrap();
    if kill_containerd {
        // nobody cleaned up: the harness must do it all
        assert!(!mounts_under(ctd.dir()).is_empty(), "rootfs mount expected");
        assert!(nix::sys::signal::kill(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_ok());
    }
    let fp = ctd.stop();
    let leaks = fp.leaks();
    assert!(leaks.is_empty(), "leaks: {leaks:#?}");
    assert!(!socket.exists());
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "container process {pid} survived: {stat}"
    );
}
