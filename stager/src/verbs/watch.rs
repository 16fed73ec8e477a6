//! The app's watcher (DEA's health manager, per app): a small process that follows
//! containerd's task events for the app, counts OOM kills, and restarts an instance whose
//! process ended while it should run — up to [`MAX_RESTARTS`] times, after which the instance
//! is marked crashed and left down. `run`/`scale`/`restart` start it, `stop` ends it, and it
//! ends by itself when the app has no instance left.

use std::collections::HashMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_client::events::{TaskExit, TaskOom};
use containerd_client::services::v1::SubscribeRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use prost::Message;

use crate::error::{Error, Result};
use crate::node::Node;
use crate::record::{self, describe_exit, Desired, Record};

/// Restarts an instance gets before it is marked crashed.
pub const MAX_RESTARTS: u32 = 3;
/// How long an exit waits for an OOM event that may arrive just after it.
const OOM_SETTLE: Duration = Duration::from_millis(300);

fn pid_file(node: &Node, app: &str) -> std::path::PathBuf {
    node.app_state(app).join("watch.pid")
}

/// The watcher's pid, if one runs for `app`.
fn running(node: &Node, app: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file(node, app))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let ours = args.iter().any(|a| a.ends_with("paddock-stager"))
        && args.windows(2).any(|w| w[0] == "watch" && w[1] == app)
        && args
            .windows(2)
            .any(|w| w[0] == "--namespace" && w[1] == node.s.namespace);
    ours.then_some(pid)
}

/// Starts the app's watcher unless one runs.
pub fn ensure(node: &Node, app: &str) -> Result<()> {
    if running(node, app).is_some() {
        return Ok(());
    }
    let dir = node.app_state(app);
    fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
    let log_path = dir.join("watch.log");
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io("open", &log_path, e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| Error::io("dup", &log_path, e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "/proc/self/exe", e))?;
    let s = &node.s;
    let mut cmd = Command::new(exe);
    cmd.arg("--address")
        .arg(&s.address)
        .arg("--namespace")
        .arg(&s.namespace)
        .arg("--data-dir")
        .arg(&s.data)
        .arg("--state-dir")
        .arg(&s.state)
        .arg("--runtime")
        .arg(&s.runtime)
        .arg("--bridge")
        .arg(&s.bridge)
        .arg("--subnet")
        .arg(&s.subnet);
    if let Some(b) = &s.runtime_binary {
        cmd.arg("--runtime-binary").arg(b);
    }
    if let Some(r) = &s.runtime_root {
        cmd.arg("--runtime-root").arg(r);
    }
    let child = cmd
        .arg("watch")
        .arg(app)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("start watcher", &log_path, e))?;
    let pid_path = pid_file(node, app);
    fs::write(&pid_path, child.id().to_string()).map_err(|e| Error::io("write", &pid_path, e))?;
    Ok(())
}

/// Ends the app's watcher, if one runs, and waits for it to be gone.
pub fn stop(node: &Node, app: &str) {
    if let Some(pid) = running(node, app) {
        let pid = Pid::from_raw(pid);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if alive(pid) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
    let _ = fs::remove_file(pid_file(node, app));
}

fn alive(pid: Pid) -> bool {
    // a zombie (exited, not yet reaped by whoever adopted it) counts as gone
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
        })
        .is_some_and(|dead| !dead)
}

struct Exit {
    status: u32,
    due: Instant,
    oom: bool,
}

