//! The host-port mappings portmap made (rules of `CNI-HOSTPORT-DNAT` in the nat table), read
//! back so that the stager can tell its own from other networks' and remove the ones a dead
//! earlier run of it left behind. A stale mapping of a port shadows the new one (iptables takes
//! the first match): connections to the port would go to the dead instance's address.
//!
//! portmap writes one rule per container:
//! `-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"NET\" id: \"ID\"" -m multiport
//! --dports P[,P…] -j CNI-DN-…`, and the chain `CNI-DN-…` holds that container's DNAT rules.

use std::process::{Command, Stdio};

use crate::network::shell_words;

/// portmap's top-level DNAT chain.
pub const DNAT_CHAIN: &str = "CNI-HOSTPORT-DNAT";
/// The prefix of portmap's per-container chains.
const PER_CONTAINER: &str = "CNI-DN-";

/// One container's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The CNI network that made it.
    pub network: String,
    /// The container id it was made for.
    pub id: String,
    pub ports: Vec<u16>,
    /// Its per-container chain.
    pub chain: String,
    /// The rule as `iptables -S` prints it.
    pub rule: String,
}

/// Parses one `iptables -S CNI-HOSTPORT-DNAT` line; `None` for anything that is not a
/// portmap container rule.
pub fn parse(line: &str) -> Option<Mapping> {
    let words = shell_words(line);
    if words.first().map(String::as_str) != Some("-A")
        || words.get(1).map(String::as_str) != Some(DNAT_CHAIN)
    {
        return None;
    }
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| w == flag)
            .and_then(|i| words.get(i + 1))
            .cloned()
    };
    let comment = after("--comment")?;
    // dnat name: "NET" id: "ID"
    let rest = comment.strip_prefix("dnat name: \"")?;
    let (network, rest) = rest.split_once("\" id: \"")?;
    let id = rest.strip_suffix('"')?;
    let chain = after("-j").filter(|c| c.starts_with(PER_CONTAINER))?;
    let ports = after("--dports")
        .or_else(|| after("--dport"))?
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    Some(Mapping {
        network: network.to_string(),
        id: id.to_string(),
        ports,
        chain,
        rule: line.to_string(),
    })
}

/// The mappings present now (none when portmap never ran or iptables cannot be read).
pub fn list() -> Vec<Mapping> {
    let Ok(out) = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S", DNAT_CHAIN])
        .stderr(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse)
        .collect()
}

/// Removes a mapping: its rule, then its per-container chain. Errors name the step.
pub fn remove(m: &Mapping) -> Result<(), String> {
    let mut args = vec!["-w".to_string(), "-t".into(), "nat".into(), "-D".into()];
    args.extend(shell_words(&m.rule).into_iter().skip(1));
    iptables(&args)?;
    for op in ["-F", "-X"] {
        iptables(&[
            "-w".to_string(),
            "-t".into(),
            "nat".into(),
            op.into(),
            m.chain.clone(),
        ])?;
    }
    Ok(())
}

fn iptables(args: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(args)
        .output()
        .map_err(|e| format!("iptables {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const RULE: &str = r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "dnat name: \"paddock-pdst1\" id: \"hello-0-0123abcd\"" -m multiport --dports 61000 -j CNI-DN-075f7b2fc5a0e5a4651a1"#;

    #[test]
    fn portmap_rule() {
        let m = parse(RULE).unwrap();
        assert_eq!(m.network, "paddock-pdst1");
        assert_eq!(m.id, "hello-0-0123abcd");
        assert_eq!(m.ports, [61000]);
        assert_eq!(m.chain, "CNI-DN-075f7b2fc5a0e5a4651a1");
        let two = RULE.replace("--dports 61000", "--dports 61000,61002");
        assert_eq!(parse(&two).unwrap().ports, [61000, 61002]);
    }

    #[test]
    fn other_rules_are_not_mappings() {
        for line in [
            "-N CNI-HOSTPORT-DNAT",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT",
            "-A CNI-HOSTPORT-DNAT -p tcp --dport 80 -j DNAT --to-destination 10.0.0.2:80",
            r#"-A CNI-HOSTPORT-DNAT -p tcp -m comment --comment "something else" -m multiport --dports 1 -j CNI-DN-x"#,
        ] {
            assert_eq!(parse(line), None, "{line}");
        }
    }
}
