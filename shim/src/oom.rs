//! One thread watches every container of the shim for OOM kills with the runtime library's
//! watcher (v1 eventfd, v2 `memory.events`), polling all their descriptors at once, so that a
//! hundred containers cost descriptors, not threads. A wakeup only says "look": the caller
//! publishes `TaskOOM` from the kill counter, the same way the exit path does before
//! `TaskExit`, so each kill is published once whichever path sees it first.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use paddock_runtime::oom::{Wake, Watcher};

struct Inner {
    watchers: Mutex<HashMap<String, Watcher>>,
    changed: EventFd,
}

/// The registry of watched containers; cheap to clone.
#[derive(Clone)]
pub struct OomWatch(Arc<Inner>);

impl OomWatch {
    /// Starts the thread; `on_oom(id)` runs in it (no lock of ours held) on every wakeup of a
    /// container's watcher that reported a kill.
    pub fn start(on_oom: impl Fn(&str) + Send + 'static) -> Result<Self, String> {
        let changed = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| format!("eventfd: {e}"))?;
        let me = Self(Arc::new(Inner {
            watchers: Mutex::new(HashMap::new()),
            changed,
        }));
        let inner = Arc::clone(&me.0);
        std::thread::Builder::new()
            .name("oom".into())
            .stack_size(128 * 1024)
            .spawn(move || run(&inner, &on_oom))
            .map_err(|e| format!("start OOM thread: {e}"))?;
        Ok(me)
    }

    pub fn add(&self, id: &str, w: Watcher) {
        if let Ok(mut map) = self.0.watchers.lock() {
            map.insert(id.to_string(), w);
        }
        let _ = self.0.changed.arm();
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.0.watchers.lock() {
            map.remove(id);
        }
        let _ = self.0.changed.arm();
    }
}

fn run(inner: &Inner, on_oom: &impl Fn(&str)) {
    loop {
        // (fd, owner) for this round; a watcher removed meanwhile leaves a stale entry whose
        // wakeup finds nothing to do.
        let round: Vec<(RawFd, String)> = match inner.watchers.lock() {
            Ok(map) => map
                .iter()
                .flat_map(|(id, w)| {
                    w.wake_fds()
                        .into_iter()
                        .map(move |fd| (fd.as_raw_fd(), id.clone()))
                })
                .collect(),
            Err(_) => return,
        };
        let ready: Vec<String> = {
            // SAFETY: the descriptors belong to watchers in the map; one removed during the
            // poll is closed at worst, which poll reports as POLLNVAL (ignored below).
            let fds: Vec<BorrowedFd<'_>> = round
                .iter()
                .map(|(fd, _)| unsafe { BorrowedFd::borrow_raw(*fd) })
                .collect();
            let mut pfds: Vec<PollFd<'_>> = std::iter::once(inner.changed.as_fd())
                .chain(fds.iter().copied())
                .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut pfds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("OOM watcher: poll: {e}");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
            let hit = |p: &PollFd<'_>| p.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            if hit(&pfds[0]) {
                let _ = inner.changed.read();
            }
            pfds[1..]
                .iter()
                .zip(&round)
                .filter(|(p, _)| hit(p))
                .map(|(_, (_, id))| id.clone())
                .collect()
        };
        let mut oom = Vec::new();
        if let Ok(mut map) = inner.watchers.lock() {
            for id in ready {
                let Some(w) = map.get_mut(&id) else { continue };
                match w.wait(Some(Duration::ZERO)) {
                    Ok(Wake::Oom(_)) => oom.push(id),
                    Ok(Wake::Timeout) => {}
                    Ok(Wake::Gone) | Err(_) => {
                        map.remove(&id);
                    }
                }
            }
        }
        oom.dedup();
        for id in oom {
            on_oom(&id);
        }
    }
}
