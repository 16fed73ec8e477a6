//! The binary's command line, without containerd: bad input gets one clear line on stderr and
//! a non-zero exit. (Having an integration test also makes `cargo test` build the binary the
//! containerd tests put on containerd's PATH.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

fn shim(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_containerd-shim-paddock-v2"))
        .args(args)
        .current_dir(dir)
        .env_remove("TTRPC_ADDRESS")
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version() {
    let dir = tempfile::tempdir().unwrap();
    let o = shim(&["-v"], dir.path());
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Task API: v2"),
        "{o:?}"
    );
}

#[test]
fn bad_invocations_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&[], "-namespace is required"),
        (&["-namespace", "ns", "bogus"], "unknown action \"bogus\""),
        (&["-namespace", "ns", "-no-such-flag"], "no-such-flag"),
        // `start` reads the bundle's config.json (cwd) for the grouping annotations
        (&["-namespace", "ns", "-id", "c1", "start"], "config.json"),
        (&["-namespace", "ns", "-id", "c1"], "-socket is required"),
    ];
    for (args, want) in cases {
        let o = shim(args, dir.path());
        assert_eq!(o.status.code(), Some(1), "{args:?}: {o:?}");
        let err = stderr(&o);
        assert!(err.contains(want), "{args:?}: want {want:?} in {err:?}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line: {err:?}");
    }
    // nothing was left in the directory
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn start_needs_containerd_address() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"ociVersion":"1.0.2"}"#).unwrap();
    let o = shim(
        &[
            "-namespace",
            "ns",
            "-id",
            "c1",
            "-address",
            "/nonexistent/containerd.sock",
            "start",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(stderr(&o).contains("TTRPC_ADDRESS"), "{o:?}");
}
