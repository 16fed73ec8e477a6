//! `containerd-shim-paddock-v2`: containerd's runtime `io.containerd.paddock.v2`.
//!
//! A thin, synchronous service (task API v2, `containerd-shim` 0.11): lifecycle calls exec the
//! `paddock` binary, as containerd's runc shim execs runc; the runtime library is used in this
//! process only to read (state, stats, OOM counters). `main` only wires the modules:
//! - [`service`]: the binary actions (`start`, `delete`) and the ttrpc server;
//! - [`task`]: the Task API, one method per verb, over the table in [`container`];
//! - [`runtime`]: running `paddock`; [`reaper`]: collecting exits as the child subreaper;
//! - [`stdio`], [`console`]: containerd's FIFOs, log URIs and terminals; [`rootfs`]: mounts;
//! - [`events`]: ordered publishing to containerd; [`oom`]: the OOM watcher thread;
//! - [`idle`]: giving back what an idle shim does not need resident;
//! - [`metrics`]: runtime statistics in containerd's cgroup Metrics types;
//! - [`options`]: where the runtime and its state live, and the shim grouping.

mod console;
mod container;
mod events;
mod idle;
mod metrics;
mod oom;
mod options;
mod reaper;
mod rootfs;
mod runtime;
mod service;
mod stdio;
mod task;

fn main() -> std::process::ExitCode {
    service::main()
}
