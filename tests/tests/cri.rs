//! Kubernetes pod annotations reach paddock's sandbox through containerd's CRI plugin: a
//! private containerd (Debian's package) with the CRI plugin on, configured with the README's
//! runtime table (`runtime_type = "io.containerd.paddock.v2"`, `pod_annotations =
//! ["io.paddock.*"]`), driven over `runtime.v1` gRPC the way the kubelet drives it:
//! RunPodSandbox (handler `paddock`, host network), CreateContainer, StartContainer, then the
//! stop/remove calls — and nothing left behind. A bad `io.paddock.*` pod annotation fails
//! RunPodSandbox with paddock's error and leaves nothing either.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_cri::v1 as cri;
use paddock_tests::containerd::{
    cgroup_mounts, containerd_ready, mounts_under, paddock_shim_dir, Containerd, ContainerdConfig,
};
use paddock_tests::cri::{
    import_images, info_pid, paddock_state, status_line, Cri, CriSetup, CRI_NAMESPACE, HANDLER,
    PAUSE_REF,
};
use paddock_tests::{cgroup_dirs_of, eventually};

/// The annotation whose effect the tests look for, and its value.
const PIDS: &str = "io.paddock.pids";
const PIDS_LIMIT: &str = "42";
/// A pod annotation outside `io.paddock.*`: containerd must not pass it to the runtime.
const FOREIGN: &str = "example.com/not-for-paddock";

fn ready() -> bool {
    containerd_ready().unwrap()
}

/// A private containerd with the CRI plugin, both images imported into `k8s.io`, and a
/// client that has seen the plugin answer and know both images.
fn start() -> (Containerd, Cri, String) {
    assert!(
        names_in(&paddock_state().join(".paddock")).is_empty(),
        "paddock sandboxes of another CRI containerd in {}: cannot tell ours apart",
        paddock_state().display()
    );
    let setup = CriSetup::from_readme().unwrap();
    let ctd = Containerd::start(ContainerdConfig {
        cri: Some(setup),
        ..ContainerdConfig::paddock_shim(&paddock_shim_dir())
    })
    .unwrap();
    let image = import_images(&ctd).unwrap();
    let client = Cri::connect(ctd.address()).unwrap();
    let version = client
        .wait_ready(&[PAUSE_REF, &image], Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}\ncontainerd log tail:\n{}", ctd.log_tail(30)));
    assert_eq!(version.runtime_name, "containerd", "{version:?}");
    assert_eq!(version.runtime_api_version, "v1", "{version:?}");
    (ctd, client, image)
}

/// The host's network, a pid namespace per container, the pod's IPC namespace: what the
/// kubelet sends, for the pod and each container, for a host-network pod.
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A host-network pod (no CNI needed) whose cgroups go under `/<harness namespace>`, which the
/// harness removes and checks at teardown.
fn pod_config(ctd: &Containerd, name: &str, annotations: &[(&str, &str)]) -> cri::PodSandboxConfig {
    let logs = ctd.dir().join("pod-logs").join(name);
    fs::create_dir_all(&logs).unwrap();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "default".to_string(),
            attempt: 0,
        }),
        // empty, as the kubelet sends it for a host-network pod: the pod keeps the host's UTS
        // namespace, where no runtime may set a hostname
        hostname: String::new(),
        log_directory: logs.to_string_lossy().into_owned(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}", ctd.namespace()),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The OCI spec containerd wrote into the shim's bundle for task `id` of the CRI namespace.
