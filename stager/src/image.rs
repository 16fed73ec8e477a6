//! Importing layers into containerd with no registry: blobs into the content store, an OCI
//! config and manifest (with the labels containerd's garbage collector follows), an image
//! record, and the layers unpacked into the snapshotter through the diff service — what
//! `ctr images import` does, over the API.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use containerd_client::services::v1::{
    ApplyRequest, CreateImageRequest, GetImageRequest, Image, InfoRequest, UpdateImageRequest,
    WriteAction, WriteContentRequest,
};
use containerd_client::types::Descriptor;
use serde_json::json;
use tonic::Code;

use crate::ctd::{Ctd, SNAPSHOTTER};
use crate::error::{Error, Result};
use crate::layer;

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const CHUNK: usize = 1 << 20;

/// A layer file on disk with its digest (uncompressed, so digest = diff id).
#[derive(Debug, Clone)]
pub struct LayerFile {
    pub path: PathBuf,
    pub digest: String,
    pub size: u64,
}

/// Makes sure image `name` exists with `layers` unpacked; returns the chain id of the top
/// snapshot, the parent of every instance's root filesystem.
pub async fn ensure(ctd: &Ctd, name: &str, layers: &[LayerFile]) -> Result<String> {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    let chain = layer::chain_id(&diff_ids);
    if image_exists(ctd, name).await? && ctd.snapshot_exists(&chain).await? {
        return Ok(chain);
    }
    for l in layers {
        if !blob_exists(ctd, &l.digest).await? {
            let data = fs::read(&l.path).map_err(|e| Error::io("read", &l.path, e))?;
            if layer::digest(&data) != l.digest {
                return Err(Error::Invalid(format!(
                    "{}: content does not match its digest {}",
                    l.path.display(),
                    l.digest
                )));
            }
            write_blob(ctd, &data, HashMap::new()).await?;
        }
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Cmd": ["sh"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .map_err(|e| Error::Invalid(format!("image config: {e}")))?;
    let config_labels = HashMap::from([(
        format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
        chain.clone(),
    )]);
    let config_digest = write_blob(ctd, &config, config_labels).await?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
        "layers": layers.iter().map(|l| json!({
            "mediaType": layer::MEDIA_TYPE, "digest": l.digest, "size": l.size,
        })).collect::<Vec<_>>(),
    }))
    .map_err(|e| Error::Invalid(format!("image manifest: {e}")))?;
    let mut manifest_labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        config_digest.clone(),
    )]);
    for (i, l) in layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    let manifest_digest = write_blob(ctd, &manifest, manifest_labels).await?;
    let image = Image {
        name: name.into(),
        target: Some(Descriptor {
            media_type: MANIFEST_TYPE.into(),
            digest: manifest_digest,
            size: manifest.len() as i64,
            annotations: HashMap::new(),
        }),
        ..Default::default()
    };
    put_image(ctd, image).await?;
    unpack(ctd, layers).await?;
    Ok(chain)
}

async fn image_exists(ctd: &Ctd, name: &str) -> Result<bool> {
    match ctd
        .client
        .images()
        .get(ctd.req(GetImageRequest { name: name.into() }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(Error::containerd("get image", name, &s)),
    }
}

async fn put_image(ctd: &Ctd, image: Image) -> Result<()> {
    let name = image.name.clone();
    match ctd
        .client
        .images()
        .create(ctd.req(CreateImageRequest {
            image: Some(image.clone()),
            source_date_epoch: None,
        }))
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::AlreadyExists => ctd
            .client
            .images()
            .update(ctd.req(UpdateImageRequest {
                image: Some(image),
                update_mask: None,
                source_date_epoch: None,
            }))
            .await
            .map(|_| ())
            .map_err(|s| Error::containerd("update image", &name, &s)),
        Err(s) => Err(Error::containerd("create image", &name, &s)),
    }
}

async fn blob_exists(ctd: &Ctd, digest: &str) -> Result<bool> {
    match ctd
        .client
        .content()
        .info(ctd.req(InfoRequest {
            digest: digest.into(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(Error::containerd("content info", digest, &s)),
    }
}

/// Writes `data` into the content store (a no-op if it is there); returns its digest.
pub async fn write_blob(ctd: &Ctd, data: &[u8], labels: HashMap<String, String>) -> Result<String> {
    let digest = layer::digest(data);
    let total = data.len() as i64;
    let reference = format!("paddock-stager-{}-{digest}", std::process::id());
    let mut reqs = Vec::new();
    let mut offset = 0usize;
    for chunk in data.chunks(CHUNK) {
        reqs.push(WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: reference.clone(),
            total,
            expected: digest.clone(),
            offset: offset as i64,
            data: chunk.to_vec(),
            labels: HashMap::new(),
        });
        offset += chunk.len();
    }
    reqs.push(WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference,
        total,
        expected: digest.clone(),
        offset: total,
        data: Vec::new(),
        labels,
    });
    let stream = tokio_stream::iter(reqs);
    let result = ctd.client.content().write(ctd.req(stream)).await;
    let mut responses = match result {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == Code::AlreadyExists => return Ok(digest),
        Err(s) => return Err(Error::containerd("write content", &digest, &s)),
    };
    loop {
        match responses.message().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(s) if s.code() == Code::AlreadyExists => break,
            Err(s) => return Err(Error::containerd("write content", &digest, &s)),
        }
    }
    Ok(digest)
}

/// Unpacks the layers bottom-up into committed snapshots named by chain id, skipping those
/// already there.
async fn unpack(ctd: &Ctd, layers: &[LayerFile]) -> Result<()> {
    let mut parent = String::new();
    let mut diff_ids = Vec::new();
    for l in layers {
        diff_ids.push(l.digest.clone());
        let chain = layer::chain_id(&diff_ids);
        if !ctd.snapshot_exists(&chain).await? {
            let key = format!(
                "extract-{}-{}",
                std::process::id(),
                chain.trim_start_matches("sha256:")
            );
            let _ = ctd.remove_snapshot(&key).await;
            let mounts = ctd.prepare_snapshot(&key, &parent).await?;
            let applied = ctd
                .client
                .diff()
                .apply(ctd.req(ApplyRequest {
                    diff: Some(Descriptor {
                        media_type: layer::MEDIA_TYPE.into(),
                        digest: l.digest.clone(),
                        size: l.size as i64,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                }))
                .await;
            let committed = match applied {
                Ok(_) => ctd.commit_snapshot(&chain, &key).await,
                Err(s) => Err(Error::containerd("apply layer", &l.digest, &s)),
            };
            if let Err(e) = committed {
                let _ = ctd.remove_snapshot(&key).await;
                // another stager may have committed the same chain meanwhile
                if !ctd.snapshot_exists(&chain).await? {
                    return Err(e);
                }
            }
        }
        parent = chain;
    }
    Ok(())
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
