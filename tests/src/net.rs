//! What paddock's instance networking can leave on the host, for leak checks: CNI rules and
//! chains in iptables' nat table, bridges named like paddock's (`paddock*`, the tests'
//! `pdst*`) and the veths enslaved to them, and network namespaces kept alive by nsfs bind
//! mounts under a `netns` directory (where `paddock-stager` keeps them). `scripts/test.sh`
//! checks the same things around the whole suite.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Names of bridges paddock's tools make.
pub fn is_paddock_bridge(name: &str) -> bool {
    name.starts_with("paddock") || name.starts_with("pdst")
}

/// One line per leftover, sorted: `nat <rule>`, `bridge <name>`, `veth <name> master <br>`,
/// `netns <mount point>`.
pub fn leftovers() -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(o) = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
    {
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("CNI"))
                .map(|l| format!("nat {l}")),
        );
    }
    if let Ok(rd) = fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let dev = e.path();
            if dev.join("bridge").exists() && is_paddock_bridge(&name) {
                out.push(format!("bridge {name}"));
            }
            let master = fs::read_link(dev.join("master"))
                .ok()
                .and_then(|m| m.file_name().map(|n| n.to_string_lossy().into_owned()));
            if let Some(master) = master.filter(|m| is_paddock_bridge(m)) {
                out.push(format!("veth {name} master {master}"));
            }
        }
    }
    out.extend(netns_mounts().into_iter().map(|m| format!("netns {m}")));
    out.sort();
    out
}

/// Mount points of nsfs network-namespace bind mounts in a directory named `netns`
/// (`ip netns`'s `/run/netns` is someone else's and not listed).
pub fn netns_mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split_whitespace().nth(4)?;
            let fstype = right.split_whitespace().next()?;
            let parent = Path::new(point).parent()?;
            (fstype == "nsfs"
                && parent.file_name().is_some_and(|n| n == "netns")
                && parent != Path::new("/run/netns"))
            .then(|| point.to_string())
        })
        .collect()
}

/// The leftovers in `after` that were not in `before`.
pub fn new_leftovers(before: &[String], after: &[String]) -> Vec<String> {
    after
        .iter()
        .filter(|l| !before.contains(l))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names() {
        assert!(is_paddock_bridge("paddock0"));
        assert!(is_paddock_bridge("pdst123"));
        assert!(!is_paddock_bridge("docker0"));
        assert!(!is_paddock_bridge("virbr0"));
    }

    #[test]
    fn only_new_lines() {
        let before = vec!["nat a".to_string()];
        let after = vec!["nat a".to_string(), "bridge pdst1".to_string()];
        assert_eq!(new_leftovers(&before, &after), ["bridge pdst1"]);
    }
}
