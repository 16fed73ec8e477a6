//! Kubernetes' Container Runtime Interface (CRI, `runtime.v1` gRPC) against a private
//! containerd with its CRI plugin on: what the kubelet would send, without a kubelet.
//!
//! [`plugin_toml`] configures the plugin inside the private containerd's directory (its root
//! and state are containerd's, so `<dir>/root|state/io.containerd.grpc.v1.cri`; CNI conf and
//! bin dirs `<dir>/cni/*`, which stay empty: the tests run host-network pods, which need no
//! CNI), with the pod sandbox image [`PAUSE_REF`] and the paddock runtime table taken verbatim
//! from the README ([`readme_runtime_toml`]), so the documented snippet is the tested one.
//! paddock's sandbox state is the shim's default, [`paddock_state`].
//!
//! [`Cri`] is a small blocking client over containerd's grpc socket (the `k8s-cri` bindings on
//! tonic). CRI objects live in containerd's namespace [`CRI_NAMESPACE`]; the harness's
//! teardown walks every namespace, so it removes them too.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use crate::containerd::{busybox_image_tar, run_image_script, toml_str, Containerd};
use crate::containerd::{HarnessError, Result, BUSYBOX_REF};

/// containerd's namespace for everything the CRI plugin makes (fixed in containerd 1.6).
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The pod sandbox image [`pause_image_tar`] builds: busybox whose Cmd sleeps forever.
pub const PAUSE_REF: &str = "localhost/paddock/pause:latest";
/// The pause process (the image's Cmd): nothing to do but hold the pod's namespaces.
pub const PAUSE_CMD: &str = r#"["sleep","2147483647"]"#;
/// The runtime handler of the README's snippet (`containerd.runtimes.<handler>`).
pub const HANDLER: &str = "paddock";
/// How long one CRI call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn err(msg: impl Into<String>) -> HarnessError {
    HarnessError(msg.into())
}

/// What the CRI plugin is configured with beyond the private directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriSetup {
    /// The runtime's table(s), e.g. the README's snippet.
    pub runtime_toml: String,
    /// `sandbox_image`: must already be in [`CRI_NAMESPACE`] when a pod starts (no registry).
    pub sandbox_image: String,
}

impl CriSetup {
    /// The README's paddock runtime table and [`PAUSE_REF`].
    pub fn from_readme() -> Result<Self> {
        Ok(CriSetup {
            runtime_toml: readme_runtime_toml()?,
            sandbox_image: PAUSE_REF.to_string(),
        })
    }
}

/// The CRI plugin's tables for a containerd living in `dir`, then `setup`'s runtime table.
pub fn plugin_toml(dir: &Path, setup: &CriSetup) -> String {
    let q = |p: PathBuf| toml_str(&p.to_string_lossy());
    format!(
        r#"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {image}
  # never load a profile into the host's AppArmor, never listen on a fixed port
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # the pause gets oom_score_adj -998 unless it is clamped to containerd's own; lowering it
  # needs CAP_SYS_RESOURCE, which root lacks on this machine kind (runc fails the same way)
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    # a pod reaches paddock only by asking for its handler
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  # private and empty: the pods here use the host network, which needs no CNI
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {cni_bin}
    conf_dir = {cni_conf}

# --- the README's runtime table, verbatim ---
{runtime}
# --- end of the README's table ---
"#,
        image = toml_str(&setup.sandbox_image),
        cni_bin = q(dir.join("cni/bin")),
        cni_conf = q(dir.join("cni/net.d")),
        runtime = setup.runtime_toml.trim_end(),
    )
}

/// Where paddock's shim keeps the sandboxes of the CRI namespace (records in
/// `<this>/.paddock/<id>`). The runtime's `options` table cannot move it: for a runtime type
/// other than runc's, containerd 1.6's CRI plugin sends the shim its generic
/// `runtimeoptions.v1.Options`, which carries none of the table's keys.
pub fn paddock_state() -> PathBuf {
    Path::new(crate::containerd::PADDOCK_SHIM_STATE).join(CRI_NAMESPACE)
}

