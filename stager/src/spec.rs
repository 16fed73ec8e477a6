//! The OCI runtime spec of one instance (what containerd hands the runtime), built from the
//! droplet, the limits and the instance's identity. Pure: unit-tested without containerd.
//!
//! No `linux.cgroupsPath`: paddock then places the instance in `/paddock/<app>/<id>`, the
//! two-level tenant layout of DESIGN.md, from the `io.paddock.app` annotation.

use serde_json::{json, Value};

use crate::detect::APP_DIR;
#[cfg(test)]
use crate::limits::CpuMode;
use crate::limits::Limits;

/// The port every instance listens on inside its own network namespace (DEA's choice).
pub const CONTAINER_PORT: u16 = 8080;
/// Where the instance's disk quota volume is mounted, and its `HOME`.
pub const HOME: &str = "/home/vcap";
/// The pids limit of an instance.
pub const PIDS: u32 = 512;
/// The type URL containerd expects for an OCI spec.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// Everything that makes one instance.
#[derive(Debug, Clone)]
pub struct Instance<'a> {
    pub app: &'a str,
    pub index: u32,
    pub guid: &'a str,
    pub droplet: &'a str,
    pub command: &'a str,
    pub limits: Limits,
    pub netns: &'a str,
    pub host_port: u16,
}

/// The `VCAP_APPLICATION` document an instance finds in its environment.
pub fn vcap_application(i: &Instance) -> Value {
    json!({
        "application_name": i.app,
        "name": i.app,
        "application_id": i.droplet,
        "instance_index": i.index,
        "instance_id": i.guid,
        "port": CONTAINER_PORT,
        "host": "0.0.0.0",
        "host_port": i.host_port,
        "limits": {
            "mem": i.limits.memory >> 20,
            "disk": i.limits.disk >> 20,
            "fds": 1024,
        },
        "droplet": i.droplet,
    })
}

pub fn env(i: &Instance) -> Vec<String> {
    vec![
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
        format!("HOME={HOME}"),
        format!("PORT={CONTAINER_PORT}"),
        format!("VCAP_APP_PORT={CONTAINER_PORT}"),
        format!("INSTANCE_INDEX={}", i.index),
        format!("INSTANCE_GUID={}", i.guid),
        format!("MEMORY_LIMIT={}m", i.limits.memory >> 20),
        format!("VCAP_APPLICATION={}", vcap_application(i)),
    ]
}

pub fn annotations(i: &Instance) -> Value {
    json!({
        "io.paddock.app": i.app,
        "io.paddock.disk": i.limits.disk.to_string(),
        "io.paddock.disk.path": HOME,
        "io.paddock.pids": PIDS.to_string(),
        "io.paddock.cpu": i.limits.cpu.as_str(),
    })
}

pub fn spec(i: &Instance) -> Value {
    let caps = json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", i.command],
            "env": env(i),
            "cwd": APP_DIR,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs"},
        "hostname": format!("{}-{}", i.app, i.index),
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        ],
        "annotations": annotations(i),
        "linux": {
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": i.limits.memory},
            },
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": i.netns},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn instance(cpu: CpuMode) -> Instance<'static> {
        Instance {
            app: "hello",
            index: 1,
            guid: "0123456789abcdef0123456789abcdef",
            droplet: "d1d1",
            command: "httpd -f -p $PORT",
            limits: Limits {
                memory: 128 << 20,
                disk: 256 << 20,
                cpu,
            },
            netns: "/run/netns/paddock-hello-1-01234567",
            host_port: 61001,
        }
    }

    #[test]
    fn environment() {
        let i = instance(CpuMode::Equal);
        let env = env(&i);
        assert!(env.contains(&"PORT=8080".to_string()));
        assert!(env.contains(&"INSTANCE_INDEX=1".to_string()));
        assert!(env.contains(&format!("INSTANCE_GUID={}", i.guid)));
        let vcap = env
            .iter()
            .find_map(|e| e.strip_prefix("VCAP_APPLICATION="))
            .unwrap();
        let v: Value = serde_json::from_str(vcap).unwrap();
        assert_eq!(v["instance_index"], 1);
        assert_eq!(v["application_name"], "hello");
        assert_eq!(v["limits"]["mem"], 128);
        assert_eq!(v["limits"]["disk"], 256);
    }

    #[test]
    fn limits_and_namespaces() {
        let s = spec(&instance(CpuMode::Equal));
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 128u64 << 20);
        assert_eq!(s["annotations"]["io.paddock.app"], "hello");
        assert_eq!(
            s["annotations"]["io.paddock.disk"],
            (256u64 << 20).to_string()
        );
        assert_eq!(s["annotations"]["io.paddock.cpu"], "equal");
        assert!(s["linux"].get("cgroupsPath").is_none());
        let net = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .unwrap();
        assert_eq!(net["path"], "/run/netns/paddock-hello-1-01234567");
        assert_eq!(s["process"]["args"][2], "httpd -f -p $PORT");
        let s = spec(&instance(CpuMode::Cap));
        assert_eq!(s["annotations"]["io.paddock.cpu"], "cap");
    }
}
