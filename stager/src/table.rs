//! `ps` and `run` output: an aligned table for people, JSON for programs.

use crate::limits::human;
use crate::node::Row;

pub fn render(rows: &[Row]) -> String {
    let mut lines = vec![[
        "INDEX".to_string(),
        "ID".into(),
        "HOST-PORT".into(),
        "STATE".into(),
        "MEMORY".into(),
        "CPU".into(),
        "DISK".into(),
        "RESTARTS".into(),
        "OOM".into(),
        "LAST-EXIT".into(),
    ]];
    for r in rows {
        lines.push([
            r.index.to_string(),
            r.id.clone(),
            r.host_port.to_string(),
            r.state.clone(),
            format!("{}/{}", human(r.memory_bytes), human(r.memory_limit)),
            format!("{:.2}s", r.cpu_ns as f64 / 1e9),
            format!("{}/{}", human(r.disk_bytes), human(r.disk_limit)),
            r.restarts.to_string(),
            r.oom_kills.to_string(),
            if r.last_exit.is_empty() {
                "-".into()
            } else {
                r.last_exit.clone()
            },
        ]);
    }
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| lines.iter().map(|l| l[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for l in &lines {
        let cells: Vec<String> = l
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let row = Row {
            index: 0,
            id: "hello-0-abcdef12".into(),
            guid: "g".into(),
            host_port: 61000,
            ip: "10.89.0.2".into(),
            state: "running".into(),
            pid: 1,
            memory_bytes: 3 << 20,
            memory_limit: 128 << 20,
            cpu_ns: 50_000_000,
            disk_bytes: 0,
            disk_limit: 256 << 20,
            restarts: 0,
            oom_kills: 0,
            last_exit: String::new(),
        };
        let t = render(&[row]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("INDEX  ID"));
        assert!(lines[1].contains("61000"));
        assert!(lines[1].contains("3M/128M"));
        assert!(lines[1].contains("0.05s"));
        assert!(lines[1].contains("0B/256M"));
    }
}
