//! `logs <app> [--index I]`: what the instances wrote to stdout and stderr.

use std::fs;

use crate::error::{Error, Result};
use crate::node::Node;

pub async fn logs(node: &Node, app: &str, index: Option<u32>) -> Result<()> {
    super::run::check_app(app)?;
    let all = node.instances(app).await?;
    if all.is_empty() {
        return Err(Error::app(app, "has no instances"));
    }
    let chosen: Vec<_> = all
        .iter()
        .filter(|(r, _)| index.is_none_or(|i| r.index == i))
        .collect();
    if chosen.is_empty() {
        return Err(Error::app(
            app,
            format!("has no instance with index {}", index.unwrap_or(0)),
        ));
    }
    for (rec, _) in &chosen {
        if chosen.len() > 1 {
            println!("==> {app}/{} ({}) <==", rec.index, rec.id);
        }
        let path = node.log_path(app, &rec.id);
        match fs::read(&path) {
            Ok(b) => print!("{}", String::from_utf8_lossy(&b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(())
}
