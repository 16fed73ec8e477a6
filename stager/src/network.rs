//! Instance networking: a network namespace per instance (a bind-mounted nsfs file the stager
//! makes and removes), joined to a host bridge through Debian's CNI plugins (`bridge` with
//! `host-local` addresses, then `portmap` for the host port), all invoked here by the stager.
//! When the last instance of the bridge goes, so do the bridge, portmap's empty chains, the
//! address store, and `ip_forward` returns to what it was before the bridge came.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::hostports;

/// Where Debian's containernetworking-plugins live.
pub const CNI_BIN: &str = "/usr/lib/cni";
const IFNAME: &str = "eth0";
const CNI_VERSION: &str = "0.4.0";
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
/// Host ports handed to instances.
pub const PORTS: std::ops::RangeInclusive<u16> = 61000..=61999;

/// The node's instance network.
#[derive(Debug, Clone)]
pub struct Net {
    pub bridge: String,
    pub subnet: String,
    pub cni_bin: PathBuf,
    /// `<state>/net`: address store, ADD results, lock, saved ip_forward.
    pub dir: PathBuf,
    /// `<state>/netns`: one nsfs bind mount per instance.
    pub netns_dir: PathBuf,
    /// `<state>/ports`: one lease file per host port.
    pub ports_dir: PathBuf,
}

/// What ADD gave an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub ip: String,
    /// Stale mappings of its host port (left by a dead earlier run) removed first.
    pub stale_removed: Vec<String>,
}

