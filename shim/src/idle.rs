//! Keeping an idle shim small. A shim spends its life waiting, and most of what it touched to
//! get there (start-up, the create path, protobuf descriptors) is never needed again until the
//! next request. Once requests have stopped for a moment, the main thread gives back:
//! - the page-table entries of its code and read-only data (file mappings of the binary and
//!   its libraries that were never written): the pages stay in the page cache and fault back
//!   in on use;
//! - malloc's free memory (`malloc_trim`).
//!
//! Nothing else: RELRO (read-only now, but relocated, so written once: dropping those pages
//! would bring back unrelocated bytes) is told apart by its own pages in smaps; the heap in use
//! and thread stacks hold live data.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

/// How long requests must have stopped before trimming.
const SETTLE: Duration = Duration::from_millis(200);

enum Msg {
    Busy,
    Exit,
}

/// The handle request handlers poke.
pub struct Idle {
    tx: Mutex<Sender<Msg>>,
}

impl Idle {
    pub fn new() -> (Self, Waiter) {
        let (tx, rx) = channel();
        (Self { tx: Mutex::new(tx) }, Waiter(rx))
    }

    fn send(&self, m: Msg) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(m);
        }
    }

    /// A request was served: trim once things settle.
    pub fn poke(&self) {
        self.send(Msg::Busy);
    }

    /// Ends [`Waiter::run`].
    pub fn exit(&self) {
        self.send(Msg::Exit);
    }
}

/// The main thread's side.
pub struct Waiter(Receiver<Msg>);

impl Waiter {
    /// Trims after each burst of requests; returns on [`Idle::exit`].
    pub fn run(self) {
        loop {
            match self.0.recv() {
                Ok(Msg::Busy) => {}
                Ok(Msg::Exit) | Err(_) => return,
            }
            loop {
                match self.0.recv_timeout(SETTLE) {
                    Ok(Msg::Busy) => {}
                    Ok(Msg::Exit) | Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            trim();
        }
    }
}

/// One mapping of `/proc/self/smaps` that may be trimmed: never writable, private, backed by
/// a file, and without a single page of its own (`Anonymous: 0 kB`: RELRO, relocated once, has
/// some; code and read-only data have none). Returns (start, length) per mapping.
fn trimmable(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    // the mapping being read: (start, length, eligible by its header)
    let mut cur: Option<(usize, usize, bool)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                let perms = f.next().unwrap_or("").as_bytes();
                let path = f.nth(3).unwrap_or("");
                let ok = perms.len() == 4
                    && perms[1] == b'-'
                    && perms[3] == b'p'
                    && path.starts_with('/')
                    && end > start;
                cur = Some((start, end.saturating_sub(start), ok));
                continue;
            }
        }
        if first == "Anonymous:" {
            if let Some((start, len, true)) = cur.take() {
                if f.next() == Some("0") {
                    out.push((start, len));
                }
            }
        }
    }
    out
}

/// Gives back what an idle shim does not need resident (see the module doc).
pub fn trim() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    let mut ranges = trimmable(&smaps);
    // This very code last, so that little of it faults back in before the thread sleeps.
    let here = trim as *const () as usize;
    ranges.sort_by_key(|(start, len)| (*start..start + len).contains(&here));
    for (start, len) in ranges {
        // SAFETY: the range is a whole never-writable private file mapping of this process
        // with no page of its own (checked in smaps): dropping its page-table entries loses
        // nothing, and the next access faults the same file contents back in.
        unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_untouched_read_only_file_mappings() {
        let smaps = "55d0c0a00000-55d0c0b00000 r-xp 00001000 fe:00 123 /usr/bin/shim
Rss:                 100 kB
Anonymous:             0 kB
55d0c0b00000-55d0c0b10000 r--p 00101000 fe:00 123 /usr/bin/shim
Anonymous:             0 kB
55d0c0b10000-55d0c0b12000 r--p 00111000 fe:00 123 /usr/bin/shim
Anonymous:             8 kB
55d0c0b12000-55d0c0b20000 rw-p 00113000 fe:00 123 /usr/bin/shim
Anonymous:             0 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:           132 kB
7f0000000000-7f0000001000 r--s 00000000 00:05 9 /dev/shm/x
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000100000-7f0000200000 ---p 00000000 00:00 0
Anonymous:             0 kB";
        assert_eq!(
            trimmable(smaps),
            vec![(0x55d0c0a00000, 0x100000), (0x55d0c0b00000, 0x10000)]
        );
    }
}
