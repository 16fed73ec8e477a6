//! A process's stdio as containerd describes it: FIFO paths (`ctr`, the CRI), `file://` and
//! `binary://` log URIs, or nothing.
//!
//! No copying: the process gets the FIFO (or file, or the logger's pipe) itself. The shim keeps
//! one extra end of each FIFO — a reader on stdout/stderr, so the process never dies of SIGPIPE
//! while no client reads (as the runc shim's copy loop never lets it), and a writer on stdin, so
//! the process never sees EOF before containerd's `CloseIO` (the reader of a FIFO without
//! writers reads EOF). Terminals are in [`crate::console`].

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::reaper::Claim;
use crate::runtime::Stdio3;

/// Where one output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Null,
    Fifo(PathBuf),
    File(PathBuf),
    /// A logging binary: `path` run with `args`, stdout on fd 3, stderr on fd 4.
    Binary {
        path: PathBuf,
        args: Vec<String>,
    },
}

/// Parses containerd's stdout/stderr string: a FIFO path, `fifo://`, `file://`, `binary://`.
pub fn parse_target(s: &str) -> Result<Target, String> {
    if s.is_empty() {
        return Ok(Target::Null);
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Ok(Target::Fifo(PathBuf::from(s)));
    };
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let path = percent_decode(path)?;
    if !path.starts_with('/') {
        return Err(format!("stdio URI {s:?}: the path must be absolute"));
    }
    match scheme {
        "fifo" => Ok(Target::Fifo(PathBuf::from(path))),
        "file" => Ok(Target::File(PathBuf::from(path))),
        "binary" => {
            let mut args = Vec::new();
            for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                args.push(percent_decode(k)?);
                if !v.is_empty() {
                    args.push(percent_decode(v)?);
                }
            }
            Ok(Target::Binary {
                path: PathBuf::from(path),
                args,
            })
        }
        other => Err(format!(
            "stdio URI {s:?}: unsupported scheme {other:?} (fifo, file, binary)"
        )),
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// What the shim holds for a process's stdio until the process is deleted.
#[derive(Default)]
pub struct Held {
    /// The extra writer of the stdin FIFO; dropped by `CloseIO`.
    pub stdin_writer: Option<File>,
    /// Extra readers of output FIFOs.
    pub readers: Vec<File>,
}

impl Held {
    pub fn close_stdin(&mut self) {
        self.stdin_writer = None;
    }
}

fn open_fifo(path: &Path, write: bool) -> Result<File, String> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("open FIFO {}: {e}", path.display()))
}

fn set_blocking(f: &File) -> Result<(), String> {
    let flags = fcntl(f.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(f.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(|e| format!("fcntl: {e}"))?;
    Ok(())
}

fn dev_null(write: bool) -> Result<OwnedFd, String> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| format!("open /dev/null: {e}"))
}

/// The stdin the process reads: the FIFO (with the shim's writer held) or /dev/null.
pub fn stdin(path: &str, held: &mut Held) -> Result<OwnedFd, String> {
    if path.is_empty() {
        return dev_null(false);
    }
    let path = match parse_target(path)? {
        Target::Fifo(p) => p,
        other => return Err(format!("stdin must be a FIFO, not {other:?}")),
    };
    let r = open_fifo(&path, false)?;
    held.stdin_writer = Some(open_fifo(&path, true)?);
    set_blocking(&r)?;
    Ok(r.into())
}

/// A writable end of an output FIFO, with the shim's reader held.
pub fn fifo_writer(path: &Path, held: &mut Held) -> Result<File, String> {
    held.readers.push(open_fifo(path, false)?);
    let w = open_fifo(path, true)?;
    set_blocking(&w)?;
    Ok(w)
}

fn output(target: &Target, held: &mut Held) -> Result<OwnedFd, String> {
    match target {
        Target::Null => dev_null(true),
        Target::Fifo(p) => fifo_writer(p, held).map(OwnedFd::from),
        Target::File(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("create {}: {e}", dir.display()))?;
            }
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .map(OwnedFd::from)
                .map_err(|e| format!("open log file {}: {e}", p.display()))
        }
        Target::Binary { .. } => Err("a logging binary serves stdout and stderr together".into()),
    }
}

/// The stdio of a process without a terminal.
pub fn open(
    stdin_path: &str,
    stdout: &str,
    stderr: &str,
    ids: (&str, &str),
) -> Result<(Stdio3, Held), String> {
    let mut held = Held::default();
    let stdin = stdin(stdin_path, &mut held)?;
    let out = parse_target(stdout)?;
    if let Target::Binary { path, args } = &out {
        let (o, e) = binary_logger(path, args, ids)?;
        return Ok((
            Stdio3 {
                stdin,
                stdout: o,
                stderr: e,
            },
            held,
        ));
    }
    let stdout = output(&out, &mut held)?;
    let err = parse_target(stderr)?;
    let stderr = if err == out && matches!(out, Target::File(_)) {
        stdout.try_clone().map_err(|e| format!("dup: {e}"))?
    } else {
        output(&err, &mut held)?
    };
    Ok((
        Stdio3 {
            stdin,
            stdout,
            stderr,
        },
        held,
    ))
}

/// Starts a `binary://` logger the way containerd's shims do: the read ends of the stdout and
/// stderr pipes on fds 3 and 4, a pipe on fd 5 it closes once ready, `CONTAINER_ID` and
/// `CONTAINER_NAMESPACE` in its environment. Returns the write ends for the process.
fn binary_logger(
    path: &Path,
    args: &[String],
    (id, ns): (&str, &str),
) -> Result<(OwnedFd, OwnedFd), String> {
    if !path.is_file() {
        return Err(format!("logging binary {} not found", path.display()));
    }
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", ns)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls dup2 and fcntl,
    // which are async-signal-safe; it touches no memory shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources out of the way of 3..5 first, then into place.
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let claim = Claim::take();
    let child = cmd
        .spawn()
        .map_err(|e| format!("start logging binary {}: {e}", path.display()))?;
    claim.own(i32::try_from(child.id()).unwrap_or(-1));
    // The logger is reaped by the reaper; it exits once every writer of its pipes is gone.
    drop(cmd);
    drop((out_r, err_r, ready_w));
    let mut ready = File::from(ready_r);
    let mut b = [0u8; 1];
    // EOF (the logger closed fd 5) or a byte both mean ready; an early exit is an error.
    match ready.read(&mut b) {
        Ok(_) => {}
        Err(e) => return Err(format!("logging binary {}: {e}", path.display())),
    }
    Ok((out_w, err_w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target(""), Ok(Target::Null));
        assert_eq!(
            parse_target("/run/fifo/x-stdout"),
            Ok(Target::Fifo(PathBuf::from("/run/fifo/x-stdout")))
        );
        assert_eq!(
            parse_target("file:///var/log/app%20one.log"),
            Ok(Target::File(PathBuf::from("/var/log/app one.log")))
        );
        assert_eq!(
            parse_target("binary:///usr/bin/logger?tag=web&verbose"),
            Ok(Target::Binary {
                path: PathBuf::from("/usr/bin/logger"),
                args: vec!["tag".into(), "web".into(), "verbose".into()]
            })
        );
        assert!(parse_target("http://example/x").is_err());
        assert!(parse_target("file://relative/x").is_err());
        assert!(parse_target("file:///bad%zz").is_err());
    }
}