/// The README's containerd snippet for paddock's shim: the ```toml block that sets
/// `runtime_type = "io.containerd.paddock.v2"`. Errors if there is none, or if it lacks the
/// `runtimes.paddock` table or `pod_annotations = ["io.paddock.*"]`.
pub fn readme_runtime_toml() -> Result<String> {
    let path = crate::workspace().join("README.md");
    let text = fs::read_to_string(&path)
        .map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    runtime_block(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// The first fenced ```toml block of `markdown` naming `io.containerd.paddock.v2`, checked.
pub fn runtime_block(markdown: &str) -> std::result::Result<String, String> {
    let mut block: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match block.as_mut() {
            None if line.trim_start().starts_with("```toml") => block = Some(Vec::new()),
            None => {}
            Some(lines) if line.trim_start().starts_with("```") => {
                let body = lines.join("\n");
                if body.contains(r#"runtime_type = "io.containerd.paddock.v2""#) {
                    let table = format!(
                        r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}]"#
                    );
                    if !body.lines().any(|l| l.trim() == table) {
                        return Err(format!("the paddock runtime block has no {table} table"));
                    }
                    if !body.contains(r#"pod_annotations = ["io.paddock.*"]"#) {
                        return Err(
                            r#"the paddock runtime block lacks pod_annotations = ["io.paddock.*"]"#
                                .to_string(),
                        );
                    }
                    return Ok(body + "\n");
                }
                block = None;
            }
            Some(lines) => lines.push(line),
        }
    }
    Err(r#"no ```toml block with runtime_type = "io.containerd.paddock.v2""#.to_string())
}

/// The pause image archive: the busybox fixture with Cmd [`PAUSE_CMD`], built once per
/// process next to the busybox archive (and removed with it at exit).
pub fn pause_image_tar() -> Result<PathBuf> {
    static TAR: OnceLock<Result<PathBuf>> = OnceLock::new();
    TAR.get_or_init(|| {
        let tar = busybox_image_tar()?.with_file_name("pause.tar");
        run_image_script(&tar, PAUSE_REF, Some(PAUSE_CMD))?;
        Ok(tar)
    })
    .clone()
}

