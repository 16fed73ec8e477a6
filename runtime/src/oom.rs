//! The OOM watcher: reports every OOM kill in a sandbox, never one that did not happen.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` of the instance and of its app
//! parent. The eventfd also fires when the cgroup is removed, and fires before the kernel
//! increments `oom_kill`, so a wakeup is only a hint: the held-open `memory.oom_control` is
//! re-read (ENODEV = the cgroup is gone) and kills are counted by the `oom_kill` counter,
//! waiting briefly for it to move. A limit hit at the app level notifies the app and every
//! cgroup under it; one at the instance level notifies the instance only, which tells the
//! levels apart.
//!
//! cgroup v2: inotify on `memory.events` (`oom_kill`, hierarchical) of the instance, and
//! `memory.events.local` of both levels, whose `oom` counter moves in the cgroup whose limit
//! was hit. With `memory.oom.group` the kernel counts the victim twice in `oom_kill` (once as
//! the victim, once as a member of the group it then kills) and `oom_group_kill` once: the
//! processes killed are `oom_kill - oom_group_kill` (seen in the VM group: one process, an
//! `oom_kill` of 2).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::Serialize;

use crate::cgroups::SandboxCgroup;
use crate::error::{Error, Result};

/// Which limit fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Instance,
    App,
}

/// One or more OOM kills in the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OomEvent {
    pub level: Level,
    /// Processes killed since the previous event.
    pub kills: u64,
}

/// What a wait on the watcher produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    Oom(OomEvent),
    /// Nothing within the timeout.
    Timeout,
    /// The instance's cgroup was removed: no more events can come.
    Gone,
}

/// Parses `oom_kill` out of v1 `memory.oom_control` or v2 `memory.events`.
pub fn parse_counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Processes OOM-killed according to a v2 `memory.events`: `oom_kill` less the double count
/// of each group kill's victim.
pub fn v2_kills(events: &str) -> Option<u64> {
    let kills = parse_counter(events, "oom_kill")?;
    let groups = parse_counter(events, "oom_group_kill").unwrap_or(0);
    Some(kills.saturating_sub(groups))
}

/// The number of OOM kills in the instance's cgroup so far (v1 or v2), if it exists.
pub fn kill_count(cg: &SandboxCgroup) -> Option<u64> {
    if let Some(dir) = cg.v2_dir() {
        let text = std::fs::read_to_string(dir.join("memory.events")).ok()?;
        return v2_kills(&text);
    }
    let dir = cg.v1_dir("memory")?;
    let text = std::fs::read_to_string(dir.join("memory.oom_control")).ok()?;
    parse_counter(&text, "oom_kill")
}

/// Watches one instance (and optionally its app parent).
pub enum Watcher {
    V1(V1),
    V2(V2),
}

impl Watcher {
    /// Starts watching. `app` is the app's cgroup path (`/paddock/<app>`), if any.
    pub fn new(cg: &SandboxCgroup, app: Option<&str>) -> Result<Self> {
        if let Some(dir) = cg.v2_dir() {
            let app_dir = app.and_then(|a| {
                cg.layout
                    .v2()
                    .map(|h| h.mount_point.join(a.trim_start_matches('/')))
            });
            return Ok(Watcher::V2(V2::new(dir, app_dir)?));
        }
        let dir = cg.v1_dir("memory").ok_or_else(|| {
            Error::Invalid(format!(
                "no memory cgroup for {}: the memory controller is not mounted",
                cg.path
            ))
        })?;
        let app_dir = app.and_then(|a| {
            cg.layout
                .v1("memory")
                .map(|h| h.mount_point.join(a.trim_start_matches('/')))
        });
        Ok(Watcher::V1(V1::new(dir, app_dir)?))
    }

    /// The descriptors the watcher holds (to keep across a fork).
    pub fn fds(&self) -> Vec<i32> {
        match self {
            Watcher::V1(w) => std::iter::once(&w.instance)
                .chain(w.app.iter())
                .flat_map(|r| [r.efd.as_fd().as_raw_fd(), r.control.as_raw_fd()])
                .collect(),
            Watcher::V2(w) => vec![w.inotify.as_fd().as_raw_fd()],
        }
    }

    /// Waits up to `timeout` (forever with `None`) for the next OOM kill.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Wake> {
        match self {
            Watcher::V1(w) => w.wait(timeout),
            Watcher::V2(w) => w.wait(timeout),
        }
    }
}

fn poll_timeout(deadline: Option<Instant>) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.saturating_duration_since(Instant::now()).as_millis();
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// A v1 registration: the eventfd and the held-open `memory.oom_control`.
struct Registration {
    efd: EventFd,
    control: File,
    path: PathBuf,
}

