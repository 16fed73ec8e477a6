//! runc's `--log` and `--log-format`: one line per event, `json` as logrus writes it
//! (`{"level":…,"msg":…,"time":…}`, which containerd's runc shim parses for the last error)
//! or logrus' text form.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

struct FileLayer {
    file: Mutex<Box<dyn Write + Send>>,
    format: Format,
    max: Level,
}

#[derive(Default)]
struct Fields {
    msg: String,
    extra: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.msg, "{value:?}");
        } else {
            let _ = write!(self.extra, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg.push_str(value);
        } else {
            let _ = write!(self.extra, " {}={value:?}", field.name());
        }
    }
}

impl<S: Subscriber> Layer<S> for FileLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > self.max {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let msg = format!("{}{}", f.msg, f.extra);
        let line = match self.format {
            Format::Json => {
                serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
            }
            Format::Text => format!("time={time:?} level={level} msg={msg:?}"),
        };
        if let Ok(mut w) = self.file.lock() {
            let _ = writeln!(w, "{line}");
        }
    }
}

/// Installs the logger. Without `--log`, warnings and errors go to stderr only through the
/// binary's own error line, so nothing else is printed there.
pub fn init(path: Option<&Path>, format: Format, debug: bool) -> std::io::Result<()> {
    let Some(path) = path else { return Ok(()) };
    let file: Box<dyn Write + Send> = if path == Path::new("/dev/stderr") {
        Box::new(std::io::stderr())
    } else {
        let f: File = OpenOptions::new().create(true).append(true).open(path)?;
        Box::new(f)
    };
    let layer = FileLayer {
        file: Mutex::new(file),
        format,
        max: if debug { Level::DEBUG } else { Level::INFO },
    };
    let _ = tracing_subscriber::registry().with(layer).try_init();
    Ok(())
}
