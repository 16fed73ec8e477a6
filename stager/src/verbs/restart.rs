//! `restart <app> --rolling`: for each instance in turn, launch its replacement (same index,
//! droplet and limits), wait until it answers, mark the old one stopping, let routers drain it,
//! then stop it — so the app never has zero healthy instances.

use std::time::Duration;

use crate::droplet;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::record::{self, Desired, Record};

use super::{progress, watch};

pub async fn rolling(
    node: &mut Node,
    app: &str,
    health: Duration,
    drain: Duration,
    grace: Duration,
) -> Result<()> {
    super::run::check_app(app)?;
    let current: Vec<Record> = node.records(app).await?;
    if current.is_empty() {
        return Err(Error::app(app, "has no instances"));
    }
    node.ctd.take_lease().await?;
    let result = replace_all(node, app, &current, health, drain, grace).await;
    node.ctd.release_lease().await;
    result?;
    watch::ensure(node, app)?;
    print!("{}", crate::table::render(&node.rows(app).await?));
    Ok(())
}

async fn replace_all(
    node: &Node,
    app: &str,
    current: &[Record],
    health: Duration,
    drain: Duration,
    grace: Duration,
) -> Result<()> {
    for old in current {
        let d = droplet::find(&node.droplets_dir(), &old.droplet)?;
        let chain = node.ensure_droplet(&d, &mut progress).await?;
        progress(&format!(
            "replacing {app} instance {} ({})",
            old.index, old.id
        ));
        let new = node.launch(app, old.index, &d, &chain, old.limits).await?;
        if let Err(e) = node.wait_healthy(&new, health).await {
            progress(&format!(
                "tearing down {}; {} keeps running",
                new.id, old.id
            ));
            let _ = node.destroy(&new, Duration::ZERO).await;
            return Err(e);
        }
        progress(&format!(
            "{} answers on host port {}; draining {} for {:?}",
            new.id, new.host_port, old.id, drain
        ));
        node.ctd
            .set_labels(
                &old.id,
                &[(record::DESIRED, Desired::Stopped.as_str().into())],
            )
            .await?;
        tokio::time::sleep(drain).await;
        node.destroy(old, grace).await?;
    }
    Ok(())
}
