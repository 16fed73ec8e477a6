//! The binary's three faces, as containerd runs it:
//! - `start`: find or launch the shim that serves this container (one per pod, grouped by
//!   `io.kubernetes.cri.sandbox-id`) and print its socket address;
//! - `delete`: clean up after a shim that died (containerd runs it in the bundle): the sandbox
//!   and the rootfs mounts go;
//! - no action: the shim itself, serving the Task API on its socket until `Shutdown`.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::{create_task, ttrpc::Server};
use containerd_shim::util::{timestamp, write_address};
use containerd_shim::Flags;
use nix::unistd::ForkResult;

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
/// How long an exiting shim waits for its last events to reach containerd.
const EVENTS_FLUSH: Duration = Duration::from_secs(2);

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
    std::env::set_current_dir(&bundle).map_err(|e| format!("chdir {}: {e}", bundle.display()))?;
    // Another container of the pod already has its shim: use it.
    if UnixStream::connect(socket_path(&address)).is_err() {
        launch(flags, &address)?;
    }
    write_address(&address).map_err(|e| format!("write address: {e}"))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| format!("write stdout: {e}"))
}

/// Forks the shim off the `start` action. The socket is bound before the fork, so containerd
/// may connect as soon as the address is printed: its requests wait in the socket's backlog
/// while the child sets up, and the binary is not executed a second time.
fn launch(flags: &Flags, address: &str) -> Result<(), String> {
    if std::env::var_os("TTRPC_ADDRESS").is_none() {
        return Err("TTRPC_ADDRESS is not set".into());
    }
    // A live shim that bound the socket since we looked serves it.
    let Some(listener) = listen(address)? else {
        return Ok(());
    };
    // SAFETY: the start action runs no thread besides this one, so the child may run any code.
    match unsafe { nix::unistd::fork() } {
        // the child holds the listener now; ours closes
        Ok(ForkResult::Parent { .. }) => Ok(()),
        Ok(ForkResult::Child) => {
            // containerd reads the start action's output until EOF: the shim keeps none of it
            // (nor does the process below)
            detach_stdio();
            crate::runtime::clean_library_path();
            // The first sandbox's move into its cgroups waits for a kernel grace period; start
            // it now, while containerd connects and sends Create (the reaper collects the
            // process, a helper of the shim's own).
            if let Some(pid) = paddock_runtime::migration::spawn_detached() {
                crate::reaper::Claim::take().own(pid.as_raw());
            }
            let code = match run(listener, flags, address) {
                Ok(()) => 0,
                Err(e) => {
                    log::error!("{e}");
                    1
                }
            };
            std::process::exit(code)
        }
        Err(e) => Err(format!("fork the shim: {e}")),
    }
}

/// stdin, stdout and stderr on `/dev/null`.
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto a standard descriptor of this process from one it owns.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}

/// `delete`: the shim of this container is gone; remove the sandbox and the rootfs mounts.
/// containerd runs this after every shim, also one that deleted its container itself: then the
/// bundle records no sandbox and the runtime is not asked again.
fn delete(flags: &Flags) -> Result<(), String> {
    let bundle = bundle_dir(flags)?;
    let resolved = options::load(&bundle).unwrap_or_else(|e| {
        eprintln!("{NAME}: {e}; deleting {} with the defaults", flags.id);
        Some(options::resolve(
            "",
            "",
            &flags.namespace,
            options::sibling_binary(),
        ))
    });
    if let Some(resolved) = resolved {
        reaper::prepare().map_err(|e| format!("set up the reaper: {e}"))?;
        reaper::start(|_, _| {}).map_err(|e| format!("start the reaper: {e}"))?;
        let paddock = Paddock {
            binary: resolved.binary,
            root: resolved.root,
        };
        let args: Vec<OsString> = vec!["delete".into(), "--force".into(), flags.id.clone().into()];
        // `delete --force` of a sandbox that was never created succeeds: an error here is real
        // (a missing `paddock` binary, say), and containerd shows the shim's stderr in its log.
        match paddock.run(&args, None, &bundle) {
            Ok(()) => {
                let _ = options::forget(&bundle);
            }
            Err(e) => eprintln!("{NAME}: delete {}: {e}", flags.id),
        }
        remove_if_empty(&paddock.root);
    }
    crate::task::unmount_rootfs(&bundle.join("rootfs"));
    remove_dead_socket(&bundle);
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

/// No action: the shim on `-socket`, as a `start` action launching it by exec would run it.
fn serve(flags: &Flags) -> Result<(), String> {
    if flags.socket.is_empty() {
        return Err("-socket is required".into());
    }
    let Some(listener) = listen(&flags.socket)? else {
        write_address(&flags.socket).map_err(|e| format!("write address: {e}"))?;
        return Ok(());
    };
    run(listener, flags, &flags.socket)
}

/// The shim: serve on `listener` until containerd says `Shutdown` with no container left.
fn run(listener: UnixListener, flags: &Flags, socket: &str) -> Result<(), String> {
    // One malloc arena for all threads: each thread's own arena would keep its pages resident.
    // SAFETY: mallopt only sets an allocator parameter; called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    // Before any thread exists: the signal mask is inherited by every thread.
    reaper::prepare().map_err(|e| format!("set up the reaper: {e}"))?;
    let _ = nix::unistd::setsid();
    if let Err(e) = containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
    {
        eprintln!("{NAME}: no log: {e}");
    }
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
    // A `start` action that exec'd us reads our stdout until EOF.
    // SAFETY: dup2 on two descriptors this process owns; stdout becomes a copy of stderr.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
    // Serve until Shutdown, trimming the resident set whenever requests stop.
    idle.poke();
    waiter.run();
    // Gone before containerd sees the connection close and runs the `delete` action.
    let _ = std::fs::remove_file(socket_path(socket));
    remove_empty_roots(&shared);
    if !shared.events.flush(EVENTS_FLUSH) {
        log::warn!("events still queued at exit");
    }
    // The process exit closes containerd's connection (which it takes as the shim's end,
    // Shutdown's reply or not) without joining the server's threads one by one first.
    drop(server);
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
