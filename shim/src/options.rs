//! Where the `paddock` binary and the sandbox state live for one container, and which shim
//! serves it (grouping). Pure decisions, unit-tested; the bundle file is the only I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim::oci::Options as RuncOptions;
use serde::{Deserialize, Serialize};

/// Default base of the per-namespace state roots (`<base>/<namespace>`).
pub const DEFAULT_STATE_BASE: &str = "/run/paddock/containerd";
/// The binary the shim runs when the options name none.
pub const DEFAULT_BINARY: &str = "paddock";
/// Annotations that put containers into one shim, first match wins (as the runc shim does):
/// all containers of a Kubernetes pod share one shim process.
pub const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
/// The file in the bundle that remembers [`Resolved`] for the `delete` action.
const BUNDLE_FILE: &str = "paddock-shim.json";

/// What one container runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The runc-compatible binary (`paddock`).
    pub binary: PathBuf,
    /// Its `--root`: the state directory of this containerd namespace.
    pub root: PathBuf,
}

/// The runc-style options containerd may send with a task (`BinaryName`, `Root` in the CRI
/// runtime's `options` table). Anything else (no options, another type) means defaults.
pub fn runc_options(any: Option<&Any>) -> Result<(String, String), String> {
    let Some(any) = any else {
        return Ok((String::new(), String::new()));
    };
    if !any.type_url.ends_with("containerd.runc.v1.Options") {
        return Ok((String::new(), String::new()));
    }
    let o = RuncOptions::parse_from_bytes(&any.value)
        .map_err(|e| format!("cannot decode the task options ({}): {e}", any.type_url))?;
    Ok((o.binary_name, o.root))
}

/// The binary and root for `namespace`, from the options (empty = default). `sibling` is the
/// `paddock` next to the shim's own executable, preferred over `$PATH` when it exists.
pub fn resolve(
    binary_name: &str,
    root: &str,
    namespace: &str,
    sibling: Option<PathBuf>,
) -> Resolved {
    let binary = if !binary_name.is_empty() {
        PathBuf::from(binary_name)
    } else {
        sibling.unwrap_or_else(|| PathBuf::from(DEFAULT_BINARY))
    };
    let base = if root.is_empty() {
        DEFAULT_STATE_BASE
    } else {
        root
    };
    Resolved {
        binary,
        root: Path::new(base).join(namespace),
    }
}

/// `paddock` beside the running executable, if there is one.
pub fn sibling_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(DEFAULT_BINARY);
    p.is_file().then_some(p)
}

/// The shim a container belongs to: its pod's sandbox id when it has one, else its own id.
pub fn grouping(id: &str, annotations: &HashMap<String, String>) -> String {
    GROUP_LABELS
        .iter()
        .find_map(|l| annotations.get(*l).filter(|v| !v.is_empty()))
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

/// Records what the container runs with in its bundle, for a later `delete` action.
pub fn save(bundle: &Path, r: &Resolved) -> std::io::Result<()> {
    let data = serde_json::to_vec(r).map_err(std::io::Error::other)?;
    std::fs::write(bundle.join(BUNDLE_FILE), data)
}

/// What [`save`] recorded: `Ok(None)` if nothing is recorded (no sandbox was ever made from
/// this bundle, or the shim's `Delete` removed it and [`forget`] said so), `Err` if the record
/// is unreadable.
pub fn load(bundle: &Path) -> Result<Option<Resolved>, String> {
    let path = bundle.join(BUNDLE_FILE);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| format!("parse {}: {e}", path.display()))
}

/// The container's sandbox is gone (deleted through the shim): a later `delete` action has
/// nothing to ask the runtime for.
pub fn forget(bundle: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(bundle.join(BUNDLE_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn grouping_prefers_the_pod() {
        let mut a = HashMap::new();
        assert_eq!(grouping("c1", &a), "c1");
        a.insert(
            "io.kubernetes.cri.sandbox-id".to_string(),
            "pod-1".to_string(),
        );
        assert_eq!(grouping("c1", &a), "pod-1");
        a.insert("io.containerd.runc.v2.group".to_string(), "g".to_string());
        assert_eq!(grouping("c1", &a), "g");
        a.insert("io.containerd.runc.v2.group".to_string(), String::new());
        assert_eq!(
            grouping("c1", &a),
            "pod-1",
            "an empty group label is no group"
        );
    }

    #[test]
    fn defaults_and_overrides() {
        let r = resolve("", "", "k8s.io", None);
        assert_eq!(r.binary, Path::new("paddock"));
        assert_eq!(r.root, Path::new("/run/paddock/containerd/k8s.io"));
        let r = resolve("", "", "default", Some(PathBuf::from("/opt/bin/paddock")));
        assert_eq!(r.binary, Path::new("/opt/bin/paddock"));
        let r = resolve(
            "/usr/local/bin/pd",
            "/run/pd",
            "ns",
            Some(PathBuf::from("/x")),
        );
        assert_eq!(
            r,
            Resolved {
                binary: PathBuf::from("/usr/local/bin/pd"),
                root: PathBuf::from("/run/pd/ns")
            }
        );
    }

    #[test]
    fn saved_loaded_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        let r = resolve("", "/run/pd", "ns", None);
        save(dir.path(), &r).unwrap();
        assert_eq!(load(dir.path()), Ok(Some(r)));
        forget(dir.path()).unwrap();
        assert_eq!(load(dir.path()), Ok(None));
        forget(dir.path()).unwrap();
        std::fs::write(dir.path().join(BUNDLE_FILE), b"{not json").unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.contains("paddock-shim.json"), "{e}");
    }

    #[test]
    fn runc_options_decode() {
        assert_eq!(runc_options(None), Ok((String::new(), String::new())));
        let o = RuncOptions {
            binary_name: "/bin/pd".into(),
            root: "/run/r".into(),
            ..Default::default()
        };
        let any = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: o.write_to_bytes().unwrap_or_default(),
            ..Default::default()
        };
        assert_eq!(
            runc_options(Some(&any)),
            Ok(("/bin/pd".to_string(), "/run/r".to_string()))
        );
        let other = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(
            runc_options(Some(&other)),
            Ok((String::new(), String::new()))
        );
        let bad = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0xff, 0xff, 0xff],
            ..Default::default()
        };
        assert!(runc_options(Some(&bad)).is_err());
    }
}