impl Registration {
    fn new(dir: &Path) -> Result<Self> {
        let path = dir.join("memory.oom_control");
        let control = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::sys("eventfd", e))?;
        let ctl = dir.join("cgroup.event_control");
        let line = format!("{} {}", efd.as_fd().as_raw_fd(), control.as_raw_fd());
        std::fs::write(&ctl, line).map_err(|e| Error::io("write", &ctl, e))?;
        Ok(Self { efd, control, path })
    }

    /// Drains the eventfd; true if it had fired.
    fn drain(&self) -> bool {
        let mut buf = [0u8; 8];
        let fd = self.efd.as_fd().as_raw_fd();
        // SAFETY: reading 8 bytes into a valid 8-byte buffer from our own eventfd.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        n == 8
    }

    /// Re-reads the held-open control file: `None` once the cgroup is gone.
    fn counter(&mut self) -> Option<u64> {
        let mut text = String::new();
        self.control.seek(SeekFrom::Start(0)).ok()?;
        self.control.read_to_string(&mut text).ok()?;
        parse_counter(&text, "oom_kill")
    }
}

pub struct V1 {
    instance: Registration,
    app: Option<Registration>,
    seen: u64,
}

impl V1 {
    fn new(dir: PathBuf, app_dir: Option<PathBuf>) -> Result<Self> {
        let mut instance = Registration::new(&dir)?;
        let app = match app_dir {
            Some(d) if d.exists() => Some(Registration::new(&d)?),
            _ => None,
        };
        let seen = instance.counter().ok_or_else(|| {
            Error::io(
                "read",
                &instance.path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })?;
        Ok(Self {
            instance,
            app,
            seen,
        })
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<Wake> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut app_fired = false;
        loop {
            let fds: Vec<BorrowedFd> = std::iter::once(self.instance.efd.as_fd())
                .chain(self.app.iter().map(|a| a.efd.as_fd()))
                .collect();
            let mut pfds: Vec<PollFd> = fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut pfds, poll_timeout(deadline)) {
                Ok(0) => return Ok(Wake::Timeout),
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("poll oom eventfd", e)),
            }
            if let Some(a) = &self.app {
                app_fired |= a.drain();
            }
            if !self.instance.drain() && !app_fired {
                continue;
            }
            // A real OOM or the cgroup's removal: the control file tells which.
            let Some(mut now) = self.instance.counter() else {
                return Ok(Wake::Gone);
            };
            // The notification comes before the kill is counted; give the kernel a moment.
            let settle = Instant::now() + Duration::from_millis(100);
            while now <= self.seen && Instant::now() < settle {
                std::thread::sleep(Duration::from_micros(200));
                match self.instance.counter() {
                    Some(n) => now = n,
                    None => return Ok(Wake::Gone),
                }
            }
            if now > self.seen {
                let kills = now - self.seen;
                self.seen = now;
                let level = if app_fired {
                    Level::App
                } else {
                    Level::Instance
                };
                return Ok(Wake::Oom(OomEvent { level, kills }));
            }
            // Under OOM without a kill here (a victim elsewhere in the app): nothing to report.
            app_fired = false;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Wake::Timeout);
            }
        }
    }
}

pub struct V2 {
    inotify: Inotify,
    events: PathBuf,
    app_local: Option<PathBuf>,
    seen: u64,
    seen_app_oom: u64,
}

