//! Fuzzes what `paddock create` reads from an untrusted caller before anything touches the
//! kernel: the sandbox id, the OCI spec, the `io.paddock.*` annotations, the cgroupsPath and the
//! spec's seccomp profile. Any panic is a finding; so is an accepted plan whose cgroup path
//! could leave paddock's control (relative, empty component, `..`).
//!
//! Input: the first byte picks the mode.
//! - even: the rest is a whole `config.json`;
//! - odd: the rest is text; its first line is the sandbox id, a line `cgroupsPath=P` sets the
//!   spec's cgroupsPath, every other line `k=v` becomes the annotation `io.paddock.k` = `v`
//!   (or `k` itself when it already holds a dot), applied to a minimal valid spec.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;
use paddock_runtime::{id, policy, seccomp};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let systemd = mode & 2 != 0;
    if mode & 1 == 0 {
        if let Ok(spec) = serde_json::from_slice::<Spec>(rest) {
            check("fuzz", spec, systemd);
        }
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let mut lines = text.lines();
    let sandbox_id = lines.next().unwrap_or("fuzz").to_string();
    let mut spec = Spec::default();
    let mut annotations = HashMap::new();
    let mut linux = spec.linux().clone().unwrap_or_default();
    for line in lines {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        if k == "cgroupsPath" {
            linux.set_cgroups_path(Some(v.into()));
        } else if k.contains('.') {
            annotations.insert(k.to_string(), v.to_string());
        } else {
            annotations.insert(format!("io.paddock.{k}"), v.to_string());
        }
    }
    spec.set_linux(Some(linux));
    spec.set_annotations(Some(annotations));
    check(&sandbox_id, spec, systemd);
});

/// Runs the create-time checks in create's order and asserts what an accepted plan promises.
fn check(sandbox_id: &str, spec: Spec, systemd: bool) {
    if id::validate(sandbox_id).is_err() {
        return;
    }
    let Ok(plan) = policy::plan(spec, sandbox_id, systemd) else {
        return;
    };
    let path = &plan.cgroups_path;
    assert!(path.starts_with('/'), "relative cgroup path {path:?}");
    assert!(
        path.split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != ".."),
        "cgroup path {path:?} has an empty, '.' or '..' component"
    );
    if let Some(profile) = plan.spec.linux().as_ref().and_then(|l| l.seccomp().clone()) {
        if let Ok(arch) = seccomp::native_arch() {
            let _ = seccomp::compile(&profile, arch);
        }
    }
}
