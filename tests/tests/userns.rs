//! `io.paddock.userns=true`: the sandbox gets its own 65536-id range from the pool, container
//! root is the range's base on the host, the rootfs stays readable and executable inside and
//! the writable volume belongs to the sandbox's root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

use paddock_tests::*;

const APP: &str = "t-userns";
const R: u64 = 65536;
/// The first id of an aligned 64K block.
const BASE: u32 = 31_500 * 65536;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn configure(w: &World, base: u32, size: u32) {
    fs::write(
        w.path().join("config.toml"),
        format!(
            "[identity]\nbase = {base}\nsize = {size}\nlease_dir = \"{}\"\n\
             [acl]\ndeny = []\n[quota]\nstore = \"{}\"\n",
            w.path().join("leases").display(),
            w.path().join("quota").display()
        ),
    )
    .unwrap();
}

/// A world whose directories an unprivileged uid can traverse (a user namespace's root is one).
fn world() -> World {
    let w = World::new();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o711)).unwrap();
    w
}

fn leases(w: &World) -> usize {
    fs::read_dir(w.path().join("leases"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn container_root_is_the_range_base_on_the_host() {
    if !require_root() {
        return;
    }
    let w = world();
    configure(&w, BASE, 3 * R as u32 + 100);
    let b = w.bundle(
        "b",
        &[
            "--",
            "sh",
            "-c",
            "echo hi > /home/vcap/written && mkdir /home/vcap/d && sleep 1000",
        ],
    );
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({
            "io.paddock.app": APP, "io.paddock.userns": "true", "io.paddock.disk": "8M"
        })
    });
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    w.paddock(&["run", "-d", "--bundle", s(&b), "u1"]).ok();
    let st = w.state("u1");
    let base = st["identity"]["uid"].as_u64().unwrap();
    assert_eq!(st["identity"]["range"], R, "{st}");
    assert_eq!(base % R, 0, "range not aligned: {base}");
    assert!(
        (u64::from(BASE)..u64::from(BASE) + 3 * R + 100).contains(&(base + R - 1)),
        "{base}"
    );
    // Ranges come from the top of the pool, single ids from the bottom.
    assert_eq!(base, u64::from(BASE) + 2 * R);
    let pid = st["pid"].as_i64().unwrap();

    // The maps, seen from the host.
    for map in ["uid_map", "gid_map"] {
        let text = fs::read_to_string(format!("/proc/{pid}/{map}")).unwrap();
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(
            fields,
            ["0", &base.to_string(), &R.to_string()],
            "{map}: {text}"
        );
    }
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uids.split_whitespace()
            .skip(1)
            .all(|u| u == base.to_string()),
        "{uids}"
    );
    // Inside, it is root, and an exec'd process is in the namespace too: its root is the
    // range's base on the host, not host root.
    let out = w.paddock(&["exec", "u1", "id", "-u"]);
    assert_eq!(out.stdout.trim(), "0", "{}", out.stderr);
    let out = w.paddock(&[
        "exec",
        "u1",
        "cat",
        "/proc/self/uid_map",
        "/proc/self/gid_map",
    ]);
    let fields: Vec<&str> = out.stdout.split_whitespace().collect();
    let (b, r) = (base.to_string(), R.to_string());
    assert_eq!(fields, ["0", &b, &r, "0", &b, &r], "{}", out.stderr);
    let out = w.paddock(&[
        "exec",
        "-d",
        "--pid-file",
        s(&w.path().join("e.pid")),
        "u1",
        "sleep",
        "1000",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let epid = fs::read_to_string(w.path().join("e.pid")).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", epid.trim())).unwrap();
    for key in ["Uid:", "Gid:"] {
        let line = status.lines().find(|l| l.starts_with(key)).unwrap();
        assert!(
            line.split_whitespace().skip(1).all(|u| u == b),
            "exec'd process: {line}"
        );
    }

    // A file written inside belongs to the range's base on the host.
    let key = {
        let p = w.root.join(".paddock/u1/sandbox.json");
        let rec: serde_json::Value = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
        rec["volume"]["id"].as_str().unwrap().to_string()
    };
    let vol = w.path().join("quota/volumes").join(key);
    assert!(eventually(std::time::Duration::from_secs(5), || vol
        .join("d")
        .exists()));
    for p in [vol.join("written"), vol.join("d"), vol.clone()] {
        let m = fs::metadata(&p).unwrap();
        assert_eq!(
            (u64::from(m.uid()), u64::from(m.gid())),
            (base, base),
            "{}",
            p.display()
        );
    }
    assert_eq!(fs::read_to_string(vol.join("written")).unwrap(), "hi\n");

    // The rootfs (host root's) is readable and executable inside.
    let out = w.paddock(&[
        "exec",
        "u1",
        "sh",
        "-c",
        "cat /etc/passwd >/dev/null && /bin/busybox true && ls /bin | wc -l",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.trim().parse::<u32>().unwrap() > 100,
        "{}",
        out.stdout
    );
    // ...but it cannot write there.
    let r = w.paddock(&["exec", "u1", "sh", "-c", "touch /bin/x"]);
    assert_ne!(r.code, 0);
    w.paddock(&["delete", "--force", "u1"]).ok();
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

/// Single ids and ranges leased by concurrent creates never overlap, and when no aligned range
/// is left the error says so.
#[test]
fn concurrent_single_and_range_leases_never_overlap() {
    if !require_root() {
        return;
    }
    let w = world();
    // 100 ids below two aligned blocks: the singles stay below, two ranges fit and a third
    // does not, in whatever order the creates take their leases.
    configure(&w, BASE - 100, 2 * R as u32 + 100);
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    let bn = w.bundle("bn", &["--", "sleep", "1000"]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({"io.paddock.app": APP})
    });
    w.edit_spec(
        &bn,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.userns": "true"})
        },
    );
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    let jobs: Vec<(String, &Path)> = (0..24)
        .map(|i| {
            if i % 8 == 3 {
                (format!("n{i}"), bn.as_path())
            } else {
                (format!("s{i}"), b.as_path())
            }
        })
        .collect();
    // stderr to files: a pipe would be held open by the sandboxes' inits.
    let mut children: Vec<_> = jobs
        .iter()
        .map(|(id, bundle)| {
            let err = fs::File::create(w.path().join(format!("{id}.err"))).unwrap();
            Command::new(paddock_bin())
                .env("PADDOCK_CONFIG", w.path().join("config.toml"))
                .arg("--root")
                .arg(&w.root)
                .args(["create", "--bundle", s(bundle), id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .unwrap()
        })
        .collect();
    let results: Vec<(bool, String)> = children
        .iter_mut()
        .zip(&jobs)
        .map(|(c, (id, _))| {
            let ok = c.wait().unwrap().success();
            let err = fs::read_to_string(w.path().join(format!("{id}.err"))).unwrap();
            (ok, err)
        })
        .collect();
    reap_orphans();
    let mut spans: Vec<(u64, u64, String)> = Vec::new();
    let mut refused = 0;
    for ((id, _), (ok, err)) in jobs.iter().zip(&results) {
        if !ok {
            // Three range creates, room for two ranges: exactly one is refused.
            assert!(id.starts_with('n'), "{id}: {err}");
            assert!(err.contains("no free range of 65536 ids"), "{err}");
            refused += 1;
            continue;
        }
        let st = w.state(id);
        let uid = st["identity"]["uid"].as_u64().unwrap();
        let n = st["identity"]["range"].as_u64().unwrap_or(1);
        assert_eq!(n, if id.starts_with('n') { R } else { 1 });
        spans.push((uid, uid + n, id.clone()));
    }
    assert_eq!(refused, 1);
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "overlap: {pair:?}");
    }
    let ids: BTreeSet<&String> = spans.iter().map(|s| &s.2).collect();
    for id in ids {
        w.paddock(&["delete", "--force", id]).ok();
    }
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

/// The sandbox's root is an unprivileged host uid: a rootfs it cannot reach is a clear error
/// at create, before anything is leased or made.
#[test]
fn an_unreachable_rootfs_is_a_clear_error() {
    if !require_root() {
        return;
    }
    let w = World::new();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o700)).unwrap();
    configure(&w, BASE, 3 * R as u32);
    let b = w.bundle("b", &["--", "true"]);
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.userns": "true"})
        },
    );
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    let r = w.paddock(&["create", "--bundle", s(&b), "x"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("io.paddock.userns")
            && r.stderr
                .contains(&format!("{} is mode 0700", w.path().display())),
        "{}",
        r.stderr
    );
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
    let r = w.paddock(&["create", "--bundle", s(&b), "x"]);
    assert_ne!(r.code, 0);
    // A bad value names the annotation.
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.userns": "yes"})
        },
    );
    let r = w.paddock(&["create", "--bundle", s(&b), "x"]);
    assert!(r.stderr.contains("io.paddock.userns"), "{}", r.stderr);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