fn bundle_spec(ctd: &Containerd, id: &str) -> serde_json::Value {
    let path = ctd.bundle(CRI_NAMESPACE, id).join("config.json");
    serde_json::from_str(
        &fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn annotations_of(spec: &serde_json::Value) -> HashMap<String, String> {
    spec["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The cgroup path of `pid` in the hierarchy holding the pids controller (v1 `N:pids:/path`,
/// or v2's `0::/path`), from the host's view.
fn pids_cgroup_of(pid: i32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v1 = text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        ctrl.split(',')
            .any(|c| c == "pids")
            .then(|| path.to_string())
    });
    v1.or_else(|| {
        text.lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
    })
    .unwrap_or_else(|| panic!("no pids cgroup for {pid}: {text}"))
}

/// The one `name` file (e.g. `pids.max`) of cgroup `rel`, wherever the pids controller is.
fn pids_file(rel: &str, name: &str) -> String {
    let files: Vec<PathBuf> = cgroup_dirs_of(rel)
        .into_iter()
        .map(|d| d.join(name))
        .filter(|f| f.exists())
        .collect();
    assert_eq!(files.len(), 1, "one {name} for {rel}: {files:?}");
    fs::read_to_string(&files[0]).unwrap()
}

/// The `max` counter of cgroup `rel`'s `pids.events`: forks refused at `pids.max`.
fn pids_events_max(rel: &str) -> u64 {
    let text = pids_file(rel, "pids.events");
    text.lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{rel}: pids.events {text:?}"))
}

fn uid_of(pid: i32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Uid in /proc/{pid}/status"))
}

fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|c| *c == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn ctr_lines(ctd: &Containerd, args: &[&str]) -> Vec<String> {
    let out = ctd.ctr_ns(CRI_NAMESPACE, args);
    assert!(out.status.success(), "ctr {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What the CRI objects of this containerd left: CRI sandboxes/containers, containerd
/// containers/tasks in `k8s.io`, shims, bundles, paddock records, cgroups under
/// `/<namespace>`, mounts. Empty = clean (containerd still running).
fn cri_leftovers(ctd: &Containerd, client: &Cri) -> Vec<String> {
    let mut found = Vec::new();
    for p in client.list_pod_sandboxes().unwrap() {
        found.push(format!("CRI pod sandbox {} ({:?})", p.id, p.metadata));
    }
    for c in client.list_containers().unwrap() {
        found.push(format!("CRI container {} ({:?})", c.id, c.metadata));
    }
    for id in ctr_lines(ctd, &["containers", "ls", "-q"]) {
        found.push(format!("containerd container {id}"));
    }
    for id in ctr_lines(ctd, &["tasks", "ls", "-q"]) {
        found.push(format!("containerd task {id}"));
    }
    for pid in ctd.shim_pids() {
        found.push(format!("shim {pid}: {:?}", cmdline(pid)));
    }
    let bundles = ctd
        .state()
        .join("io.containerd.runtime.v2.task")
        .join(CRI_NAMESPACE);
    for b in names_in(&bundles) {
        found.push(format!("bundle {}", bundles.join(b).display()));
    }
    let state = paddock_state();
    for r in names_in(&state.join(".paddock")) {
        found.push(format!(
            "paddock record {}",
            state.join(".paddock").join(r).display()
        ));
    }
    for mnt in cgroup_mounts() {
        let parent = mnt.join(ctd.namespace());
        for e in fs::read_dir(&parent).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                found.push(format!("cgroup {}", e.path().display()));
            }
        }
    }
    for m in mounts_under(ctd.dir()) {
        found.push(format!("mount {m}"));
    }
    found
}

fn assert_clean(ctd: Containerd, client: Cri) {
    let mut left = Vec::new();
    let gone = eventually(Duration::from_secs(10), || {
        left = cri_leftovers(&ctd, &client);
        left.is_empty()
    });
    assert!(gone, "left behind while containerd runs: {left:#?}");
    drop(client);
    assert_stops_clean(ctd);
}

/// Stops containerd (the harness removes whatever is left, by pid and path) and checks that
/// nothing remains: processes, shims, cgroups, mounts, sockets, its directory, paddock state.
fn assert_stops_clean(ctd: Containerd) {
    let dir = ctd.dir().to_path_buf();
    ctd.stop_and_assert_clean();
    assert!(!dir.exists(), "{} remains", dir.display());
    // the shim removes its namespace's state directory with the last sandbox
    let state = paddock_state();
    assert!(
        !state.exists(),
        "{} remains: {:?}",
        state.display(),
        names_in(&state.join(".paddock"))
    );
}

/// The pod's one container: says it started, exits 0 on SIGTERM.
fn app_config(image: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: "app".to_string(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.to_string(),
            ..Default::default()
        }),
        command: vec![
            "sh".to_string(),
            "-c".to_string(),
            "trap 'echo stopping; exit 0' TERM; echo started; sleep 1000 & wait".to_string(),
        ],
        log_path: "app.log".to_string(),
        linux: Some(cri::LinuxContainerConfig {
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn cri_pod_annotations_reach_the_paddock_sandbox() {
    if !ready() {
        return;
    }
    let (ctd, client, image) = start();
    let ns = ctd.namespace().to_string();
    let pod = pod_config(&ctd, "annotated", &[(PIDS, PIDS_LIMIT), (FOREIGN, "lots")]);
    let pod_id = client
        .run_pod_sandbox(&pod, HANDLER)
        .unwrap_or_else(|s| panic!("RunPodSandbox: {}\n{}", status_line(&s), ctd.log_tail(30)));
    let container = app_config(&image);
    let app_id = client
        .create_container(&pod_id, &container, &pod)
        .unwrap_or_else(|s| panic!("CreateContainer: {}\n{}", status_line(&s), ctd.log_tail(30)));
    client
        .start_container(&app_id)
        .unwrap_or_else(|s| panic!("StartContainer: {}\n{}", status_line(&s), ctd.log_tail(30)));

    let pod_status = client.pod_sandbox_status(&pod_id).unwrap();
    assert_eq!(
        pod_status.status.as_ref().map(|s| s.state),
        Some(cri::PodSandboxState::SandboxReady as i32),
        "{pod_status:?}"
    );
    let app_status = client.container_status(&app_id).unwrap();
    assert_eq!(
        app_status.status.as_ref().map(|s| s.state),
        Some(cri::ContainerState::ContainerRunning as i32),
        "{app_status:?}"
    );
    let pause_pid = info_pid(&pod_status.info).expect("pause pid in PodSandboxStatus info");
    let app_pid = info_pid(&app_status.info).expect("container pid in ContainerStatus info");

    // 1. through io.containerd.paddock.v2: one paddock shim for the pod, no other shim
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    let shim_args = cmdline(shims[0]);
    assert!(
        shim_args[0].ends_with("containerd-shim-paddock-v2"),
        "the pod's shim is paddock's: {shim_args:?}"
    );
    for (flag, value) in [("-namespace", CRI_NAMESPACE), ("-id", pod_id.as_str())] {
        assert!(
            shim_args.windows(2).any(|w| w[0] == flag && w[1] == value),
            "shim {flag} {value}: {shim_args:?}"
        );
    }

    for (id, pid, kind) in [
        (&pod_id, pause_pid, "sandbox"),
        (&app_id, app_pid, "container"),
    ] {
        // 2. the spec containerd wrote: the io.paddock.* pod annotation, not the other one
        let ann = annotations_of(&bundle_spec(&ctd, id));
        assert_eq!(
            ann.get("io.kubernetes.cri.container-type")
                .map(String::as_str),
            Some(kind)
        );
        assert_eq!(
            ann.get("io.kubernetes.cri.sandbox-id").map(String::as_str),
            Some(pod_id.as_str())
        );
        assert_eq!(
            ann.get(PIDS).map(String::as_str),
            Some(PIDS_LIMIT),
            "{kind} {id}: {PIDS} in its spec: {ann:#?}"
        );
        assert!(
            !ann.contains_key(FOREIGN),
            "{kind} {id}: {FOREIGN} must not reach the runtime: {ann:#?}"
        );

        // 3. paddock's record of the sandbox, in the shim's state for namespace k8s.io
        let record_path = paddock_state()
            .join(".paddock")
            .join(id)
            .join("sandbox.json");
        let record: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(&record_path)
                .unwrap_or_else(|e| panic!("{kind}: {}: {e}", record_path.display())),
        )
        .unwrap();
        let cgroup = format!("/{ns}/{id}");
        assert_eq!(record["cgroups_path"], cgroup.as_str(), "{record}");

        // 4. the effect on the host: the process sits in that cgroup, whose pids.max is the
        //    annotation's, and runs as the pool identity paddock leased (not the image's root)
        assert_eq!(pids_cgroup_of(pid), cgroup, "{kind} pid {pid}");
        assert_eq!(
            pids_file(&cgroup, "pids.max").trim(),
            PIDS_LIMIT,
            "{kind} {cgroup}"
        );
        let uid = record["identity"]["uid"].as_u64().expect("a pool identity") as u32;
        assert_ne!(uid, 0);
        assert_eq!(
            uid_of(pid),
            uid,
            "{kind} pid {pid} runs as its pool identity"
        );
    }

    // 5. the limit holds: an exec (ExecSync) forking 60 sleeps in the container fails past the
    //    limit, and the kernel counts the refusal in the container cgroup's pids.events
    let app_cgroup = format!("/{ns}/{app_id}");
    assert_eq!(pids_events_max(&app_cgroup), 0, "no fork refused yet");
    let out = client
        .exec_sync(
            &app_id,
            &["sh", "-c", "for i in $(seq 60); do sleep 3 & done; wait"],
            30,
        )
        .unwrap_or_else(|s| panic!("ExecSync: {}", status_line(&s)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.exit_code != 0 && stderr.contains("can't fork"),
        "60 forks under pids.max {PIDS_LIMIT}: exit {}, stderr {stderr:?}",
        out.exit_code
    );
    assert!(
        pids_events_max(&app_cgroup) >= 1,
        "pids.events counts the refusal"
    );

    // 6. the kubelet's way down: SIGTERM (the container's trap exits 0), then the pod
    client
        .stop_container(&app_id, 10)
        .unwrap_or_else(|s| panic!("StopContainer: {}", status_line(&s)));
    let stopped = client.container_status(&app_id).unwrap();
    let st = stopped.status.as_ref().unwrap();
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerExited as i32,
        "{st:?}"
    );
    assert_eq!(st.exit_code, 0, "the TERM trap ran: {st:?}");
    let log = fs::read_to_string(Path::new(&pod.log_directory).join("app.log")).unwrap();
    assert!(
        log.contains("stdout F started") && log.contains("stdout F stopping"),
        "the container's output in its CRI log: {log:?}"
    );
    client.remove_container(&app_id).unwrap();
    client
        .stop_pod_sandbox(&pod_id)
        .unwrap_or_else(|s| panic!("StopPodSandbox: {}", status_line(&s)));
    client
        .remove_pod_sandbox(&pod_id)
        .unwrap_or_else(|s| panic!("RemovePodSandbox: {}", status_line(&s)));
    assert!(
        eventually(Duration::from_secs(5), || !Path::new(&format!(
            "/proc/{pause_pid}"
        ))
        .exists()
            && !Path::new(&format!("/proc/{app_pid}")).exists()),
        "pause {pause_pid} and app {app_pid} are gone"
    );
    assert_clean(ctd, client);
}

#[test]
fn cri_bad_paddock_pod_annotation_fails_run_pod_sandbox_and_leaves_nothing() {
    if !ready() {
        return;
    }
    let (ctd, client, _image) = start();
    let pod = pod_config(&ctd, "refused", &[(PIDS, "lots")]);
    let status = client
        .run_pod_sandbox(&pod, HANDLER)
        .expect_err("RunPodSandbox with io.paddock.pids=lots must fail");
    let msg = status.message();
    assert!(
        msg.contains(r#"annotation io.paddock.pids="lots": not a whole number"#),
        "paddock's error reaches the CRI caller: {}",
        status_line(&status)
    );
    assert!(!msg.contains('\n'), "one line: {msg:?}");
    assert_clean(ctd, client);
}

/// A test that fails midway leaves its pod running: the harness's teardown must still remove
/// it and everything it holds.
#[test]
fn cri_pod_left_running_is_torn_down_with_containerd() {
    if !ready() {
        return;
    }
    let (ctd, client, image) = start();
    let pod = pod_config(&ctd, "left", &[(PIDS, PIDS_LIMIT)]);
    let pod_id = client.run_pod_sandbox(&pod, HANDLER).unwrap();
    let app_id = client
        .create_container(&pod_id, &app_config(&image), &pod)
        .unwrap();
    client.start_container(&app_id).unwrap();
    assert_eq!(ctd.shim_pids().len(), 1);
    drop(client);
    assert_stops_clean(ctd);
}
