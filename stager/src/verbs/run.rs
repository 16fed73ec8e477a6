//! `run <droplet> --name APP --instances N …`: import the droplet, launch N instances, wait
//! for each port, start the app's watcher and print the table. Any failure tears down every
//! instance this run made and names the reason.

use std::time::Duration;

use crate::droplet;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::node::Node;
use crate::record::{self, Record};

use super::{progress, watch};

pub struct RunOptions<'a> {
    pub droplet: &'a str,
    pub app: &'a str,
    pub instances: u32,
    pub limits: Limits,
    pub health_timeout: Duration,
}

pub const MAX_INSTANCES: u32 = 64;

pub fn check_app(app: &str) -> Result<()> {
    if record::valid_app(app) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "app name {app:?}: 1 to 40 lowercase letters, digits or '-', starting with a letter or digit"
        )))
    }
}

pub fn check_count(n: u32) -> Result<()> {
    if (1..=MAX_INSTANCES).contains(&n) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "--instances {n}: between 1 and {MAX_INSTANCES}"
        )))
    }
}

pub async fn run(node: &mut Node, o: &RunOptions<'_>) -> Result<()> {
    check_app(o.app)?;
    check_count(o.instances)?;
    let d = droplet::find(&node.droplets_dir(), o.droplet)?;
    let existing = node.instances(o.app).await?;
    if !existing.is_empty() {
        return Err(Error::app(
            o.app,
            format!(
                "already has {} instance(s); use scale, restart or stop",
                existing.len()
            ),
        ));
    }
    node.ctd.take_lease().await?;
    let result = launch_all(node, o, &d).await;
    node.ctd.release_lease().await;
    result?;
    watch::ensure(node, o.app)?;
    let rows = node.rows(o.app).await?;
    print!("{}", crate::table::render(&rows));
    Ok(())
}

async fn launch_all(node: &Node, o: &RunOptions<'_>, d: &droplet::Droplet) -> Result<()> {
    progress(&format!(
        "importing droplet {} into containerd",
        &d.id[..12]
    ));
    let chain = node.ensure_droplet(d, &mut progress).await?;
    let mut launched: Vec<Record> = Vec::new();
    let mut outcome = Ok(());
    for index in 0..o.instances {
        progress(&format!(
            "launching {} instance {index} (runtime {})",
            o.app, node.s.runtime
        ));
        match node.launch(o.app, index, d, &chain, o.limits).await {
            Ok(rec) => {
                progress(&format!(
                    "instance {index}: {} at {} (host port {} -> {})",
                    rec.id, rec.ip, rec.host_port, rec.port
                ));
                launched.push(rec);
            }
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_ok() {
        for rec in &launched {
            progress(&format!(
                "waiting for instance {} to answer on host port {}",
                rec.index, rec.host_port
            ));
            if let Err(e) = node.wait_healthy(rec, o.health_timeout).await {
                outcome = Err(e);
                break;
            }
        }
    }
    if outcome.is_err() {
        for rec in &launched {
            progress(&format!("tearing down {}", rec.id));
            let _ = node.destroy(rec, Duration::ZERO).await;
        }
    }
    outcome
}
