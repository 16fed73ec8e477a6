//! The node as the stager drives it: containerd (one namespace), the instance network and the
//! stager's directories, with the operations every verb shares — launch an instance, wait for
//! its port, tear it down, read its usage.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_client::services::v1::Container;
use containerd_client::types::v1::Status;
use prost_types::Any;
use serde::Serialize;

use crate::ctd::{self, Ctd, SNAPSHOTTER};
use crate::droplet::Droplet;
use crate::error::{Error, Result};
use crate::image::{self, LayerFile};
use crate::limits::Limits;
use crate::metrics;
use crate::network::Net;
use crate::record::{self, Desired, Record};
use crate::spec::{self, CONTAINER_PORT};
use crate::stack;

/// Settings every verb shares (the global options).
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: PathBuf,
    pub namespace: String,
    /// Droplets, the stack, instance logs (`/var/lib/paddock`).
    pub data: PathBuf,
    /// Network namespaces, address store, port leases, watcher pid files (`/run/paddock-stager`).
    pub state: PathBuf,
    pub runtime: String,
    /// The shim's `BinaryName`: the runc-compatible binary it execs (paddock).
    pub runtime_binary: Option<PathBuf>,
    /// The shim's `Root`: that binary's state root.
    pub runtime_root: Option<PathBuf>,
    pub bridge: String,
    pub subnet: String,
}

pub struct Node {
    pub ctd: Ctd,
    pub net: Net,
    pub s: Settings,
}

/// One line of `ps`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub index: u32,
    pub id: String,
    pub guid: String,
    pub host_port: u16,
    pub ip: String,
    pub state: String,
    pub pid: u32,
    pub memory_bytes: u64,
    pub memory_limit: u64,
    pub cpu_ns: u64,
    pub disk_bytes: u64,
    pub disk_limit: u64,
    pub restarts: u32,
    pub oom_kills: u32,
    pub last_exit: String,
}

impl Node {
    pub async fn connect(s: Settings) -> Result<Self> {
        let net = Net::new(&s.state, &s.bridge, &s.subnet)?;
        let ctd = Ctd::connect(&s.address, &s.namespace).await?;
        Ok(Node { ctd, net, s })
    }

    pub fn droplets_dir(&self) -> PathBuf {
        self.s.data.join("droplets")
    }

    pub fn stacks_dir(&self) -> PathBuf {
        self.s.data.join("stacks")
    }

    pub fn app_logs(&self, app: &str) -> PathBuf {
        self.s.data.join("logs").join(&self.s.namespace).join(app)
    }

    pub fn log_path(&self, app: &str, id: &str) -> PathBuf {
        self.app_logs(app).join(format!("{id}.log"))
    }

    pub fn app_state(&self, app: &str) -> PathBuf {
        self.s.state.join("apps").join(&self.s.namespace).join(app)
    }

    /// The instances of `app`, by index (then id).
    pub async fn instances(&self, app: &str) -> Result<Vec<(Record, Container)>> {
        let mut out: Vec<(Record, Container)> = self
            .ctd
            .containers()
            .await?
            .into_iter()
            .filter_map(|c| {
                Record::from_labels(&c.id, &c.labels)
                    .filter(|r| r.app == app)
                    .map(|r| (r, c))
            })
            .collect();
        out.sort_by(|a, b| (a.0.index, &a.0.id).cmp(&(b.0.index, &b.0.id)));
        Ok(out)
    }