impl V2 {
    fn new(dir: PathBuf, app_dir: Option<PathBuf>) -> Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| Error::sys("inotify_init", e))?;
        let events = dir.join("memory.events");
        inotify
            .add_watch(&events, AddWatchFlags::IN_MODIFY)
            .map_err(|e| Error::io("watch", &events, e.into()))?;
        let app_local = app_dir.map(|d| d.join("memory.events.local"));
        if let Some(p) = &app_local {
            inotify
                .add_watch(p, AddWatchFlags::IN_MODIFY)
                .map_err(|e| Error::io("watch", p, e.into()))?;
        }
        let read = |p: &Path, key: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| parse_counter(&t, key))
                .unwrap_or(0)
        };
        let seen = std::fs::read_to_string(&events)
            .ok()
            .and_then(|t| v2_kills(&t))
            .unwrap_or(0);
        let seen_app_oom = app_local.as_deref().map(|p| read(p, "oom")).unwrap_or(0);
        Ok(Self {
            inotify,
            events,
            app_local,
            seen,
            seen_app_oom,
        })
    }

    fn wait(&mut self, timeout: Option<Duration>) -> Result<Wake> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let now = match std::fs::read_to_string(&self.events) {
                Ok(t) => v2_kills(&t).unwrap_or(self.seen),
                Err(_) => return Ok(Wake::Gone),
            };
            if now > self.seen {
                let kills = now - self.seen;
                self.seen = now;
                let app_oom = self
                    .app_local
                    .as_deref()
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .and_then(|t| parse_counter(&t, "oom"))
                    .unwrap_or(self.seen_app_oom);
                // The app's own counter moved only if the app's limit was hit.
                let level = if app_oom > self.seen_app_oom {
                    Level::App
                } else {
                    Level::Instance
                };
                self.seen_app_oom = app_oom;
                return Ok(Wake::Oom(OomEvent { level, kills }));
            }
            let fd = self.inotify.as_fd();
            let mut pfd = [PollFd::new(fd, PollFlags::POLLIN)];
            match poll(&mut pfd, poll_timeout(deadline)) {
                Ok(0) => return Ok(Wake::Timeout),
                Ok(_) => {
                    let removed = self.inotify.read_events().is_ok_and(|events| {
                        events
                            .iter()
                            .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                    });
                    if removed && !self.events.exists() {
                        return Ok(Wake::Gone);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::sys("poll inotify", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::Layout;

    /// A cgroup v2 tree made of plain files: inotify and the counters behave the same.
    fn fake_v2(app: &str, id: &str) -> (tempfile::TempDir, SandboxCgroup) {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mountinfo = format!(
            "25 20 0:22 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        );
        let cg = SandboxCgroup::new(
            Layout::from_mountinfo(&mountinfo),
            &format!("/paddock/{app}/{id}"),
        );
        let inst = tmp.path().join(format!("paddock/{app}/{id}"));
        std::fs::create_dir_all(&inst).unwrap_or_else(|e| panic!("{e}"));
        let events = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n";
        for f in [
            inst.join("memory.events"),
            inst.join("memory.events.local"),
            tmp.path()
                .join(format!("paddock/{app}/memory.events.local")),
        ] {
            std::fs::write(f, events).unwrap_or_else(|e| panic!("{e}"));
        }
        (tmp, cg)
    }

    fn bump(path: &Path, oom: u64, kills: u64) {
        let text = format!("low 0\nhigh 0\nmax 0\noom {oom}\noom_kill {kills}\n");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn v2_watcher_counts_kills_and_levels() {
        let (tmp, cg) = fake_v2("shop", "web-0");
        let mut w = Watcher::new(&cg, Some("/paddock/shop")).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(w, Watcher::V2(_)));
        let short = Some(Duration::from_millis(50));
        assert_eq!(w.wait(short).ok(), Some(Wake::Timeout));
        let inst = tmp.path().join("paddock/shop/web-0");
        bump(&inst.join("memory.events"), 1, 1);
        assert_eq!(
            w.wait(short).ok(),
            Some(Wake::Oom(OomEvent {
                level: Level::Instance,
                kills: 1
            }))
        );
        assert_eq!(
            w.wait(short).ok(),
            Some(Wake::Timeout),
            "no repeat of a reported kill"
        );
        bump(&tmp.path().join("paddock/shop/memory.events.local"), 1, 0);
        bump(&inst.join("memory.events"), 2, 3);
        assert_eq!(
            w.wait(short).ok(),
            Some(Wake::Oom(OomEvent {
                level: Level::App,
                kills: 2
            }))
        );
        assert_eq!(kill_count(&cg), Some(3));
        std::fs::remove_file(inst.join("memory.events")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(w.wait(Some(Duration::from_secs(2))).ok(), Some(Wake::Gone));
    }

    #[test]
    fn counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(parse_counter(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(parse_counter(v2, "oom_kill"), Some(1));
        assert_eq!(parse_counter(v2, "oom"), Some(2));
        assert_eq!(parse_counter(v2, "oom_group"), None);
        assert_eq!(parse_counter("", "oom_kill"), None);
        assert_eq!(v2_kills(v2), Some(1));
        // One process killed through memory.oom.group: the kernel counts it twice.
        let group = "low 0\nhigh 0\nmax 9\noom 1\noom_kill 2\noom_group_kill 1\n";
        assert_eq!(v2_kills(group), Some(1));
        // Three processes in the group: victim twice, two members once.
        let three = "oom 1\noom_kill 4\noom_group_kill 1\n";
        assert_eq!(v2_kills(three), Some(3));
        assert_eq!(v2_kills("oom 1\n"), None);
    }
}
