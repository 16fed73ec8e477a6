//! The binary's three faces, as containerd runs it:
//! - `start`: find or launch the shim that serves this container (one per pod, grouped by
//!   `io.kubernetes.cri.sandbox-id`) and print its socket address;
//! - `delete`: clean up after a shim that died (containerd runs it in the bundle): the sandbox
//!   and the rootfs mounts go;
//! - no action: the shim itself, serving the Task API on its socket until `Shutdown`.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::{create_task, ttrpc::Server};
use containerd_shim::util::{timestamp, write_address};
use containerd_shim::{Flags, StartOpts};

use crate::container::{Shared, Table};
use crate::events::Publisher;
use crate::idle::Idle;
use crate::oom::OomWatch;
use crate::options;
use crate::reaper;
use crate::runtime::Paddock;
use crate::task::Service;

const NAME: &str = "containerd-shim-paddock-v2";
/// ttrpc worker threads per connection: containerd keeps one connection and may block a
/// worker per task in `Wait`, so the pool must grow with the number of containers.
const WORKERS_DEFAULT: usize = 2;
const WORKERS_MIN: usize = 1;
const WORKERS_MAX: usize = 4096;

pub fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(args.get(1..).unwrap_or(&[])) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            return ExitCode::from(1);
        }
    };
    if flags.version {
        println!(
            "{NAME}:\n  Version: {}\n  Task API: v2",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    if flags.namespace.is_empty() {
        eprintln!("{NAME}: -namespace is required");
        return ExitCode::from(1);
    }
    let result = match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        "" => serve(&flags),
        other => Err(format!("unknown action {other:?} (start, delete)")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("{NAME}: {e}");
            ExitCode::from(1)
        }
    }
}

fn bundle_dir(flags: &Flags) -> Result<PathBuf, String> {
    if flags.bundle.is_empty() {
        std::env::current_dir().map_err(|e| format!("current directory: {e}"))
    } else {
        Ok(PathBuf::from(&flags.bundle))
    }
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// `start`: prints the address of the shim serving this container, launching it if needed.
fn start(flags: &Flags) -> Result<(), String> {
    let bundle = bundle_dir(flags)?;
    let spec_path = bundle.join("config.json");
    let spec: serde_json::Value = std::fs::read(&spec_path)
        .map_err(|e| format!("read {}: {e}", spec_path.display()))
        .and_then(|d| {
            serde_json::from_slice(&d).map_err(|e| format!("parse {}: {e}", spec_path.display()))
        })?;
    let annotations = spec
        .get("annotations")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    let grouping = options::grouping(&flags.id, &annotations);
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &grouping);
    // Another container of the pod already has its shim: use it.
    if UnixStream::connect(socket_path(&address)).is_err() {
        let ttrpc_address =
            std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
        let opts = StartOpts {
            id: flags.id.clone(),
            publish_binary: flags.publish_binary.clone(),
            address: flags.address.clone(),
            ttrpc_address,
            namespace: flags.namespace.clone(),
            debug: flags.debug,
        };
        containerd_shim::spawn(opts, &grouping, Vec::new())
            .map_err(|e| format!("launch shim: {e}"))?;
    }
    std::env::set_current_dir(&bundle).map_err(|e| format!("chdir {}: {e}", bundle.display()))?;
    write_address(&address).map_err(|e| format!("write address: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("write stdout: {e}"))
}

/// `delete`: the shim of this container is gone; remove the sandbox and the rootfs mounts.
fn delete(flags: &Flags) -> Result<(), String> {
    reaper::prepare().map_err(|e| format!("set up the reaper: {e}"))?;
    reaper::start(|_, _| {}).map_err(|e| format!("start the reaper: {e}"))?;
    let bundle = bundle_dir(flags)?;
    let resolved = options::load(&bundle)
        .unwrap_or_else(|| options::resolve("", "", &flags.namespace, options::sibling_binary()));
    let paddock = Paddock {
        binary: resolved.binary,
        root: resolved.root,
    };
    let args: Vec<OsString> = vec!["delete".into(), "--force".into(), flags.id.clone().into()];
    // `delete --force` of a sandbox that was never created succeeds: an error here is real
    // (a missing `paddock` binary, say), and containerd shows the shim's stderr in its log.
    if let Err(e) = paddock.run(&args, None, &bundle) {
        eprintln!("{NAME}: delete {}: {e}", flags.id);
    }
    crate::task::unmount_rootfs(&bundle.join("rootfs"));
    remove_dead_socket(&bundle);
    remove_if_empty(&paddock.root);
    let resp = DeleteResponse {
        exited_at: Some(timestamp().unwrap_or_default()).into(),
        exit_status: 128 + libc::SIGKILL as u32,
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    resp.write_to_writer(&mut out)
        .map_err(|e| format!("write response: {e}"))?;
    out.flush().map_err(|e| format!("write response: {e}"))
}

/// The socket of the dead shim (named in the bundle's `address`), unless a live shim of the
/// same group answers on it.
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = socket_path(address.trim());
    if UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Binds the shim's socket; `None` if a live shim already serves it.
fn listen(socket: &str) -> Result<Option<UnixListener>, String> {
    let path = Path::new(socket_path(socket));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("remove stale {}: {e}", path.display()))?;
            UnixListener::bind(path)
                .map(Some)
                .map_err(|e| format!("bind {}: {e}", path.display()))
        }
        Err(e) => Err(format!("bind {}: {e}", path.display())),
    }
}

