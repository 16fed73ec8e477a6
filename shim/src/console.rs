//! Terminals: `paddock create/exec --console-socket` sends the pty master here (runc's
//! protocol: one SCM_RIGHTS message); two threads copy stdin FIFO → master → stdout FIFO.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::stdio::{self, Held, Target};

static SEQ: AtomicU64 = AtomicU64::new(0);
/// sun_path holds 108 bytes with the NUL.
const MAX_SOCKET_PATH: usize = 107;

/// A listening console socket, removed when dropped.
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Binds a fresh socket in `dir` (or the temp dir, if that path would be too long).
    pub fn bind(dir: &Path) -> Result<Self, String> {
        let name = format!(
            "pty-{}-{}.sock",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut path = dir.join(&name);
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            path = std::env::temp_dir().join(&name);
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| format!("bind console socket {}: {e}", path.display()))?;
        Ok(Self { listener, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the runtime sent (it has sent it by the time create/exec returned).
    pub fn receive(&self, timeout: Duration) -> Result<File, String> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let mut pfd = [PollFd::new(
            std::os::fd::AsFd::as_fd(&self.listener),
            PollFlags::POLLIN,
        )];
        match poll(
            &mut pfd,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => return Err("the runtime sent no terminal on the console socket".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("poll console socket: {e}")),
        }
        let (conn, _) = self
            .listener
            .accept()
            .map_err(|e| format!("accept on console socket: {e}"))?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("receive terminal: {e}"))?;
        let cmsgs = msg.cmsgs().map_err(|e| format!("receive terminal: {e}"))?;
        for c in cmsgs {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(fd) = fds.first() {
                    // SAFETY: the kernel just installed this descriptor in our table for us;
                    // nothing else owns it.
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(*fd) }));
                }
            }
        }
        Err("the console socket message carried no descriptor".into())
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A process's terminal, as the shim holds it.
pub struct Console {
    master: File,
}

impl Console {
    /// Starts copying: stdin FIFO → master, master → stdout FIFO (or file). The copies end by
    /// themselves: stdin at EOF (after `CloseIO`), stdout when the last process holding the
    /// terminal exits.
    pub fn attach(
        master: File,
        stdin_path: &str,
        stdout: &str,
        held: &mut Held,
    ) -> Result<Self, String> {
        if !stdin_path.is_empty() {
            let input = File::from(stdio::stdin(stdin_path, held)?);
            let to = master.try_clone().map_err(|e| format!("dup pty: {e}"))?;
            spawn_copy("pty-in", input, to)?;
        }
        let out: Option<File> = match stdio::parse_target(stdout)? {
            Target::Null => None,
            Target::Fifo(p) => Some(stdio::fifo_writer(&p, held)?),
            Target::File(p) => Some(
                std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&p)
                    .map_err(|e| format!("open log file {}: {e}", p.display()))?,
            ),
            Target::Binary { .. } => return Err("a logging binary cannot serve a terminal".into()),
        };
        let from = master.try_clone().map_err(|e| format!("dup pty: {e}"))?;
        match out {
            Some(to) => spawn_copy("pty-out", from, to)?,
            // Nobody reads: drain, or the process blocks on a full terminal.
            None => spawn_copy(
                "pty-out",
                from,
                File::options()
                    .write(true)
                    .open("/dev/null")
                    .map_err(|e| e.to_string())?,
            )?,
        }
        Ok(Self { master })
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<(), String> {
        let ws = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the valid pointer; the fd is our pty.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc != 0 {
            return Err(format!(
                "resize terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

fn spawn_copy(name: &str, mut from: File, mut to: File) -> Result<(), String> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: every process holding the terminal has gone
                    Err(_) => return,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("start {name} copy: {e}"))
}
