//! How an app starts: `--command`, else the `web:` line of its `Procfile`, else an executable
//! `start` script at the top of the app directory (the buildpack conventions of Cloud Foundry).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// Where the app's files are inside an instance.
pub const APP_DIR: &str = "/app";

/// The start command and what it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartCommand {
    pub command: String,
    pub source: &'static str,
}

/// Finds the start command of the app in `dir`.
pub fn start_command(dir: &Path, given: Option<&str>) -> Result<StartCommand> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{}: not an app directory",
            dir.display()
        )));
    }
    if let Some(cmd) = given {
        if cmd.trim().is_empty() {
            return Err(Error::Invalid("--command is empty".into()));
        }
        return Ok(StartCommand {
            command: cmd.to_string(),
            source: "--command",
        });
    }
    let procfile = dir.join("Procfile");
    match fs::read_to_string(&procfile) {
        Ok(text) => {
            if let Some(cmd) = procfile_web(&text) {
                return Ok(StartCommand {
                    command: cmd,
                    source: "Procfile",
                });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read", procfile, e)),
    }
    let start = dir.join("start");
    if let Ok(meta) = fs::metadata(&start) {
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return Ok(StartCommand {
                command: format!("{APP_DIR}/start"),
                source: "start script",
            });
        }
    }
    Err(Error::NoStartCommand {
        dir: dir.to_path_buf(),
    })
}

/// The command of the `web:` process type of a Procfile, if it has one.
pub fn procfile_web(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .find(|(kind, _)| kind.trim() == "web")
        .map(|(_, cmd)| cmd.trim().to_string())
        .filter(|cmd| !cmd.is_empty())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn procfile() {
        assert_eq!(
            procfile_web("# app\nworker: ./w\nweb: httpd -f -p $PORT\n"),
            Some("httpd -f -p $PORT".into())
        );
        assert_eq!(procfile_web("worker: ./w\n"), None);
        assert_eq!(procfile_web("web:   \n"), None);
        assert_eq!(procfile_web("#web: x\n"), None);
    }

    #[test]
    fn detection_order() {
        let d = tempfile::tempdir().unwrap();
        let err = start_command(d.path(), None).unwrap_err().to_string();
        assert!(err.contains("no start command"), "{err}");
        fs::write(d.path().join("start"), "#!/bin/sh\n").unwrap();
        // not executable: still nothing
        assert!(start_command(d.path(), None).is_err());
        fs::set_permissions(d.path().join("start"), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            start_command(d.path(), None).unwrap().source,
            "start script"
        );
        fs::write(d.path().join("Procfile"), "web: ./server\n").unwrap();
        let s = start_command(d.path(), None).unwrap();
        assert_eq!((s.command.as_str(), s.source), ("./server", "Procfile"));
        let s = start_command(d.path(), Some("sleep 1")).unwrap();
        assert_eq!(s.source, "--command");
        assert!(start_command(d.path(), Some(" ")).is_err());
        // A mistyped directory is named as such, with or without --command.
        let missing = d.path().join("typo");
        for given in [None, Some("sleep 1")] {
            let err = start_command(&missing, given).unwrap_err().to_string();
            assert!(err.ends_with("typo: not an app directory"), "{err}");
        }
    }
}
