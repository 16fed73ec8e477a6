//! The stock containerd runc shim (`io.containerd.runc.v2`) driving paddock through its
//! `BinaryName` option: a private containerd started by the test, a busybox image built
//! locally, `ctr run` with output and exit codes, `ctr task kill`/`delete`, exec, pause,
//! metrics — and nothing left behind (the harness's teardown checks mounts, processes,
//! sockets and cgroups).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use paddock_tests::containerd::{
    containerd_ready, exercise_runc_shim, exercise_runc_shim_extras, logging_wrapper,
};
use paddock_tests::paddock_bin;

fn ready() -> bool {
    containerd_ready().unwrap()
}

#[test]
fn runc_shim_drives_paddock() {
    if !ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // The wrapper logs each call and execs paddock, proving the shim ran paddock, not runc.
    let (wrapper, log) = logging_wrapper(tmp.path(), &paddock_bin()).unwrap();
    let report = exercise_runc_shim(&wrapper).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("runc shim with paddock: {report:#?}");
    let calls = fs::read_to_string(&log).unwrap();
    for verb in ["[create]", "[start]", "[kill]", "[delete]"] {
        assert!(
            calls.contains(verb),
            "no {verb} call reached paddock:\n{calls}"
        );
    }
}

#[test]
fn runc_shim_exec_pause_metrics_with_paddock() {
    if !ready() {
        return;
    }
    exercise_runc_shim_extras(&paddock_bin()).unwrap_or_else(|e| panic!("{e}"));
}