/// Imports the pause and busybox images into [`CRI_NAMESPACE`]; returns the busybox ref.
pub fn import_images(ctd: &Containerd) -> Result<String> {
    let images = [
        (pause_image_tar()?, PAUSE_REF),
        (busybox_image_tar()?, BUSYBOX_REF),
    ];
    for (tar, name) in &images {
        let tar = tar.to_string_lossy();
        let out = ctd.ctr_ns(CRI_NAMESPACE, &["images", "import", &tar]);
        if !out.status.success() {
            return Err(err(format!(
                "ctr -n {CRI_NAMESPACE} images import {tar} ({name}) failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(BUSYBOX_REF.to_string())
}

/// One line for a failed CRI call: the gRPC code and containerd's message.
pub fn status_line(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// A blocking CRI client on containerd's grpc socket.
#[derive(Debug)]
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

/// Result of one CRI call.
pub type CallResult<T> = std::result::Result<T, tonic::Status>;

impl Cri {
    /// Connects to `socket` (containerd's grpc address).
    pub fn connect(socket: &Path) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("tokio runtime for the CRI client: {e}")))?;
        let channel = rt
            .block_on(containerd_client::connect(socket))
            .map_err(|e| err(format!("connect {}: {e}", socket.display())))?;
        Ok(Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    fn request<T>(msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        req.set_timeout(crate::scaled(CALL_TIMEOUT));
        req
    }

    /// `Version`: the runtime's name and version and the CRI version it speaks.
    pub fn version(&self) -> CallResult<cri::VersionResponse> {
        let mut c = self.runtime.clone();
        self.rt
            .block_on(c.version(Self::request(cri::VersionRequest::default())))
            .map(tonic::Response::into_inner)
    }

    /// Polls `Version` until the plugin answers (it initialises after containerd's socket is
    /// up) and `ImageStatus` until every image of `refs` is known to it (imports reach its image
    /// cache through an event). Errors with the last answer after `timeout`.
    pub fn wait_ready(&self, refs: &[&str], timeout: Duration) -> Result<cri::VersionResponse> {
        let deadline = Instant::now() + crate::scaled(timeout);
        loop {
            let last = match self.version() {
                Ok(v) => {
                    let missing: Vec<&str> = refs
                        .iter()
                        .copied()
                        .filter(|r| !matches!(self.image_present(r), Ok(true)))
                        .collect();
                    if missing.is_empty() {
                        return Ok(v);
                    }
                    format!("images not known to the CRI plugin: {missing:?}")
                }
                Err(s) => status_line(&s),
            };
            if Instant::now() >= deadline {
                return Err(err(format!("CRI not ready after {timeout:?}: {last}")));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ImageStatus`: whether the plugin knows image `reference`.
    pub fn image_present(&self, reference: &str) -> CallResult<bool> {
        let mut c = self.images.clone();
        let req = cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: reference.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        self.rt
            .block_on(c.image_status(Self::request(req)))
            .map(|r| r.into_inner().image.is_some())
    }

    /// `RunPodSandbox` with `handler`; returns the sandbox id.
    pub fn run_pod_sandbox(
        &self,
        config: &cri::PodSandboxConfig,
        handler: &str,
    ) -> CallResult<String> {
        let mut c = self.runtime.clone();
        let req = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_string(),
        };
        self.rt
            .block_on(c.run_pod_sandbox(Self::request(req)))
            .map(|r| r.into_inner().pod_sandbox_id)
    }

    /// `StopPodSandbox`.
    pub fn stop_pod_sandbox(&self, id: &str) -> CallResult<()> {
        let mut c = self.runtime.clone();
        let req = cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.rt
            .block_on(c.stop_pod_sandbox(Self::request(req)))
            .map(|_| ())
    }

    /// `RemovePodSandbox`.
    pub fn remove_pod_sandbox(&self, id: &str) -> CallResult<()> {
        let mut c = self.runtime.clone();
        let req = cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.rt
            .block_on(c.remove_pod_sandbox(Self::request(req)))
            .map(|_| ())
    }

    /// `PodSandboxStatus` (verbose: `info` carries containerd's view, e.g. the pause pid).
    pub fn pod_sandbox_status(&self, id: &str) -> CallResult<cri::PodSandboxStatusResponse> {
        let mut c = self.runtime.clone();
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        self.rt
            .block_on(c.pod_sandbox_status(Self::request(req)))
            .map(tonic::Response::into_inner)
    }

    /// `ListPodSandbox` (all of them).
    pub fn list_pod_sandboxes(&self) -> CallResult<Vec<cri::PodSandbox>> {
        let mut c = self.runtime.clone();
        self.rt
            .block_on(c.list_pod_sandbox(Self::request(cri::ListPodSandboxRequest::default())))
            .map(|r| r.into_inner().items)
    }

    /// `CreateContainer` in pod `pod_id` (created with `pod_config`); returns the container id.
    pub fn create_container(
        &self,
        pod_id: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> CallResult<String> {
        let mut c = self.runtime.clone();
        let req = cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        };
        self.rt
            .block_on(c.create_container(Self::request(req)))
            .map(|r| r.into_inner().container_id)
    }

    /// `StartContainer`.
    pub fn start_container(&self, id: &str) -> CallResult<()> {
        let mut c = self.runtime.clone();
        let req = cri::StartContainerRequest {
            container_id: id.to_string(),
        };
        self.rt
            .block_on(c.start_container(Self::request(req)))
            .map(|_| ())
    }

    /// `StopContainer`: the stop signal, `timeout_s` seconds, then SIGKILL.
    pub fn stop_container(&self, id: &str, timeout_s: i64) -> CallResult<()> {
        let mut c = self.runtime.clone();
        let req = cri::StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_s,
        };
        self.rt
            .block_on(c.stop_container(Self::request(req)))
            .map(|_| ())
    }

    /// `RemoveContainer`.
    pub fn remove_container(&self, id: &str) -> CallResult<()> {
        let mut c = self.runtime.clone();
        let req = cri::RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.rt
            .block_on(c.remove_container(Self::request(req)))
            .map(|_| ())
    }

    /// `ContainerStatus` (verbose: `info` carries containerd's view, e.g. the pid).
    pub fn container_status(&self, id: &str) -> CallResult<cri::ContainerStatusResponse> {
        let mut c = self.runtime.clone();
        let req = cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        self.rt
            .block_on(c.container_status(Self::request(req)))
            .map(tonic::Response::into_inner)
    }

    /// `ExecSync`: runs `cmd` in container `id`, waits up to `timeout_s` seconds.
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> CallResult<cri::ExecSyncResponse> {
        let mut c = self.runtime.clone();
        let req = cri::ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|a| a.to_string()).collect(),
            timeout: timeout_s,
        };
        self.rt
            .block_on(c.exec_sync(Self::request(req)))
            .map(tonic::Response::into_inner)
    }

    /// `ListContainers` (all of them).
    pub fn list_containers(&self) -> CallResult<Vec<cri::Container>> {
        let mut c = self.runtime.clone();
        self.rt
            .block_on(c.list_containers(Self::request(cri::ListContainersRequest::default())))
            .map(|r| r.into_inner().containers)
    }
}

/// The `pid` in a verbose status's `info` (containerd puts `{"pid": N, …}` under key `info`).
pub fn info_pid(info: &HashMap<String, String>) -> Option<i32> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    v.get("pid")?.as_i64().and_then(|p| i32::try_from(p).ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const README: &str = r#"
text
```toml
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.paddock]
  runtime_type = "io.containerd.runc.v2"
```
more
```toml
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.paddock]
  runtime_type = "io.containerd.paddock.v2"
  pod_annotations = ["io.paddock.*"]   # comment
```
"#;

    #[test]
    fn finds_the_shim_block() {
        let block = runtime_block(README).unwrap();
        assert!(block.contains("io.containerd.paddock.v2"));
        assert!(!block.contains("io.containerd.runc.v2"));
        assert!(block.ends_with("# comment\n"));
    }

    #[test]
    fn refuses_a_block_without_pod_annotations_or_none() {
        let without = README.replace(r#"pod_annotations = ["io.paddock.*"]"#, "");
        assert!(runtime_block(&without)
            .unwrap_err()
            .contains("pod_annotations"));
        let renamed = README.replace("runtimes.paddock]", "runtimes.other]");
        assert!(runtime_block(&renamed)
            .unwrap_err()
            .contains("runtimes.paddock]"));
        assert!(runtime_block("no blocks").is_err());
    }

    #[test]
    fn the_readme_has_the_block() {
        readme_runtime_toml().unwrap();
    }

    #[test]
    fn plugin_toml_puts_everything_in_the_dir() {
        let setup = CriSetup {
            runtime_toml: runtime_block(README).unwrap(),
            sandbox_image: PAUSE_REF.to_string(),
        };
        let t = plugin_toml(Path::new("/run/x"), &setup);
        assert!(t.contains(r#"conf_dir = "/run/x/cni/net.d""#));
        assert!(t.contains(r#"bin_dir = "/run/x/cni/bin""#));
        assert!(t.contains(r#"sandbox_image = "localhost/paddock/pause:latest""#));
        assert!(t.contains(&setup.runtime_toml));
    }

    #[test]
    fn reads_the_pid_from_info() {
        let mut info = HashMap::new();
        info.insert("info".to_string(), r#"{"pid": 42, "x": 1}"#.to_string());
        assert_eq!(info_pid(&info), Some(42));
        info.insert("info".to_string(), "{}".to_string());
        assert_eq!(info_pid(&info), None);
    }
}
