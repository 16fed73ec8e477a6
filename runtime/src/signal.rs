//! Signal names and numbers as runc accepts them: `9`, `KILL`, `SIGKILL`, `sigkill`.

use nix::sys::signal::Signal;

use crate::error::{Error, Result};

/// Parses a signal given on the command line.
pub fn parse(raw: &str) -> Result<Signal> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Signal(raw.to_string()));
    }
    let upper = raw.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| Error::Signal(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("9").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse("KILL").ok(), Some(Signal::SIGKILL));
        assert_eq!(parse("sigterm").ok(), Some(Signal::SIGTERM));
        assert_eq!(parse("SIGUSR1").ok(), Some(Signal::SIGUSR1));
        assert_eq!(parse("hup").ok(), Some(Signal::SIGHUP));
    }

    #[test]
    fn rejects_unknown() {
        for s in ["", "0", "65", "-1", "SIGFOO", "KILLL", "9x"] {
            assert!(parse(s).is_err(), "{s}");
        }
    }
}
