//! `paddock`: runc's command line over paddock's sandbox engine.

mod log;
mod spec;
mod wait;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use liboci_cli::{CommonCmd, GlobalOpts, StandardCmd};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use paddock_runtime::error::chain;
use paddock_runtime::sandbox::{self, CreateOptions, ExecOptions};
use paddock_runtime::{Error, DEFAULT_ROOT};

#[derive(Parser, Debug)]
#[command(
    name = "paddock",
    version,
    about = "paddock: sandboxes for untrusted app instances (runc-compatible)"
)]
struct Opts {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    #[command(flatten)]
    Standard(Box<StandardCmd>),
    #[command(flatten)]
    Common(Box<CommonCmd>),
}

fn main() -> ExitCode {
    let opts = match Opts::try_parse() {
        Ok(o) => o,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line, as for every other error; `--help` has the details.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "paddock: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(1);
        }
    };
    let format = match opts.global.log_format.as_deref() {
        None | Some("text") => log::Format::Text,
        Some("json") => log::Format::Json,
        Some(other) => {
            eprintln!("paddock: unknown --log-format {other:?} (text or json)");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = log::init(opts.global.log.as_deref(), format, opts.global.debug) {
        eprintln!(
            "paddock: open log {}: {e}",
            opts.global
                .log
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
        );
        return ExitCode::from(1);
    }
    let root = opts
        .global
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    match run(&root, opts.global.systemd_cgroup, opts.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let line = chain(e.as_ref());
            tracing::error!("{line}");
            eprintln!("paddock: {line}");
            ExitCode::from(1)
        }
    }
}

type CliResult = Result<u8, Box<dyn std::error::Error>>;

fn run(root: &Path, systemd: bool, command: Command) -> CliResult {
    match command {
        Command::Standard(cmd) => match *cmd {
            StandardCmd::Create(c) => {
                let opts = CreateOptions {
                    bundle: c.bundle,
                    pid_file: c.pid_file,
                    console_socket: c.console_socket,
                    preserve_fds: c.preserve_fds,
                    no_pivot: c.no_pivot,
                    systemd_cgroup: systemd,
                    detach: true,
                };
                sandbox::create(root, &c.container_id, &opts)?;
                Ok(0)
            }
            StandardCmd::Start(s) => {
                sandbox::start(root, &s.container_id)?;
                Ok(0)
            }
            StandardCmd::State(s) => {
                let st = sandbox::state(root, &s.container_id)?;
                println!("{}", serde_json::to_string_pretty(&st)?);
                Ok(0)
            }
            StandardCmd::Kill(k) => {
                sandbox::kill(root, &k.container_id, &k.signal, k.all)?;
                Ok(0)
            }
            StandardCmd::Delete(d) => {
                sandbox::delete(root, &d.container_id, d.force)?;
                Ok(0)
            }
        },
        Command::Common(cmd) => common(root, systemd, *cmd),
    }
}