impl Net {
    pub fn new(state: &Path, bridge: &str, subnet: &str) -> Result<Self> {
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Invalid(format!(
                "--bridge {bridge:?}: an interface name of at most 15 letters, digits, '-' or '_'"
            )));
        }
        parse_subnet(subnet)?;
        Ok(Net {
            bridge: bridge.into(),
            subnet: subnet.into(),
            cni_bin: PathBuf::from(CNI_BIN),
            dir: state.join("net"),
            netns_dir: state.join("netns"),
            ports_dir: state.join("ports"),
        })
    }

    fn name(&self) -> String {
        format!("paddock-{}", self.bridge)
    }

    fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }

    /// The plugin chain, as a CNI network configuration list.
    pub fn conflist(&self) -> Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.name(),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "dataDir": self.ipam_dir(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
            ],
        })
    }

    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }

    /// Serialises network changes node-wide: an exclusive flock on the state directory itself
    /// (it outlives every file in it, so the lock leaves nothing behind).
    fn lock(&self) -> Result<Flock<fs::File>> {
        let state = self.dir.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(state).map_err(|e| Error::io("create directory", state, e))?;
        let f = fs::File::open(state).map_err(|e| Error::io("open", state, e))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("flock", state, e.into()))
    }

    /// Leases a free host port for `id`: no lease of ours, nothing listening on it, and no
    /// other network's portmap mapping of it (a mapping does not show as a listener).
    pub fn lease_port(&self, id: &str) -> Result<u16> {
        fs::create_dir_all(&self.ports_dir)
            .map_err(|e| Error::io("create directory", &self.ports_dir, e))?;
        let foreign: Vec<u16> = hostports::list()
            .into_iter()
            .filter(|m| m.network != self.name())
            .flat_map(|m| m.ports)
            .collect();
        for port in PORTS {
            let path = self.ports_dir.join(port.to_string());
            if path.exists()
                || foreign.contains(&port)
                || std::net::TcpListener::bind(("0.0.0.0", port)).is_err()
            {
                continue;
            }
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(id.as_bytes())
                        .map_err(|e| Error::io("write", &path, e))?;
                    return Ok(port);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("create", &path, e)),
            }
        }
        Err(Error::Network {
            step: "lease a host port".into(),
            reason: format!("all ports {}-{} are taken", PORTS.start(), PORTS.end()),
        })
    }

    /// Returns a port lease, if `id` holds it.
    pub fn release_port(&self, port: u16, id: &str) {
        let path = self.ports_dir.join(port.to_string());
        if fs::read_to_string(&path).is_ok_and(|holder| holder == id) {
            let _ = fs::remove_file(&path);
        }
        let _ = fs::remove_dir(&self.ports_dir);
    }

    /// Makes the instance's network namespace (loopback up), joins it to the bridge and maps
    /// `host_port` to `port`.
    pub fn attach(&self, id: &str, host_port: u16, port: u16) -> Result<Attached> {
        let _lock = self.lock()?;
        fs::create_dir_all(&self.dir).map_err(|e| Error::io("create directory", &self.dir, e))?;
        let netns = self.netns_path(id);
        create_netns(&netns)?;
        let fresh_bridge = !self.bridge_exists();
        if fresh_bridge && !self.dir.join("ip_forward").exists() {
            if let Ok(v) = fs::read_to_string(IP_FORWARD) {
                let _ = fs::write(self.dir.join("ip_forward"), v.trim());
            }
        }
        let stale_removed = self.remove_stale_mappings(id, host_port)?;
        match self.add(id, &netns, host_port, port) {
            Ok(ip) => Ok(Attached { ip, stale_removed }),
            Err(e) => {
                let _ = self.del(id, &netns, host_port, port);
                let _ = remove_netns(&netns);
                self.sweep_if_idle();
                Err(e)
            }
        }
    }

    /// Removes the mappings of `host_port` that this network made for instances other than
    /// `id` that hold no port lease here any more: what a dead earlier run of the stager left
    /// (its process killed between ADD and DEL). Other networks' mappings are never touched.
    /// Called with the network lock held, after `id` leased the port.
    fn remove_stale_mappings(&self, id: &str, host_port: u16) -> Result<Vec<String>> {
        let leased = self.lease_holders();
        let mut removed = Vec::new();
        for m in hostports::list() {
            if m.network != self.name()
                || m.id == id
                || !m.ports.contains(&host_port)
                || leased.contains(&m.id)
            {
                continue;
            }
            hostports::remove(&m).map_err(|reason| Error::Network {
                step: format!(
                    "remove the stale mapping of host port {host_port} ({})",
                    m.id
                ),
                reason,
            })?;
            // its address, if the dead run's store still holds it
            self.release_stale_address(&m.id);
            removed.push(format!("host port {host_port} of {} ({})", m.id, m.chain));
        }
        Ok(removed)
    }

    /// The instance ids holding a port lease.
    fn lease_holders(&self) -> Vec<String> {
        fs::read_dir(&self.ports_dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Frees the host-local addresses reserved for `id` (files named after the address whose
    /// first line is the container id).
    fn release_stale_address(&self, id: &str) {
        let store = self.ipam_dir().join(self.name());
        let Ok(rd) = fs::read_dir(&store) else { return };
        for e in rd.flatten() {
            let is_addr = e
                .file_name()
                .to_string_lossy()
                .parse::<std::net::IpAddr>()
                .is_ok();
            let holder = fs::read_to_string(e.path()).unwrap_or_default();
            if is_addr && holder.lines().next().map(str::trim) == Some(id) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Undoes [`Net::attach`]; every step tolerates what is already gone.
    pub fn detach(&self, id: &str, host_port: u16, port: u16) -> Result<()> {
        let _lock = self.lock()?;
        let netns = self.netns_path(id);
        let del = self.del(id, &netns, host_port, port);
        let rm = remove_netns(&netns);
        self.sweep_if_idle();
        del.and(rm)
    }

    fn add(&self, id: &str, netns: &Path, host_port: u16, port: u16) -> Result<String> {
        let list = self.conflist();
        let mut prev: Option<Value> = None;
        for plugin in list["plugins"].as_array().into_iter().flatten() {
            let conf = plugin_conf(&list, plugin, prev.as_ref(), host_port, port);
            prev = Some(self.exec("ADD", plugin, &conf, id, netns)?);
        }
        let result = prev.unwrap_or(Value::Null);
        fs::create_dir_all(self.dir.join("results"))
            .map_err(|e| Error::io("create directory", self.dir.join("results"), e))?;
        let saved = self.dir.join("results").join(id);
        fs::write(&saved, result.to_string()).map_err(|e| Error::io("write", &saved, e))?;
        let ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .ok_or_else(|| Error::Network {
                step: format!("ADD {id}"),
                reason: format!("no address in the CNI result {result}"),
            })?;
        Ok(ip.to_string())
    }

    fn del(&self, id: &str, netns: &Path, host_port: u16, port: u16) -> Result<()> {
        let list = self.conflist();
        let saved = self.dir.join("results").join(id);
        let prev: Option<Value> = fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut first_err = None;
        let plugins: Vec<&Value> = list["plugins"].as_array().into_iter().flatten().collect();
        for plugin in plugins.into_iter().rev() {
            let conf = plugin_conf(&list, plugin, prev.as_ref(), host_port, port);
            if let Err(e) = self.exec("DEL", plugin, &conf, id, netns) {
                first_err.get_or_insert(e);
            }
        }
        let _ = fs::remove_file(&saved);
        let _ = fs::remove_dir(self.dir.join("results"));
        first_err.map_or(Ok(()), Err)
    }

    fn exec(
        &self,
        command: &str,
        plugin: &Value,
        conf: &Value,
        id: &str,
        netns: &Path,
    ) -> Result<Value> {
        let kind = plugin["type"].as_str().unwrap_or_default();
        let bin = self.cni_bin.join(kind);
        let step = || format!("{command} {kind} for {id}");
        let mut child = Command::new(&bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.cni_bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Network {
                step: step(),
                reason: format!(
                    "cannot run {}: {e} (install Debian's containernetworking-plugins)",
                    bin.display()
                ),
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(conf.to_string().as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| Error::Network {
            step: step(),
            reason: e.to_string(),
        })?;
        let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if !out.status.success() {
            let msg = parsed["msg"].as_str().map_or_else(
                || String::from_utf8_lossy(&out.stderr).trim().to_string(),
                |m| match parsed["details"].as_str() {
                    Some(d) if !d.is_empty() => format!("{m}: {d}"),
                    _ => m.to_string(),
                },
            );
            return Err(Error::Network {
                step: step(),
                reason: msg,
            });
        }
        Ok(parsed)
    }

    fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    /// With no address left in the store, removes the bridge and portmap's empty chains and
    /// restores `ip_forward`.
    fn sweep_if_idle(&self) {
        let store = self.ipam_dir().join(self.name());
        let in_use = fs::read_dir(&store)
            .map(|rd| {
                rd.filter_map(|e| e.ok()).any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .parse::<std::net::IpAddr>()
                        .is_ok()
                })
            })
            .unwrap_or(false);
        if in_use {
            return;
        }
        if self.bridge_exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .stderr(Stdio::null())
                .status();
        }
        remove_idle_portmap_chains();
        if let Ok(v) = fs::read_to_string(self.dir.join("ip_forward")) {
            let _ = fs::write(IP_FORWARD, v.trim());
        }
        let _ = fs::remove_dir_all(self.ipam_dir());
        let _ = fs::remove_file(self.dir.join("ip_forward"));
        let _ = fs::remove_dir(&self.netns_dir);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// One plugin's stdin: the list's name and version, `prevResult` of the one before, and the
/// port mapping for plugins that ask for it.
fn plugin_conf(
    list: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    host_port: u16,
    port: u16,
) -> Value {
    let mut conf = plugin.clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf["name"] = list["name"].clone();
    if let Some(prev) = prev {
        if plugin["type"] != "bridge" {
            conf["prevResult"] = prev.clone();
        }
    }
    if plugin["capabilities"]["portMappings"] == true {
        conf["runtimeConfig"] = json!({
            "portMappings": [
                {"hostPort": host_port, "containerPort": port, "protocol": "tcp"}
            ]
        });
    }
    conf
}

fn parse_subnet(subnet: &str) -> Result<()> {
    let bad = || {
        Error::Invalid(format!(
            "--subnet {subnet:?}: an IPv4 network such as 10.89.0.0/24"
        ))
    };
    let (addr, len) = subnet.split_once('/').ok_or_else(bad)?;
    addr.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?;
    match len.parse::<u8>() {
        Ok(n) if (8..=29).contains(&n) => Ok(()),
        _ => Err(bad()),
    }
}

/// A new network namespace with its loopback up, kept alive by a bind mount on `path`.
fn create_netns(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
    fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) changes only the calling thread: do it on a thread of its own
    let made = std::thread::spawn(move || -> Result<()> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::Network {
            step: "unshare(CLONE_NEWNET)".into(),
            reason: e.to_string(),
        })?;
        // a child forked from this thread starts in its network namespace
        let out = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .output()
            .map_err(|e| Error::io("run", "ip link set lo up", e))?;
        if !out.status.success() {
            return Err(Error::Command {
                what: "ip link set lo up".into(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
            });
        }
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::io("bind-mount netns on", &target, e.into()))
    })
    .join()
    .unwrap_or_else(|_| {
        Err(Error::Network {
            step: "create netns".into(),
            reason: "thread panicked".into(),
        })
    });
    if made.is_err() {
        let _ = fs::remove_file(path);
    }
    made
}

fn remove_netns(path: &Path) -> Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::io("unmount netns", path, e.into())),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// portmap leaves its top-level nat chains behind after the last DEL; remove them (and the
/// rules jumping to them) once no mapping is left in them.
fn remove_idle_portmap_chains() {
    let rules = |chain: &str| -> Option<Vec<String>> {
        let out = Command::new("iptables")
            .args(["-w", "-t", "nat", "-S", chain])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status.success().then(|| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .map(str::to_string)
                .collect()
        })
    };
    let Some(dnat) = rules("CNI-HOSTPORT-DNAT") else {
        return;
    };
    if !dnat.is_empty() {
        return;
    }
    for parent in ["PREROUTING", "OUTPUT", "POSTROUTING"] {
        for rule in rules(parent).unwrap_or_default() {
            if rule.contains("-j CNI-HOSTPORT-") {
                let mut args = vec!["-w".to_string(), "-t".into(), "nat".into(), "-D".into()];
                args.extend(shell_words(&rule).into_iter().skip(1));
                let _ = Command::new("iptables")
                    .args(&args)
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    for chain in [
        "CNI-HOSTPORT-DNAT",
        "CNI-HOSTPORT-SETMARK",
        "CNI-HOSTPORT-MASQ",
    ] {
        for op in ["-F", "-X"] {
            let _ = Command::new("iptables")
                .args(["-w", "-t", "nat", op, chain])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Splits an `iptables -S` line into arguments as iptables prints them: double quotes group,
/// a backslash escapes the next character (`\"` inside a quoted comment).
pub(crate) fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    cur.push(next);
                }
                any = true;
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn conflist_and_plugin_conf() {
        let net = Net::new(Path::new("/run/x"), "paddock0", "10.89.0.0/24").unwrap();
        let list = net.conflist();
        assert_eq!(list["plugins"][0]["bridge"], "paddock0");
        assert_eq!(list["plugins"][0]["ipam"]["dataDir"], "/run/x/net/ipam");
        let prev = json!({"ips": [{"address": "10.89.0.2/24"}]});
        let pm = plugin_conf(&list, &list["plugins"][1], Some(&prev), 61000, 8080);
        assert_eq!(pm["runtimeConfig"]["portMappings"][0]["hostPort"], 61000);
        assert_eq!(
            pm["runtimeConfig"]["portMappings"][0]["containerPort"],
            8080
        );
        assert_eq!(pm["prevResult"], prev);
        assert_eq!(pm["name"], "paddock-paddock0");
        let br = plugin_conf(&list, &list["plugins"][0], None, 61000, 8080);
        assert!(br.get("runtimeConfig").is_none() && br.get("prevResult").is_none());
    }

    #[test]
    fn bad_network_options() {
        assert!(Net::new(Path::new("/r"), "much-too-long-bridge-name", "10.0.0.0/24").is_err());
        assert!(Net::new(Path::new("/r"), "br 0", "10.0.0.0/24").is_err());
        for s in ["10.0.0.0", "10.0.0/24", "10.0.0.0/33", "x/24"] {
            assert!(Net::new(Path::new("/r"), "br0", s).is_err(), "{s}");
        }
    }

    #[test]
    fn iptables_words() {
        assert_eq!(
            shell_words(
                r#"-A OUTPUT -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-DNAT"#
            ),
            [
                "-A",
                "OUTPUT",
                "-m",
                "comment",
                "--comment",
                "CNI portfwd requiring masquerade",
                "-j",
                "CNI-HOSTPORT-DNAT"
            ]
        );
        assert_eq!(
            shell_words(r#"-m comment --comment "dnat name: \"n\" id: \"a b\"" -j X"#),
            [
                "-m",
                "comment",
                "--comment",
                r#"dnat name: "n" id: "a b""#,
                "-j",
                "X"
            ]
        );
    }
}
