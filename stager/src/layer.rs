//! Deterministic tar layers: sorted entries, mtime 0, owner root, normalised modes, so the same
//! files always give the same bytes and so the same digest (droplets are content-addressed).

use std::io::Write;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// OCI media type of an uncompressed layer.
pub const MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// An entry of a layer, by path inside the image (no leading `/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

/// Writes `entries` (sorted by path here) as a tar archive.
pub fn build(mut entries: Vec<Entry>) -> Result<Vec<u8>> {
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    let mut builder = tar::Builder::new(Vec::new());
    for entry in &entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let fail = |e: std::io::Error| Error::io("tar", entry.path(), e);
        match entry {
            Entry::Dir { path, mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{path}/"), std::io::empty())
                    .map_err(fail)?;
            }
            Entry::File { path, mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, data.as_slice())
                    .map_err(fail)?;
            }
            Entry::Symlink { path, target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder
                    .append_link(&mut header, path, target)
                    .map_err(fail)?;
            }
        }
    }
    let mut out = builder
        .into_inner()
        .map_err(|e| Error::io("tar", "finish", e))?;
    out.flush().map_err(|e| Error::io("tar", "flush", e))?;
    Ok(out)
}

/// `sha256:<hex>` of `data`.
pub fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The chain id of a stack of layers (OCI image spec: chainID(L0) = diffID(L0),
/// chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln))).
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut chain = String::new();
    for (i, d) in diff_ids.iter().enumerate() {
        chain = if i == 0 {
            d.clone()
        } else {
            digest(format!("{chain} {d}").as_bytes())
        };
    }
    chain
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn entries() -> Vec<Entry> {
        vec![
            Entry::File {
                path: "app/b".into(),
                mode: 0o644,
                data: b"bee".to_vec(),
            },
            Entry::Dir {
                path: "app".into(),
                mode: 0o755,
            },
            Entry::Symlink {
                path: "app/c".into(),
                target: "b".into(),
            },
        ]
    }

    #[test]
    fn deterministic_and_readable() {
        let a = build(entries()).unwrap();
        let mut reversed = entries();
        reversed.reverse();
        assert_eq!(a, build(reversed).unwrap());
        let mut ar = tar::Archive::new(a.as_slice());
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["app/", "app/b", "app/c"]);
    }

    #[test]
    fn chain_ids() {
        let a = "sha256:aa".to_string();
        let b = "sha256:bb".to_string();
        assert_eq!(chain_id(std::slice::from_ref(&a)), a);
        assert_eq!(chain_id(&[a, b]), digest(b"sha256:aa sha256:bb"));
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