    /// The records of `app`'s instances, by index.
    pub async fn records(&self, app: &str) -> Result<Vec<Record>> {
        Ok(self
            .instances(app)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    /// Imports the stack into containerd (built first if needed); returns its layer.
    pub async fn ensure_stack(&self, progress: &mut dyn FnMut(&str)) -> Result<LayerFile> {
        let st = stack::ensure(&self.stacks_dir(), progress)?;
        let layer = LayerFile {
            path: st.path,
            digest: st.digest,
            size: st.size,
        };
        image::ensure(&self.ctd, stack::IMAGE, std::slice::from_ref(&layer)).await?;
        Ok(layer)
    }

    /// Imports the droplet as an image on the stack; returns the snapshot to start from.
    pub async fn ensure_droplet(
        &self,
        d: &Droplet,
        progress: &mut dyn FnMut(&str),
    ) -> Result<String> {
        let stack = self.ensure_stack(progress).await?;
        if stack.digest != d.manifest.stack {
            return Err(Error::Invalid(format!(
                "droplet {} was staged on stack {} but this node's stack is {}: stage the app again",
                d.id, d.manifest.stack, stack.digest
            )));
        }
        let droplet_layer = LayerFile {
            path: d.tar_path(),
            digest: d.manifest.layer.digest.clone(),
            size: d.manifest.layer.size,
        };
        image::ensure(&self.ctd, &droplet_image(&d.id), &[stack, droplet_layer]).await
    }

    /// Launches instance `index` of `app`: host port, network namespace and CNI, snapshot,
    /// container, task. Whatever was made is undone if a step fails.
    pub async fn launch(
        &self,
        app: &str,
        index: u32,
        d: &Droplet,
        chain: &str,
        limits: Limits,
    ) -> Result<Record> {
        let guid = new_guid()?;
        let id = format!("{app}-{index}-{}", &guid[..8]);
        let host_port = self.net.lease_port(&id)?;
        let mut rec = Record {
            id: id.clone(),
            app: app.into(),
            index,
            guid: guid.clone(),
            droplet: d.id.clone(),
            host_port,
            port: CONTAINER_PORT,
            ip: String::new(),
            limits,
            desired: Desired::Running,
            restarts: 0,
            oom_kills: 0,
            last_exit: String::new(),
            ready: false,
        };
        match self.launch_steps(&mut rec, d, chain).await {
            Ok(()) => Ok(rec),
            Err(e) => {
                let _ = self.destroy(&rec, Duration::ZERO).await;
                Err(e)
            }
        }
    }

    async fn launch_steps(&self, rec: &mut Record, d: &Droplet, chain: &str) -> Result<()> {
        let attached = self.net.attach(&rec.id, rec.host_port, rec.port)?;
        for stale in &attached.stale_removed {
            crate::verbs::progress(&format!(
                "removed a stale mapping left by an earlier run: {stale}"
            ));
        }
        rec.ip = attached.ip;
        let netns = self.net.netns_path(&rec.id);
        let netns = netns.to_string_lossy();
        let inst = spec::Instance {
            app: &rec.app,
            index: rec.index,
            guid: &rec.guid,
            droplet: &d.id,
            command: &d.manifest.start_command,
            limits: rec.limits,
            netns: &netns,
            host_port: rec.host_port,
        };
        let spec_json = serde_json::to_vec(&spec::spec(&inst))
            .map_err(|e| Error::Invalid(format!("spec of {}: {e}", rec.id)))?;
        let rootfs = self.ctd.prepare_snapshot(&rec.id, chain).await?;
        let container = Container {
            id: rec.id.clone(),
            labels: rec.labels(),
            image: droplet_image(&d.id),
            runtime: Some(ctd::runtime(
                &self.s.runtime,
                self.s.runtime_binary.as_deref(),
                self.s.runtime_root.as_deref(),
            )),
            spec: Some(Any {
                type_url: spec::SPEC_TYPE_URL.into(),
                value: spec_json,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: rec.id.clone(),
            ..Default::default()
        };
        self.ctd.create_container(container.clone()).await?;
        self.start_task(&container, rootfs).await
    }

    /// Creates and starts the task of an instance container (also used to restart one).
    pub async fn start_task(
        &self,
        c: &Container,
        rootfs: Vec<containerd_client::types::Mount>,
    ) -> Result<()> {
        let app = c.labels.get(record::APP).cloned().unwrap_or_default();
        let log = self.log_path(&app, &c.id);
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        }
        self.ctd.create_task(c, rootfs, &log).await?;
        self.ctd.start_task(&c.id).await?;
        Ok(())
    }

    /// Waits until the instance's host port answers; fails early if its task ends.
    pub async fn wait_healthy(&self, rec: &Record, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let addr = SocketAddr::from(([127, 0, 0, 1], rec.host_port));
        loop {
            match self.ctd.task(&rec.id).await? {
                Some(p) if p.status == Status::Stopped as i32 => {
                    return Err(self.unhealthy(
                        rec,
                        &format!(
                            "it ended ({}) before its port opened",
                            record::describe_exit(p.exit_status, false)
                        ),
                    ));
                }
                None => return Err(self.unhealthy(rec, "its task is gone")),
                Some(_) => {}
            }
            let probe = tokio::task::spawn_blocking(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
            })
            .await
            .unwrap_or(false);
            if probe {
                return self
                    .ctd
                    .set_labels(&rec.id, &[(record::READY, "true".into())])
                    .await;
            }
            if Instant::now() >= deadline {
                return Err(self.unhealthy(
                    rec,
                    &format!(
                        "port {} (host port {}) did not answer within {:?}",
                        rec.port, rec.host_port, timeout
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn unhealthy(&self, rec: &Record, why: &str) -> Error {
        let tail = log_tail(&self.log_path(&rec.app, &rec.id), 5);
        let tail = if tail.is_empty() {
            String::new()
        } else {
            format!("; its last output: {}", tail.join(" | "))
        };
        Error::app(
            &rec.app,
            format!(
                "instance {} ({}) is not healthy: {why}{tail}",
                rec.index, rec.id
            ),
        )
    }

    /// Stops an instance and removes everything of it: task (TERM, `grace`, then KILL),
    /// container, snapshot, network, port lease, log. Goes on past failures; returns the first.
    pub async fn destroy(&self, rec: &Record, grace: Duration) -> Result<()> {
        let mut first: Option<Error> = None;
        let mut note = |r: Result<()>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        if self.ctd.container(&rec.id).await.ok().flatten().is_some() {
            note(
                self.ctd
                    .set_labels(
                        &rec.id,
                        &[(record::DESIRED, Desired::Stopped.as_str().into())],
                    )
                    .await,
            );
        }
        if self.ctd.task(&rec.id).await.ok().flatten().is_some() {
            if !grace.is_zero() {
                note(self.ctd.kill(&rec.id, libc::SIGTERM).await);
            }
            let exited = if grace.is_zero() {
                None
            } else {
                self.ctd.wait(&rec.id, grace).await.ok().flatten()
            };
            if exited.is_none() {
                note(self.ctd.kill(&rec.id, libc::SIGKILL).await);
                let _ = self.ctd.wait(&rec.id, Duration::from_secs(10)).await;
            }
            note(self.ctd.delete_task(&rec.id).await);
        }
        note(self.ctd.delete_container(&rec.id).await);
        note(self.ctd.remove_snapshot(&rec.id).await);
        note(self.net.detach(&rec.id, rec.host_port, rec.port));
        self.net.release_port(rec.host_port, &rec.id);
        let log = self.log_path(&rec.app, &rec.id);
        let _ = fs::remove_file(&log);
        // the app's and the namespace's log directories go with their last log
        let _ = fs::remove_dir(self.app_logs(&rec.app));
        let _ = fs::remove_dir(self.s.data.join("logs").join(&self.s.namespace));
        let _ = fs::remove_dir(self.s.data.join("logs"));
        first.map_or(Ok(()), Err)
    }

    /// The `ps` line of an instance: state from its task, usage from containerd's metrics,
    /// disk from the instance's volume.
    pub async fn row(&self, rec: &Record) -> Row {
        let task = self.ctd.task(&rec.id).await.ok().flatten();
        let running = task
            .as_ref()
            .is_some_and(|p| p.status == Status::Running as i32);
        let state = match (rec.desired, &task) {
            (Desired::Crashed, _) => "crashed",
            (Desired::Stopped, _) if running => "stopping",
            (_, None) => "down",
            (_, Some(p)) if p.status == Status::Running as i32 && rec.ready => "running",
            (_, Some(p)) if p.status == Status::Running as i32 => "starting",
            (_, Some(p)) if p.status == Status::Created as i32 => "starting",
            (_, Some(p)) if p.status == Status::Paused as i32 => "paused",
            _ => "stopped",
        };
        let pid = task.as_ref().map_or(0, |p| p.pid);
        let usage = if running {
            self.ctd
                .metrics(&rec.id)
                .await
                .ok()
                .flatten()
                .and_then(|m| m.data)
                .and_then(|d| metrics::decode(&d))
                .unwrap_or_default()
        } else {
            metrics::Usage::default()
        };
        Row {
            index: rec.index,
            id: rec.id.clone(),
            guid: rec.guid.clone(),
            host_port: rec.host_port,
            ip: rec.ip.clone(),
            state: state.into(),
            pid,
            memory_bytes: usage.memory_bytes,
            memory_limit: rec.limits.memory,
            cpu_ns: usage.cpu_ns,
            disk_bytes: if running { disk_used(pid) } else { 0 },
            disk_limit: rec.limits.disk,
            restarts: rec.restarts,
            oom_kills: rec.oom_kills,
            last_exit: rec.last_exit.clone(),
        }
    }

    pub async fn rows(&self, app: &str) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for (rec, _) in self.instances(app).await? {
            rows.push(self.row(&rec).await);
        }
        Ok(rows)
    }
}

/// The image name of a droplet in containerd.
pub fn droplet_image(id: &str) -> String {
    format!("paddock.local/droplets/{id}:latest")
}

/// 32 random hex digits.
pub fn new_guid() -> Result<String> {
    let mut buf = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("read", "/dev/urandom", e))?;
    Ok(crate::layer::hex(&buf))
}

/// Bytes used on the instance's disk volume (`HOME`, the quota filesystem), seen through the
/// root of its init process.
pub fn disk_used(pid: u32) -> u64 {
    if pid == 0 {
        return 0;
    }
    let path = format!("/proc/{pid}/root{}", spec::HOME);
    match nix::sys::statvfs::statvfs(Path::new(&path)) {
        Ok(st) => st
            .blocks()
            .saturating_sub(st.blocks_free())
            .saturating_mul(st.fragment_size()),
        Err(_) => 0,
    }
}

/// The last `n` non-empty lines of a file.
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}
