//! `ps <app>`: each instance's state and live usage from containerd's metrics.

use serde_json::json;

use crate::error::Result;
use crate::node::Node;

pub async fn ps(node: &Node, app: &str, json_format: bool) -> Result<()> {
    super::run::check_app(app)?;
    let rows = node.rows(app).await?;
    if json_format {
        println!("{}", json!(rows));
    } else {
        print!("{}", crate::table::render(&rows));
    }
    Ok(())
}