/// The shim: serve until containerd says `Shutdown` with no container left.
fn serve(flags: &Flags) -> Result<(), String> {
    // One malloc arena for all threads: each thread's own arena would keep its pages resident.
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // Before any thread exists: the signal mask is inherited by every thread.
    reaper::prepare().map_err(|e| format!("set up the reaper: {e}"))?;
    let _ = nix::unistd::setsid();
    if flags.socket.is_empty() {
        return Err("-socket is required".into());
    }
    if let Err(e) = containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
    {
        eprintln!("{NAME}: no log: {e}");
    }
    let Some(listener) = listen(&flags.socket)? else {
        write_address(&flags.socket).map_err(|e| format!("write address: {e}"))?;
        return Ok(());
    };
    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| "TTRPC_ADDRESS is not set".to_string())?;
    let events = Publisher::start(ttrpc_address, flags.namespace.clone())
        .map_err(|e| format!("start events: {e}"))?;
    let shared = Arc::new(Shared {
        table: Mutex::new(Table::default()),
        changed: Condvar::new(),
        events,
        namespace: flags.namespace.clone(),
    });
    let on_exit = Arc::clone(&shared);
    reaper::start(move |pid, code| on_exit.on_exit(pid, code))
        .map_err(|e| format!("start the reaper: {e}"))?;
    let on_oom = Arc::clone(&shared);
    let oom = OomWatch::start(move |id| on_oom.on_oom(id))?;
    let (idle, waiter) = Idle::new();
    let idle = Arc::new(idle);
    let service = Service {
        shared: Arc::clone(&shared),
        oom,
        idle: Arc::clone(&idle),
    };
    let task: Box<dyn containerd_shim::Task + Send + Sync> = Box::new(service);
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(|e| format!("listen: {e}"))?
        .set_thread_count_default(WORKERS_DEFAULT)
        .set_thread_count_min(WORKERS_MIN)
        .set_thread_count_max(WORKERS_MAX)
        .register_service(create_task(Arc::from(task)));
    server
        .start()
        .map_err(|e| format!("start the ttrpc server: {e}"))?;
    // Tell `start` we serve: it reads our stdout until EOF.
    // SAFETY: dup2 on two descriptors this process owns; stdout becomes a copy of stderr.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    // Serve until Shutdown, trimming the resident set whenever requests stop.
    idle.poke();
    waiter.run();
    server.shutdown();
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    remove_empty_roots(&shared);
    Ok(())
}

/// The per-namespace state roots this shim used, once empty.
fn remove_empty_roots(shared: &Shared) {
    let roots = std::mem::take(&mut shared.lock().roots);
    for root in roots {
        remove_if_empty(&root);
    }
}

/// A state root (and its parent, the default base) once nothing is left in it. A create
/// racing this recreates the directories (paddock's store retries).
fn remove_if_empty(root: &Path) {
    if std::fs::remove_dir(root).is_ok() {
        if let Some(parent) = root.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}