fn common(root: &Path, systemd: bool, cmd: CommonCmd) -> CliResult {
    match cmd {
        CommonCmd::Run(r) => {
            let opts = CreateOptions {
                bundle: r.bundle,
                pid_file: r.pid_file,
                console_socket: r.console_socket,
                preserve_fds: r.preserve_fds,
                no_pivot: r.no_pivot,
                systemd_cgroup: systemd,
                detach: r.detach,
            };
            let id = r.container_id;
            if r.detach {
                sandbox::create(root, &id, &opts)?;
                if let Err(e) = sandbox::start(root, &id) {
                    let _ = sandbox::delete(root, &id, true);
                    return Err(e.into());
                }
                return Ok(0);
            }
            wait::become_subreaper()?;
            let pid = sandbox::create(root, &id, &opts)?;
            let forward = wait::Forwarder::install()?;
            if let Err(e) = sandbox::start(root, &id) {
                let _ = sandbox::delete(root, &id, true);
                return Err(e.into());
            }
            let status = forward.wait_for(pid);
            if !r.keep {
                sandbox::delete(root, &id, true)?;
            }
            Ok(status?)
        }
        CommonCmd::Exec(x) => {
            let env: HashMap<String, String> = x.env.into_iter().collect();
            let (user, group) = match x.user {
                Some((u, g)) => (Some(u), g),
                None => (None, None),
            };
            let opts = ExecOptions {
                process: x.process,
                args: x.command,
                env,
                cwd: x.cwd,
                user,
                group,
                additional_gids: x.additional_gids,
                capabilities: x.cap,
                no_new_privs: x.no_new_privs,
                console_socket: x.console_socket,
                pid_file: x.pid_file,
                preserve_fds: x.preserve_fds,
                detach: x.detach,
            };
            if x.detach {
                sandbox::exec(root, &x.container_id, &opts)?;
                return Ok(0);
            }
            wait::become_subreaper()?;
            let pid = sandbox::exec(root, &x.container_id, &opts)?;
            let forward = wait::Forwarder::install()?;
            Ok(forward.wait_for(pid)?)
        }
        CommonCmd::Ps(p) => {
            let pids = sandbox::pids(root, &p.container_id)?;
            if p.format == "json" {
                println!("{}", serde_json::to_string(&pids)?);
                return Ok(0);
            }
            if p.format != "table" {
                return Err(Error::Invalid(format!("unknown ps format {:?}", p.format)).into());
            }
            print_ps_table(&pids, &p.ps_options)?;
            Ok(0)
        }
        CommonCmd::List(l) => {
            let all = sandbox::list(root)?;
            if l.quiet {
                for s in &all {
                    println!("{}", s.id);
                }
            } else if l.format == "json" {
                println!("{}", serde_json::to_string(&all)?);
            } else if l.format == "table" {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<32} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for s in &all {
                    println!(
                        "{:<24} {:<8} {:<10} {:<40} {:<32} {}",
                        s.id,
                        s.pid,
                        s.status,
                        s.bundle.display(),
                        s.created,
                        if s.owner.is_empty() { "root" } else { &s.owner }
                    );
                }
            } else {
                return Err(Error::Invalid(format!("unknown list format {:?}", l.format)).into());
            }
            Ok(0)
        }
        CommonCmd::Pause(p) => {
            sandbox::pause(root, &p.container_id)?;
            Ok(0)
        }
        CommonCmd::Resume(p) => {
            sandbox::resume(root, &p.container_id)?;
            Ok(0)
        }
        CommonCmd::Events(e) => {
            if e.interval == 0 {
                return Err(Error::Invalid("--interval must be at least 1s".into()).into());
            }
            let mut out = std::io::stdout().lock();
            sandbox::events(
                root,
                &e.container_id,
                Duration::from_secs(u64::from(e.interval)),
                e.stats,
                &mut out,
            )?;
            Ok(0)
        }
        CommonCmd::Update(u) => {
            let resources = match &u.resources {
                Some(path) => read_resources(path)?,
                None => resources_from_flags(&u)?,
            };
            sandbox::update(root, &u.container_id, &resources)?;
            Ok(0)
        }
        CommonCmd::Features(_) => {
            println!("{}", serde_json::to_string_pretty(&spec::features())?);
            Ok(0)
        }
        CommonCmd::Spec(s) => {
            let dir = s.bundle.unwrap_or_else(|| PathBuf::from("."));
            let path = dir.join("config.json");
            if path.exists() {
                return Err(Error::Invalid(format!("{} already exists", path.display())).into());
            }
            let doc = serde_json::to_string_pretty(&spec::default_spec(s.rootless))?;
            std::fs::write(&path, doc + "\n")
                .map_err(|e| format!("write {}: {e}", path.display()))?;
            Ok(0)
        }
        CommonCmd::Checkpointt(c) => Err(Error::Invalid(format!(
            "checkpoint of sandbox {}: not supported by paddock",
            c.container_id
        ))
        .into()),
    }
}

fn read_resources(path: &Path) -> Result<LinuxResources, Box<dyn std::error::Error>> {
    let mut data = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut data)
            .map_err(|e| format!("read resources from stdin: {e}"))?;
    } else {
        data = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    }
    serde_json::from_slice(&data)
        .map_err(|e| format!("resources {}: malformed: {e}", path.display()).into())
}

fn resources_from_flags(
    u: &liboci_cli::Update,
) -> Result<LinuxResources, Box<dyn std::error::Error>> {
    let mut b = LinuxResourcesBuilder::default();
    if u.memory.is_some() || u.memory_swap.is_some() || u.memory_reservation.is_some() {
        let mut m = LinuxMemoryBuilder::default();
        if let Some(v) = u.memory {
            m = m.limit(i64::try_from(v).map_err(|_| format!("--memory {v}: too large"))?);
        }
        if let Some(v) = u.memory_swap {
            m = m.swap(v);
        }
        if let Some(v) = u.memory_reservation {
            m = m.reservation(
                i64::try_from(v).map_err(|_| format!("--memory-reservation {v}: too large"))?,
            );
        }
        b = b.memory(m.build()?);
    }
    if u.cpu_share.is_some()
        || u.cpu_quota.is_some()
        || u.cpu_period.is_some()
        || u.cpuset_cpus.is_some()
        || u.cpuset_mems.is_some()
    {
        let mut c = LinuxCpuBuilder::default();
        if let Some(v) = u.cpu_share {
            c = c.shares(v);
        }
        if let Some(v) = u.cpu_quota {
            c = c.quota(i64::try_from(v).map_err(|_| format!("--cpu-quota {v}: too large"))?);
        }
        if let Some(v) = u.cpu_period {
            c = c.period(v);
        }
        if let Some(v) = &u.cpuset_cpus {
            c = c.cpus(v.clone());
        }
        if let Some(v) = &u.cpuset_mems {
            c = c.mems(v.clone());
        }
        b = b.cpu(c.build()?);
    }
    if let Some(v) = u.pids_limit {
        b = b.pids(LinuxPidsBuilder::default().limit(v).build()?);
    }
    Ok(b.build()?)
}

fn print_ps_table(pids: &[i32], ps_options: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = if ps_options.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_options.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| format!("run ps: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Ok(());
    };
    let Some(col) = header.split_whitespace().position(|h| h == "PID") else {
        return Err("ps output has no PID column".into());
    };
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}