/// `paddock` run with supplementary groups (here adm and sudo) hands none of them to the
/// sandbox's processes, with or without a user namespace, init or exec'd.
#[test]
fn the_callers_supplementary_groups_never_reach_the_sandbox() {
    if !require_root() {
        return;
    }
    let w = world();
    configure(&w, BASE, 2 * R as u32);
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    // stdout and stderr on files: a sandbox inherits them, a pipe would wait for its end.
    let (out_file, err_file) = (w.path().join("g.out"), w.path().join("g.err"));
    let with_groups = |args: &[&str]| {
        let status = Command::new("setpriv")
            .args(["--groups", "4,27", "--"])
            .arg(paddock_bin())
            .env("PADDOCK_CONFIG", w.path().join("config.toml"))
            .arg("--root")
            .arg(&w.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_file).unwrap())
            .stderr(fs::File::create(&err_file).unwrap())
            .status()
            .unwrap();
        reap_orphans();
        let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
        Run {
            code: status.code().unwrap_or(-1),
            stdout: read(&out_file),
            stderr: read(&err_file),
        }
    };
    let groups = |status: &str| -> String {
        status
            .lines()
            .find(|l| l.starts_with("Groups:"))
            .unwrap()
            .trim_start_matches("Groups:")
            .trim()
            .to_string()
    };
    // The check itself: setpriv does give the caller those groups.
    let own = Command::new("setpriv")
        .args(["--groups", "4,27", "--", "cat", "/proc/self/status"])
        .output()
        .unwrap();
    assert_eq!(groups(&String::from_utf8_lossy(&own.stdout)), "4 27");
    for userns in ["false", "true"] {
        w.edit_spec(
            &b,
            |v| {
                v["annotations"] =
                    serde_json::json!({"io.paddock.app": APP, "io.paddock.userns": userns})
            },
        );
        with_groups(&["run", "-d", "--bundle", s(&b), "g1"]).ok();
        let pid = w.state("g1")["pid"].as_i64().unwrap();
        let init = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert_eq!(groups(&init), "", "userns={userns}: init");
        let out = with_groups(&["exec", "g1", "cat", "/proc/self/status"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(groups(&out.stdout), "", "userns={userns}: exec'd");
        w.paddock(&["delete", "--force", "g1"]).ok();
    }
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}
