use std::io::Write;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use libcontainer::container::ContainerStatus;
use serde::Serialize;

use super::{wrong_state, Loaded};
use crate::disk;
use crate::error::{Error, Result};
use crate::oom::{self, OomEvent, Wake};
use crate::policy;
use crate::stats::{self, Event, Stats};

/// How often a streaming `events` checks whether the sandbox has stopped.
const STATUS_POLL: Duration = Duration::from_millis(100);

/// The current statistics of a sandbox.
pub fn stats(root: &Path, sandbox: &str) -> Result<Stats> {
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    let mut s = match loaded.cgroups_path() {
        Some(p) if status != ContainerStatus::Stopped => stats::read(&p, sandbox)?,
        _ => return Err(wrong_state(sandbox, status, "events", "running")),
    };
    if let Some(vref) = loaded.record.as_ref().and_then(|r| r.volume.as_ref()) {
        s.disk = Some(disk::usage(vref)?.into());
        s.rootfs_disk = disk::rootfs_usage(vref)?.map(Into::into);
    }
    Ok(s)
}

fn emit<T: Serialize>(out: &mut dyn Write, kind: &str, id: &str, data: Option<T>) -> Result<()> {
    let line = serde_json::to_string(&Event { kind, id, data })
        .map_err(|e| Error::Invalid(format!("encode event: {e}")))?;
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| Error::io("write event to", "stdout", e))
}

/// Writes runc-format event lines to `out`. With `once`, one stats event. Otherwise an `oom`
/// event for every OOM kill as it happens (with the level whose limit fired) and a stats event
/// every `interval`, until the sandbox stops (once every OOM kill it counted is reported) or is
/// deleted.
pub fn events(
    root: &Path,
    sandbox: &str,
    interval: Duration,
    once: bool,
    out: &mut dyn Write,
) -> Result<()> {
    if once {
        return emit(out, "stats", sandbox, Some(stats(root, sandbox)?));
    }
    let loaded = Loaded::open(root, sandbox)?;
    let status = loaded.status();
    let Some(cg) = loaded.cgroup()? else {
        return Err(wrong_state(sandbox, status, "events", "running"));
    };
    let app = loaded
        .record
        .as_ref()
        .and_then(|r| r.app.as_ref())
        .map(|a| format!("/{}/{a}", policy::CGROUP_ROOT));
    // Kills before the watcher started are history, not events.
    let baseline = oom::kill_count(&cg).unwrap_or(0);
    let mut watcher = oom::Watcher::new(&cg, app.as_deref())?;
    let (tx, rx) = mpsc::channel::<Option<OomEvent>>();
    std::thread::spawn(move || loop {
        match watcher.wait(None) {
            Ok(Wake::Oom(ev)) => {
                if tx.send(Some(ev)).is_err() {
                    return;
                }
            }
            Ok(Wake::Timeout) => {}
            Ok(Wake::Gone) | Err(_) => {
                let _ = tx.send(None);
                return;
            }
        }
    });
    if status != ContainerStatus::Stopped {
        emit(out, "stats", sandbox, Some(stats(root, sandbox)?))?;
    }
    let mut reported = 0u64;
    let report = |out: &mut dyn Write, ev: OomEvent, reported: &mut u64| -> Result<()> {
        for _ in 0..ev.kills {
            emit(
                out,
                "oom",
                sandbox,
                Some(serde_json::json!({ "level": ev.level })),
            )?;
        }
        *reported += ev.kills;
        Ok(())
    };
    let tick = interval.min(STATUS_POLL);
    let mut next_stats = Instant::now() + interval;
    loop {
        match rx.recv_timeout(tick) {
            Ok(Some(ev)) => report(out, ev, &mut reported)?,
            Ok(None) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {}
        }
        let stopped = match Loaded::open(root, sandbox) {
            Ok(l) => l.status() == ContainerStatus::Stopped,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if stopped {
            // Every kill the cgroup counted must be out before the stream ends.
            let total = oom::kill_count(&cg)
                .unwrap_or(baseline)
                .saturating_sub(baseline);
            let deadline = Instant::now() + Duration::from_secs(1);
            while reported < total && Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(Some(ev)) => report(out, ev, &mut reported)?,
                    Ok(None) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            return Ok(());
        }
        if Instant::now() >= next_stats {
            next_stats = Instant::now() + interval;
            match stats(root, sandbox) {
                Ok(s) => emit(out, "stats", sandbox, Some(s))?,
                Err(Error::NotFound(_)) | Err(Error::WrongState { .. }) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
