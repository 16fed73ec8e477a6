//! `paddock-stager`: a DEA-style stager. `stage` turns an app directory into a droplet on the
//! busybox stack; `run`, `ps`, `logs`, `scale`, `restart --rolling` and `stop` manage its
//! instances through containerd's API with the paddock runtime.

mod ctd;
mod detect;
mod droplet;
mod error;
mod hostports;
mod image;
mod layer;
mod limits;
mod metrics;
mod network;
mod node;
mod record;
mod spec;
mod stack;
mod table;
mod verbs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::Result;
use crate::limits::Limits;
use crate::node::{Node, Settings};

#[derive(Parser)]
#[command(
    name = "paddock-stager",
    version,
    about = "Stage apps into droplets and run their instances through containerd with the paddock runtime"
)]
struct Cli {
    /// containerd's socket
    #[arg(long, global = true, env = "CONTAINERD_ADDRESS", default_value = ctd::DEFAULT_ADDRESS)]
    address: PathBuf,
    /// containerd namespace of the instances
    #[arg(
        long,
        global = true,
        env = "CONTAINERD_NAMESPACE",
        default_value = "paddock"
    )]
    namespace: String,
    /// droplets, the stack and instance logs
    #[arg(
        long,
        global = true,
        env = "PADDOCK_STAGER_DATA",
        default_value = "/var/lib/paddock"
    )]
    data_dir: PathBuf,
    /// network namespaces, address store, port leases, watcher state
    #[arg(
        long,
        global = true,
        env = "PADDOCK_STAGER_STATE",
        default_value = "/run/paddock-stager"
    )]
    state_dir: PathBuf,
    /// containerd runtime of the instances
    #[arg(
        long,
        global = true,
        env = "PADDOCK_STAGER_RUNTIME",
        default_value = "io.containerd.paddock.v2"
    )]
    runtime: String,
    /// the runc-compatible binary the shim runs (its BinaryName option; paddock)
    #[arg(long, global = true, env = "PADDOCK_STAGER_RUNTIME_BINARY")]
    runtime_binary: Option<PathBuf>,
    /// that binary's state root (the shim's Root option)
    #[arg(long, global = true)]
    runtime_root: Option<PathBuf>,
    /// host bridge the instances join
    #[arg(long, global = true, default_value = "paddock0")]
    bridge: String,
    /// IPv4 network of the bridge
    #[arg(long, global = true, default_value = "10.89.0.0/24")]
    subnet: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Pack an app directory into a droplet; prints the droplet id last
    Stage {
        dir: PathBuf,
        /// start command (else the Procfile's web: line, else an executable ./start)
        #[arg(long)]
        command: Option<String>,
    },
    /// Launch N instances of a droplet
    Run {
        droplet: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1)]
        instances: u32,
        #[arg(long, default_value = "128M")]
        memory: String,
        #[arg(long, default_value = "256M")]
        disk: String,
        /// equal | cap
        #[arg(long, default_value = "equal")]
        cpu: String,
        /// seconds an instance has to open its port
        #[arg(long, default_value_t = 30)]
        health_timeout: u64,
    },
    /// The app's instances with live usage
    Ps {
        app: String,
        /// table | json
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// What the app's instances wrote
    Logs {
        app: String,
        #[arg(long)]
        index: Option<u32>,
    },
    /// Tear down every instance of the app
    Stop {
        app: String,
        /// seconds between SIGTERM and SIGKILL
        #[arg(long, default_value_t = 5)]
        grace: u64,
    },
    /// Change the number of instances
    Scale {
        app: String,
        instances: u32,
        #[arg(long, default_value_t = 30)]
        health_timeout: u64,
        #[arg(long, default_value_t = 5)]
        grace: u64,
    },
    /// Replace every instance, one at a time, never dropping to zero healthy instances
    Restart {
        app: String,
        #[arg(long)]
        rolling: bool,
        #[arg(long, default_value_t = 30)]
        health_timeout: u64,
        /// milliseconds an old instance stays up, marked stopping, before it is stopped
        #[arg(long, default_value_t = 1000)]
        drain_ms: u64,
        #[arg(long, default_value_t = 5)]
        grace: u64,
    },
    /// (internal) follow the app's events: count OOM kills, restart crashed instances
    #[command(hide = true)]
    Watch { app: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paddock-stager: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("paddock-stager: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let settings = Settings {
        address: cli.address,
        namespace: cli.namespace,
        data: cli.data_dir,
        state: cli.state_dir,
        runtime: cli.runtime,
        runtime_binary: cli.runtime_binary,
        runtime_root: cli.runtime_root,
        bridge: cli.bridge,
        subnet: cli.subnet,
    };
    // check what needs no containerd before connecting
    let limits = match &cli.cmd {
        Cmd::Run {
            memory, disk, cpu, ..
        } => Some(Limits::parse(memory, disk, cpu)?),
        _ => None,
    };
    if let Cmd::Ps { format, .. } = &cli.cmd {
        if format != "table" && format != "json" {
            return Err(error::Error::Invalid(format!(
                "--format {format:?}: table or json"
            )));
        }
    }
    if let Cmd::Restart { rolling: false, .. } = &cli.cmd {
        return Err(error::Error::Invalid(
            "restart needs --rolling (the only kind of restart there is)".into(),
        ));
    }
    if let Cmd::Stage { dir, command } = &cli.cmd {
        // the start command is checked before containerd is asked for anything
        detect::start_command(dir, command.as_deref())?;
    }
    let mut node = Node::connect(settings).await?;
    match cli.cmd {
        Cmd::Stage { dir, command } => {
            let id = verbs::stage::stage(&mut node, &dir, command.as_deref()).await?;
            println!("{id}");
            Ok(())
        }
        Cmd::Run {
            droplet,
            name,
            instances,
            health_timeout,
            ..
        } => {
            let Some(limits) = limits else {
                return Ok(());
            };
            verbs::run::run(
                &mut node,
                &verbs::run::RunOptions {
                    droplet: &droplet,
                    app: &name,
                    instances,
                    limits,
                    health_timeout: Duration::from_secs(health_timeout),
                },
            )
            .await
        }
        Cmd::Ps { app, format } => verbs::ps::ps(&node, &app, format == "json").await,
        Cmd::Logs { app, index } => verbs::logs::logs(&node, &app, index).await,
        Cmd::Stop { app, grace } => {
            verbs::stop::stop(&node, &app, Duration::from_secs(grace)).await
        }
        Cmd::Scale {
            app,
            instances,
            health_timeout,
            grace,
        } => {
            verbs::scale::scale(
                &mut node,
                &app,
                instances,
                Duration::from_secs(health_timeout),
                Duration::from_secs(grace),
            )
            .await
        }
        Cmd::Restart {
            app,
            health_timeout,
            drain_ms,
            grace,
            ..
        } => {
            verbs::restart::rolling(
                &mut node,
                &app,
                Duration::from_secs(health_timeout),
                Duration::from_millis(drain_ms),
                Duration::from_secs(grace),
            )
            .await
        }
        Cmd::Watch { app } => verbs::watch::watch(&node, &app).await,
    }
}
