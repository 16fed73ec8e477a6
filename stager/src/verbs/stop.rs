//! `stop <app>`: the watcher first (so that no exit is taken for a crash), then every instance
//! torn down, then the app's log and state directories.

use std::fs;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::node::Node;

use super::{progress, watch};

pub async fn stop(node: &Node, app: &str, grace: Duration) -> Result<()> {
    super::run::check_app(app)?;
    watch::stop(node, app);
    let all = node.instances(app).await?;
    if all.is_empty() {
        return Err(Error::app(app, "has no instances"));
    }
    let mut first = None;
    for (rec, _) in &all {
        progress(&format!(
            "stopping {app} instance {} ({})",
            rec.index, rec.id
        ));
        if let Err(e) = node.destroy(rec, grace).await {
            first.get_or_insert(e);
        }
    }
    let _ = fs::remove_dir_all(node.app_state(app));
    // the namespace's and the apps' directories go with their last app
    if let Some(ns_dir) = node.app_state(app).parent() {
        let _ = fs::remove_dir(ns_dir);
        if let Some(apps) = ns_dir.parent() {
            let _ = fs::remove_dir(apps);
        }
    }
    progress(&format!("{app}: {} instance(s) stopped", all.len()));
    first.map_or(Ok(()), Err)
}