/// The watcher's loop (the hidden `watch <app>` verb).
pub async fn watch(node: &Node, app: &str) -> Result<()> {
    let ns = &node.s.namespace;
    let filters = vec![
        format!("namespace=={ns},topic==\"/tasks/oom\""),
        format!("namespace=={ns},topic==\"/tasks/exit\""),
    ];
    let mut stream = node
        .ctd
        .client
        .events()
        .subscribe(node.ctd.req_no_timeout(SubscribeRequest { filters }))
        .await
        .map_err(|s| Error::containerd("subscribe to events of", ns, &s))?
        .into_inner();
    eprintln!("watching app {app} in namespace {ns}");
    let mut pending: HashMap<String, Exit> = HashMap::new();
    let mut recent_oom: HashMap<String, Instant> = HashMap::new();
    // restarted instances whose port has not answered yet: id -> host port
    let mut unready: HashMap<String, u16> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_check = Instant::now();
    // instances that ended while no watcher ran
    for (rec, _) in node.instances(app).await? {
        if rec.desired == Desired::Running {
            if let Some(p) = node.ctd.task(&rec.id).await? {
                if p.status == containerd_client::types::v1::Status::Stopped as i32 {
                    pending.insert(
                        rec.id.clone(),
                        Exit {
                            status: p.exit_status,
                            due: Instant::now(),
                            oom: false,
                        },
                    );
                }
            }
        }
    }
    loop {
        tokio::select! {
            msg = stream.message() => {
                let envelope = match msg {
                    Ok(Some(e)) => e,
                    Ok(None) => return Err(Error::app(app, "containerd closed the event stream")),
                    Err(s) => return Err(Error::containerd("read events of", ns, &s)),
                };
                let Some(event) = envelope.event else { continue };
                match envelope.topic.as_str() {
                    "/tasks/oom" => {
                        let Ok(oom) = TaskOom::decode(event.value.as_slice()) else { continue };
                        let Some(rec) = instance(node, app, &oom.container_id).await else { continue };
                        eprintln!("{}: OOM kill", rec.id);
                        let _ = node.ctd.set_labels(&rec.id, &[
                            (record::OOM_KILLS, (rec.oom_kills + 1).to_string()),
                        ]).await;
                        match pending.get_mut(&rec.id) {
                            Some(exit) => exit.oom = true,
                            None => { recent_oom.insert(rec.id.clone(), Instant::now()); }
                        }
                    }
                    "/tasks/exit" => {
                        let Ok(exit) = TaskExit::decode(event.value.as_slice()) else { continue };
                        if exit.id != exit.container_id {
                            continue; // an exec'd process, not the instance
                        }
                        let Some(rec) = instance(node, app, &exit.container_id).await else { continue };
                        if rec.desired != Desired::Running {
                            continue;
                        }
                        let oom = recent_oom
                            .remove(&rec.id)
                            .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
                        eprintln!("{}: exited with status {}", rec.id, exit.exit_status);
                        pending.insert(rec.id, Exit { status: exit.exit_status, due: Instant::now() + OOM_SETTLE, oom });
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let due: Vec<String> = pending
                    .iter()
                    .filter(|(_, e)| e.due <= Instant::now())
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    if let Some(exit) = pending.remove(&id) {
                        match handle_exit(node, app, &id, &exit).await {
                            Ok(Some(port)) => {
                                unready.insert(id, port);
                            }
                            Ok(None) => {}
                            Err(e) => eprintln!("{id}: {e}"),
                        }
                    }
                }
                for (id, port) in unready.clone() {
                    if answers(port).await {
                        eprintln!("{id}: answers on host port {port} again");
                        let _ = node.ctd.set_labels(&id, &[(record::READY, "true".into())]).await;
                        unready.remove(&id);
                    }
                }
                if last_check.elapsed() > Duration::from_secs(2) {
                    last_check = Instant::now();
                    if node.instances(app).await.is_ok_and(|v| v.is_empty()) {
                        eprintln!("app {app} has no instances left; watcher ends");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Whether something accepts connections on 127.0.0.1:`port`.
async fn answers(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tokio::task::spawn_blocking(move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok()
    })
    .await
    .unwrap_or(false)
}

async fn instance(node: &Node, app: &str, id: &str) -> Option<Record> {
    let c = node.ctd.container(id).await.ok().flatten()?;
    Record::from_labels(&c.id, &c.labels).filter(|r| r.app == app)
}

/// Restarts an instance that ended while it should run (returns its host port, to be
/// probed until it answers), or marks it crashed when its restart budget is spent.
async fn handle_exit(node: &Node, app: &str, id: &str, exit: &Exit) -> Result<Option<u16>> {
    let Some(c) = node.ctd.container(id).await? else {
        return Ok(None);
    };
    let Some(rec) = Record::from_labels(&c.id, &c.labels).filter(|r| r.app == app) else {
        return Ok(None);
    };
    if rec.desired != Desired::Running {
        return Ok(None);
    }
    let why = describe_exit(exit.status, exit.oom);
    node.ctd.delete_task(id).await?;
    if rec.restarts >= MAX_RESTARTS {
        eprintln!(
            "{id}: {why}; restarted {} times already, marked crashed",
            rec.restarts
        );
        node.ctd
            .set_labels(
                id,
                &[
                    (record::DESIRED, Desired::Crashed.as_str().into()),
                    (record::LAST_EXIT, why),
                ],
            )
            .await?;
        return Ok(None);
    }
    node.ctd
        .set_labels(
            id,
            &[
                (record::RESTARTS, (rec.restarts + 1).to_string()),
                (record::LAST_EXIT, why.clone()),
                (record::READY, "false".into()),
            ],
        )
        .await?;
    eprintln!(
        "{id}: {why}; restarting ({} of {MAX_RESTARTS})",
        rec.restarts + 1
    );
    let rootfs = node.ctd.snapshot_mounts(id).await?;
    if let Err(e) = node.start_task(&c, rootfs).await {
        let _ = node.ctd.delete_task(id).await;
        node.ctd
            .set_labels(
                id,
                &[
                    (record::DESIRED, Desired::Crashed.as_str().into()),
                    (record::LAST_EXIT, format!("{why}; restart failed: {e}")),
                ],
            )
            .await?;
        return Err(e);
    }
    Ok(Some(rec.host_port))
}
