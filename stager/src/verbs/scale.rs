//! `scale <app> N`: launch the missing instances (lowest free indices, each waited for) or
//! tear down the highest ones.

use std::time::Duration;

use crate::droplet;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::record::Record;

use super::{progress, watch};

pub async fn scale(
    node: &mut Node,
    app: &str,
    target: u32,
    health: Duration,
    grace: Duration,
) -> Result<()> {
    super::run::check_app(app)?;
    super::run::check_count(target)?;
    let current: Vec<Record> = node.records(app).await?;
    let Some(model) = current.first().cloned() else {
        return Err(Error::app(app, "has no instances; start it with run"));
    };
    let have = u32::try_from(current.len()).unwrap_or(u32::MAX);
    if target > have {
        let d = droplet::find(&node.droplets_dir(), &model.droplet)?;
        node.ctd.take_lease().await?;
        let result = grow(node, app, &current, target - have, &d, &model, health).await;
        node.ctd.release_lease().await;
        result?;
    } else {
        let mut by_index = current.clone();
        by_index.sort_by_key(|r| std::cmp::Reverse(r.index));
        for rec in by_index.iter().take((have - target) as usize) {
            progress(&format!(
                "stopping {app} instance {} ({})",
                rec.index, rec.id
            ));
            node.destroy(rec, grace).await?;
        }
    }
    watch::ensure(node, app)?;
    print!("{}", crate::table::render(&node.rows(app).await?));
    Ok(())
}

async fn grow(
    node: &Node,
    app: &str,
    current: &[Record],
    more: u32,
    d: &droplet::Droplet,
    model: &Record,
    health: Duration,
) -> Result<()> {
    let chain = node.ensure_droplet(d, &mut progress).await?;
    let mut used: Vec<u32> = current.iter().map(|r| r.index).collect();
    for _ in 0..more {
        let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        used.push(index);
        progress(&format!("launching {app} instance {index}"));
        let rec = node.launch(app, index, d, &chain, model.limits).await?;
        if let Err(e) = node.wait_healthy(&rec, health).await {
            progress(&format!("tearing down {}", rec.id));
            let _ = node.destroy(&rec, Duration::ZERO).await;
            return Err(e);
        }
    }
    Ok(())
}
