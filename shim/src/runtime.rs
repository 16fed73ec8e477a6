//! Running the `paddock` binary for a lifecycle step, as containerd's runc shim runs runc.
//!
//! Every call gets `--root`, and `--log <file> --log-format json` so that the error of a call
//! whose stdio belongs to the container (create, exec) is still read back: the last `error`
//! line of that log names what failed. The child's exit status comes from the reaper's exit
//! monitor, subscribed before the spawn.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::reaper::{Claim, Exits};

static SEQ: AtomicU64 = AtomicU64::new(0);

/// The three descriptors a created process gets as stdin, stdout, stderr.
pub struct Stdio3 {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// One `paddock` binary and state root.
#[derive(Debug, Clone)]
pub struct Paddock {
    pub binary: PathBuf,
    pub root: PathBuf,
}

impl Paddock {
    /// Runs `paddock --root <root> ARGS` and waits for it. `stdio`: the descriptors of the
    /// process being created (create/exec); otherwise stderr is captured for the error.
    /// `log_dir` holds the call's log file for as long as the call runs.
    pub fn run(
        &self,
        args: &[OsString],
        stdio: Option<Stdio3>,
        log_dir: &Path,
    ) -> Result<(), String> {
        let verb = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !self.binary.is_absolute() && self.binary.components().count() > 1 {
            return Err(format!(
                "runtime binary {} must be absolute or a bare name",
                self.binary.display()
            ));
        }
        let binary = self.locate()?;
        let log = log_dir.join(format!(
            ".paddock-{}-{}.json",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let mut cmd = Command::new(&binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        let captured = match stdio {
            Some(s) => {
                cmd.stdin(Stdio::from(s.stdin))
                    .stdout(Stdio::from(s.stdout))
                    .stderr(Stdio::from(s.stderr));
                false
            }
            None => {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                true
            }
        };
        let exits = Exits::subscribe()?;
        let claim = Claim::take();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {} {verb}: {e}", binary.display()))?;
        let pid = i32::try_from(child.id()).unwrap_or(-1);
        claim.own(pid);
        // The command's copies of the descriptors must be gone before we wait: a FIFO end
        // held here would keep a reader from seeing EOF.
        drop(cmd);
        let mut stderr = String::new();
        if captured {
            if let Some(mut pipe) = child.stderr.take() {
                let _ = pipe.read_to_string(&mut stderr);
            }
        }
        let code = exits.wait(pid)?;
        let logged = last_error(&log);
        let _ = std::fs::remove_file(&log);
        if code == 0 {
            return Ok(());
        }
        let why = logged
            .or_else(|| {
                let s = stderr.trim().trim_start_matches("paddock: ");
                (!s.is_empty()).then(|| s.to_string())
            })
            .unwrap_or_else(|| format!("exit code {code}"));
        Err(format!("paddock {verb}: {why}"))
    }

    /// The binary as an existing path (checked before spawning: a failed exec would make the
    /// standard library wait for the child, which the reaper may already have reaped).
    fn locate(&self) -> Result<PathBuf, String> {
        if self.binary.components().count() > 1 {
            return if self.binary.is_file() {
                Ok(self.binary.clone())
            } else {
                Err(format!(
                    "runtime binary {} not found",
                    self.binary.display()
                ))
            };
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|d| d.join(&self.binary))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("runtime binary {} not found on PATH", self.binary.display()))
    }
}

/// Cleans the library search path the shim's children inherit: a logging binary, and what
/// `paddock` starts with its environment (paddock itself is linked statically and reads none).
/// Call once, while the shim is single-threaded. containerd appends its `opt` library directory
/// to `LD_LIBRARY_PATH` (`":<root>/opt/lib"` when it was unset), which leaves an empty entry,
/// the current directory (the bundle, for the shim), and usually names a directory that does
/// not exist: a dynamic loader then probes ~30 paths in each for every library it loads.
pub fn clean_library_path() {
    let Some(value) = std::env::var_os("LD_LIBRARY_PATH") else {
        return;
    };
    match library_path(&value, |d| d.is_dir()) {
        Some(kept) if kept != value => std::env::set_var("LD_LIBRARY_PATH", kept),
        Some(_) => {}
        None => std::env::remove_var("LD_LIBRARY_PATH"),
    }
}

/// `value` without its empty entries (the current directory) and without the directories
/// `exists` denies; `None` when nothing is left.
fn library_path(value: &OsStr, exists: impl Fn(&Path) -> bool) -> Option<OsString> {
    let kept: Vec<PathBuf> = std::env::split_paths(value)
        .filter(|d| !d.as_os_str().is_empty() && exists(d))
        .collect();
    if kept.is_empty() {
        return None;
    }
    std::env::join_paths(kept).ok()
}

/// The message of the last `error` line of a runc-style JSON log.
pub fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    parse_last_error(&text)
}

fn parse_last_error(text: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v.get("level")?.as_str()? == "error")
            .then(|| v.get("msg")?.as_str().map(str::to_string))
            .flatten()
    })
}

/// Reads a pid file written by `paddock --pid-file`.
pub fn read_pid(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("read pid file {}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| format!("pid file {}: {e}: {text:?}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_path_keeps_existing_directories_only() {
        let exists = |d: &Path| d != Path::new("/run/ctd/opt/lib");
        let lp = |v: &str| library_path(OsStr::new(v), exists);
        // containerd's own form: an unset path plus its opt directory
        assert_eq!(lp(":/run/ctd/opt/lib"), None);
        assert_eq!(
            lp("/usr/local/lib::/run/ctd/opt/lib:/opt/x/lib"),
            Some("/usr/local/lib:/opt/x/lib".into())
        );
        assert_eq!(lp("/usr/local/lib"), Some("/usr/local/lib".into()));
        assert_eq!(lp(""), None);
    }

    #[test]
    fn last_error_line_wins() {
        let log = r#"{"level":"info","msg":"creating","time":"t"}
{"level":"error","msg":"first","time":"t"}
not json
{"level":"error","msg":"annotation io.paddock.pids: not a number","time":"t"}
{"level":"debug","msg":"after","time":"t"}"#;
        assert_eq!(
            parse_last_error(log).as_deref(),
            Some("annotation io.paddock.pids: not a number")
        );
        assert_eq!(parse_last_error(r#"{"level":"info","msg":"x"}"#), None);
        assert_eq!(parse_last_error(""), None);
    }
}
