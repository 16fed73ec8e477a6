//! ACLs of sandbox identities on a real ext4 filesystem: private writable directories, the
//! deny list (annotation and node config), and that every entry paddock adds goes at delete,
//! leaving the entries of other sandboxes and of the host as they were.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use paddock_tests::*;

const APP: &str = "t-acl";
const BASE: u32 = 2_060_000_000;
const ADMIN: u32 = 2_060_900_000;
/// A host account's entry the tests put on shared files: it must survive every delete.
const HOST_UID: u32 = 1234;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes the world's node config: a pool of its own, the quota store at `store`, an admin
/// group and the node's deny list.
fn configure(w: &World, store: &Path, size: u32, deny: &[&str]) {
    let deny: Vec<String> = deny.iter().map(|d| format!("{d:?}")).collect();
    fs::write(
        w.path().join("config.toml"),
        format!(
            "[identity]\nbase = {BASE}\nsize = {size}\nlease_dir = \"{}\"\n\
             [acl]\nadmin_gid = {ADMIN}\ndeny = [{}]\n[quota]\nstore = \"{}\"\n",
            w.path().join("leases").display(),
            deny.join(", "),
            store.display()
        ),
    )
    .unwrap();
}

fn getfacl(p: &Path) -> String {
    let out = sh(&format!(
        "getfacl -n --omit-header --absolute-names '{}'",
        p.display()
    ));
    assert!(
        out.status.success(),
        "getfacl {}: {}",
        p.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every ACL entry naming `uid` under `dir` (recursively), as `path: entry` lines.
fn entries_of(uid: u32, dir: &Path) -> Vec<String> {
    let out = sh(&format!(
        "getfacl -R -n --absolute-names -P '{}' 2>/dev/null",
        dir.display()
    ));
    let mut file = String::new();
    let mut found: Vec<String> = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(f) = line.strip_prefix("# file: ") {
            file = f.to_string();
        } else if line.contains(&format!(":{uid}:")) {
            found.push(format!("{file}: {line}"));
        }
    }
    found.sort();
    found
}

fn uid_of(w: &World, id: &str) -> u32 {
    w.state(id)["identity"]["uid"].as_u64().unwrap() as u32
}

fn record(w: &World, id: &str) -> serde_json::Value {
    let p = w.root.join(".paddock").join(id).join("sandbox.json");
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn leases(w: &World) -> usize {
    fs::read_dir(w.path().join("leases"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A copy of busybox at `rel` in the bundle's rootfs: a real file with one link, unlike the
/// applet symlinks.
fn copy_busybox(bundle: &Path, rel: &str) -> PathBuf {
    let dst = bundle.join("rootfs").join(rel);
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    fs::copy(bundle.join("rootfs/bin/busybox"), &dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

fn exec(w: &World, id: &str, script: &str) -> Run {
    w.paddock(&["exec", id, "sh", "-c", script])
}

/// A host directory bind-mounted onto itself and made shared, so that volumes mounted below it
/// after a sandbox started still show up inside it (as on a node exporting its data directory).
struct SharedDir(PathBuf);

impl SharedDir {
    fn new(path: PathBuf) -> Self {
        fs::create_dir_all(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let p = path.display();
        let out = sh(&format!(
            "mount --bind '{p}' '{p}' && mount --make-shared '{p}'"
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(path)
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = sh(&format!("umount '{}'", self.0.display()));
    }
}

/// Two sandboxes both see a shared host directory holding their volumes and a host file denied
/// to both. Neither can read, write or list the other's directory; the file carries both deny
/// entries and the host's; each delete takes out its own entries only.
#[test]
fn two_sandboxes_on_a_shared_directory_keep_apart() {
    if !require_root() {
        return;
    }
    let w = World::new();
    // Host-side checks run as other uids: let them through the world's temp dir.
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let shared = SharedDir::new(w.path().join("shared"));
    let store = shared.0.join("quota");
    configure(&w, &store, 16, &[]);
    let tool = shared.0.join("tool");
    fs::copy("/bin/busybox", &tool).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        sh(&format!("setfacl -m u:{HOST_UID}:r-x '{}'", tool.display()))
            .status
            .success()
    );
    let host_acl = getfacl(&tool);

    let b = w.bundle("b", &["--", "sleep", "1000"]);
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({
            "io.paddock.app": APP, "io.paddock.disk": "8M", "io.paddock.acl.deny": "/shared/tool"
        });
        v["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/shared", "type": "bind", "source": s(&shared.0),
            "options": ["rbind", "rw"]
        }));
    });
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    for id in ["a", "b"] {
        w.paddock(&["run", "-d", "--bundle", s(&b), id]).ok();
    }
    // The operator's layout lets every uid traverse down to the volumes: only their own mode
    // and ACLs keep the sandboxes apart.
    for d in [&store, &store.join("volumes")] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let (ua, ub) = (uid_of(&w, "a"), uid_of(&w, "b"));
    assert_ne!(ua, ub);
    let vol = |id: &str| {
        let key = record(&w, id)["volume"]["id"].as_str().unwrap().to_string();
        (key.clone(), store.join("volumes").join(key))
    };
    let ((ka, va), (kb, vb)) = (vol("a"), vol("b"));

    // On the host: owned by the identity, mode 0700 (the group bits show the ACL mask), ACLs for
    // the identity and the admin group only.
    for (dir, uid) in [(&va, ua), (&vb, ub)] {
        let meta = fs::metadata(dir).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, uid));
        assert_eq!(meta.mode() & 0o7707, 0o700, "{:o}", meta.mode());
        assert_eq!(
            getfacl(dir),
            format!(
                "user::rwx\nuser:{uid}:rwx\ngroup::---\ngroup:{ADMIN}:rwx\nmask::rwx\nother::---\n\
                 default:user::rwx\ndefault:user:{uid}:rwx\ndefault:group::---\n\
                 default:group:{ADMIN}:rwx\ndefault:mask::rwx\ndefault:other::---\n\n"
            )
        );
    }

    for (me, mine, theirs, their_uid) in [("a", &ka, &kb, ub), ("b", &kb, &ka, ua)] {
        let own = format!("/shared/quota/volumes/{mine}");
        let other = format!("/shared/quota/volumes/{theirs}");
        let r = exec(
            &w,
            me,
            &format!("echo {me} > /home/vcap/secret && ls {own} && cat {own}/secret"),
        );
        assert_eq!(r.code, 0, "{me} cannot use its own directory: {}", r.stderr);
        assert!(r.stdout.contains("secret"), "{}", r.stdout);
        // It does see the other's volume (owned by the other identity), not an empty mountpoint.
        let r = exec(&w, me, &format!("stat -c %u {other}"));
        assert_eq!(r.stdout.trim(), their_uid.to_string(), "{}", r.stderr);
        for script in [
            format!("ls {other}"),
            format!("cat {other}/secret"),
            format!("touch {other}/new"),
            format!("echo x > {other}/secret"),
            format!("cd {other}"),
        ] {
            let r = exec(&w, me, &script);
            assert_ne!(r.code, 0, "{me} could run `{script}`");
            assert!(
                r.stderr.contains("Permission denied"),
                "{me}: {script}: {}",
                r.stderr
            );
        }
        // The shared file is denied to both: neither run nor read.
        let r = exec(&w, me, "/shared/tool true");
        assert_eq!(r.code, 126, "{me} ran a denied binary: {}", r.stderr);
        assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
        let r = exec(&w, me, "cat /shared/tool > /dev/null");
        assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    }
    // The platform's admin group reaches both directories from the host.
    for (dir, want) in [(&va, "a"), (&vb, "b")] {
        let out = sh(&format!(
            "setpriv --reuid=2060900001 --regid={ADMIN} --clear-groups cat '{}/secret'",
            dir.display()
        ));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let facl = getfacl(&tool);
    for uid in [ua, ub] {
        assert!(facl.contains(&format!("user:{uid}:---\n")), "{facl}");
    }
    assert!(facl.contains(&format!("user:{HOST_UID}:r-x\n")), "{facl}");
    w.paddock(&["delete", "--force", "a"]).ok();
    let facl = getfacl(&tool);
    assert!(!facl.contains(&format!("user:{ua}:")), "{facl}");
    assert!(facl.contains(&format!("user:{ub}:---\n")), "{facl}");
    assert!(facl.contains(&format!("user:{HOST_UID}:r-x\n")), "{facl}");
    // b still cannot run it.
    assert_eq!(exec(&w, "b", "/shared/tool true").code, 126);
    w.paddock(&["delete", "--force", "b"]).ok();
    assert_eq!(
        getfacl(&tool),
        host_acl,
        "the host's ACL is back byte for byte"
    );
    for uid in [ua, ub] {
        assert_eq!(entries_of(uid, &shared.0), Vec::<String>::new());
    }
    assert!(!va.exists() && !vb.exists());
    assert_eq!(leases(&w), 0, "identities not returned");
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

/// Deny paths of the annotation and of the node list inside the rootfs: the binary fails with
/// EACCES, others run; busybox applet symlinks in the node list are skipped (else every command
/// would be denied); delete takes every entry out and the uid is leased again.
#[test]
fn a_denied_binary_fails_with_eacces_and_applet_links_are_left_alone() {
    if !require_root() {
        return;
    }
    let w = World::new();
    configure(
        &w,
        &w.path().join("quota"),
        16,
        &["/bin/su", "/bin/mount", "/usr/bin/cc", "/usr/bin/nope"],
    );
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    let tool = copy_busybox(&b, "usr/bin/tool");
    let cc = copy_busybox(&b, "usr/bin/cc");
    // Named like an applet, so that busybox runs it as one.
    let free = copy_busybox(&b, "usr/bin/true");
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.acl.deny": "/usr/bin/tool"})
        },
    );
    let rootfs = b.join("rootfs");
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    w.paddock(&["run", "-d", "--bundle", s(&b), "d1"]).ok();
    let uid = uid_of(&w, "d1");

    for denied in ["/usr/bin/tool", "/usr/bin/cc"] {
        let r = exec(&w, "d1", &format!("{denied} true"));
        assert_eq!(r.code, 126, "{denied}: {} {}", r.stdout, r.stderr);
        assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
        let r = exec(&w, "d1", &format!("cat {denied} > /dev/null"));
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains("Permission denied"), "{}", r.stderr);
    }
    // Not denied: another copy, and every applet (su and mount are links to busybox).
    let r = exec(
        &w,
        "d1",
        "/usr/bin/true && ls / >/dev/null && su --help; echo ok",
    );
    assert!(r.stdout.contains("ok"), "{} {}", r.stdout, r.stderr);
    assert_eq!(exec(&w, "d1", "/usr/bin/true").code, 0);
    assert_eq!(
        entries_of(uid, &rootfs),
        vec![
            format!("{}: user:{uid}:---", cc.display()),
            format!("{}: user:{uid}:---", tool.display()),
        ]
    );
    assert_eq!(
        getfacl(&rootfs.join("bin/busybox")),
        "user::rwx\ngroup::r-x\nother::r-x\n\n"
    );
    // The record names what was added.
    let rec = record(&w, "d1");
    let mut denied: Vec<String> = rec["access"]["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    denied.sort();
    assert_eq!(
        denied,
        vec![cc.display().to_string(), tool.display().to_string()]
    );
    assert_eq!(rec["access"]["uids"], serde_json::json!([uid]));

    w.paddock(&["delete", "--force", "d1"]).ok();
    assert_eq!(entries_of(uid, &rootfs), Vec::<String>::new());
    for f in [&tool, &cc, &free] {
        assert_eq!(getfacl(f), "user::rwx\ngroup::r-x\nother::r-x\n\n");
        assert_eq!(fs::metadata(f).unwrap().mode() & 0o7777, 0o755);
    }
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
    // The uid is back in the pool: the next sandbox gets it (lowest free first).
    w.paddock(&["create", "--bundle", s(&b), "d2"]).ok();
    assert_eq!(uid_of(&w, "d2"), uid);
    w.paddock(&["delete", "--force", "d2"]).ok();
    assert_eq!(entries_of(uid, &rootfs), Vec::<String>::new());
}

/// A crash after the entries were added (the engine's state lost, processes still running):
/// `delete --force` finds them in the record and takes them out.
#[test]
fn delete_force_after_a_crash_removes_the_entries() {
    if !require_root() {
        return;
    }
    let w = World::new();
    configure(&w, &w.path().join("quota"), 16, &[]);
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    copy_busybox(&b, "usr/bin/tool");
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.acl.deny": "/usr/bin/tool"})
        },
    );
    let rootfs = b.join("rootfs");
    w.paddock(&["run", "-d", "--bundle", s(&b), "c1"]).ok();
    let uid = uid_of(&w, "c1");
    assert_eq!(entries_of(uid, &rootfs).len(), 1);
    fs::remove_dir_all(w.root.join("c1")).unwrap();
    w.paddock(&["delete", "--force", "c1"]).ok();
    assert_eq!(entries_of(uid, &rootfs), Vec::<String>::new());
    assert_eq!(leases(&w), 0);
    assert_ne!(w.paddock(&["state", "c1"]).code, 0);
}

/// Bad deny lists (annotation or node config), a missing deny path, a symlink named explicitly,
/// an exhausted pool: one clear line, non-zero exit, no lease, no ACL entry, nothing else left.
#[test]
fn bad_deny_lists_and_an_exhausted_pool_leave_nothing() {
    if !require_root() {
        return;
    }
    let w = World::new();
    // The node list names a hard-linked file (skipped) and a plain one.
    configure(
        &w,
        &w.path().join("quota"),
        1,
        &["/usr/bin/tool", "/usr/bin/tool3"],
    );
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    copy_busybox(&b, "usr/bin/tool");
    copy_busybox(&b, "usr/bin/tool3");
    fs::hard_link(
        b.join("rootfs/usr/bin/tool"),
        b.join("rootfs/usr/bin/tool-link"),
    )
    .unwrap();
    copy_busybox(&b, "usr/bin/tool2");
    let rootfs = b.join("rootfs");
    let acls_before = sh(&format!("getfacl -R -n -P '{}'", rootfs.display())).stdout;
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    for (value, want) in [
        ("usr/bin/tool2", "usr/bin/tool2 is not an absolute path"),
        ("/usr/bin/tool2,,/bin/ls", "entry 2 is empty"),
        ("/usr/../etc/passwd", "has a . or .. component"),
        (
            "/usr/bin/tool2,/usr/bin/nope",
            "/usr/bin/nope does not exist in the sandbox",
        ),
        ("/bin/su", "/bin/su is a symbolic link (to busybox)"),
        ("/usr/bin/tool-link", "has 2 hard links"),
        ("/tmp/x", "is on the sandbox's tmpfs mount at /tmp"),
    ] {
        w.edit_spec(
            &b,
            |v| {
                v["annotations"] =
                    serde_json::json!({"io.paddock.app": APP, "io.paddock.acl.deny": value})
            },
        );
        let r = w.paddock(&["create", "--bundle", s(&b), "bad"]);
        assert_ne!(r.code, 0, "{value} accepted");
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("io.paddock.acl.deny") && r.stderr.contains(want),
            "{value}: {} (wanted {want})",
            r.stderr
        );
        assert_eq!(leases(&w), 0, "{value}");
    }
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));

    // The only id is taken: the next create fails before denying anything.
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.acl.deny": "/usr/bin/tool2"})
        },
    );
    w.paddock(&["create", "--bundle", s(&b), "one"]).ok();
    let uid = uid_of(&w, "one");
    let held = entries_of(uid, &rootfs);
    assert_eq!(held.len(), 2, "{held:?}");
    let r = w.paddock(&["create", "--bundle", s(&b), "two"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("exhausted"), "{}", r.stderr);
    assert_eq!(
        entries_of(uid, &rootfs),
        held,
        "entries of the live sandbox untouched"
    );
    assert_ne!(w.paddock(&["state", "two"]).code, 0);
    w.paddock(&["delete", "--force", "one"]).ok();
    assert_eq!(
        sh(&format!("getfacl -R -n -P '{}'", rootfs.display())).stdout,
        acls_before,
        "every ACL in the rootfs is as it was"
    );

    // A malformed node deny list: the config key is named.
    fs::write(
        w.path().join("config.toml"),
        "[acl]\ndeny = [\"/usr/bin/su\", \"gcc\"]\n",
    )
    .unwrap();
    let r = w.paddock(&["create", "--bundle", s(&b), "bad"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("key acl.deny: gcc is not an absolute path"),
        "{}",
        r.stderr
    );
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

/// With a user namespace the deny list (annotation and node list) names container root's host
/// id and the app user's: the sandbox's own process and processes exec'd into it (which join
/// the namespace) get EACCES on exec and read of a denied file; other copies still run; delete
/// takes every entry out and returns the range.
#[test]
fn a_denied_binary_fails_with_eacces_in_a_user_namespace() {
    if !require_root() {
        return;
    }
    let w = World::new();
    // A user namespace's root is an unprivileged host uid: it must reach the bundle.
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o711)).unwrap();
    // Room for one aligned 65536-id range.
    configure(
        &w,
        &w.path().join("quota"),
        200_000,
        &["/usr/bin/node-denied", "/bin/su", "/usr/bin/nope"],
    );
    let b = w.bundle(
        "b",
        &[
            "--",
            "sh",
            "-c",
            "/usr/bin/cc true; echo \"exec $?\" > /tmp/init.out; \
             cat /usr/bin/cc > /dev/null; echo \"read $?\" >> /tmp/init.out; sleep 1000",
        ],
    );
    let cc = copy_busybox(&b, "usr/bin/cc");
    let node_denied = copy_busybox(&b, "usr/bin/node-denied");
    let free = copy_busybox(&b, "usr/bin/true");
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({
            "io.paddock.app": APP, "io.paddock.userns": "true", "io.paddock.acl.deny": "/usr/bin/cc"
        });
        // The app runs as 1000 inside: host id base + 1000.
        v["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
    });
    let rootfs = b.join("rootfs");
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    w.paddock(&["run", "-d", "--bundle", s(&b), "n1"]).ok();
    let st = w.state("n1");
    assert_eq!(st["identity"]["range"], 65536, "{st}");
    let base = uid_of(&w, "n1");
    let app = base + 1000;

    // Both host ids are denied, on the annotation's file and the node list's; the busybox
    // applet link /bin/su and the missing path are skipped.
    for f in [&cc, &node_denied] {
        assert_eq!(
            getfacl(f),
            format!(
                "user::rwx\nuser:{base}:---\nuser:{app}:---\ngroup::r-x\nmask::r-x\nother::r-x\n\n"
            ),
            "{}",
            f.display()
        );
    }
    let rec = record(&w, "n1");
    assert_eq!(rec["access"]["uids"], serde_json::json!([base, app]));
    let mut denied: Vec<String> = rec["access"]["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    denied.sort();
    assert_eq!(
        denied,
        vec![cc.display().to_string(), node_denied.display().to_string()]
    );

    // The sandbox's own process (seen through its root from the host).
    let pid = st["pid"].as_i64().unwrap();
    let out = Path::new("/proc")
        .join(pid.to_string())
        .join("root/tmp/init.out");
    assert!(eventually(
        scaled(std::time::Duration::from_secs(5)),
        || { fs::read_to_string(&out).is_ok_and(|t| t.lines().count() == 2) }
    ));
    assert_eq!(fs::read_to_string(&out).unwrap(), "exec 126\nread 1\n");

    // Exec'd processes run inside the namespace, as the app's user and as container root.
    let r = exec(&w, "n1", "cat /proc/self/uid_map; id -u");
    let fields: Vec<&str> = r.stdout.split_whitespace().collect();
    assert_eq!(
        fields,
        ["0", &base.to_string(), "65536", "1000"],
        "{}",
        r.stderr
    );
    for user in [None, Some("0")] {
        let run = |script: &str| match user {
            None => exec(&w, "n1", script),
            Some(u) => w.paddock(&["exec", "--user", u, "n1", "sh", "-c", script]),
        };
        for denied in ["/usr/bin/cc", "/usr/bin/node-denied"] {
            let r = run(&format!("{denied} true"));
            assert_eq!(r.code, 126, "{user:?} {denied}: {} {}", r.stdout, r.stderr);
            assert!(
                r.stderr.contains(&format!("{denied}: Permission denied")),
                "{}",
                r.stderr
            );
            let r = run(&format!("cat {denied} > /dev/null"));
            assert_eq!(r.code, 1, "{user:?} {denied}: {}", r.stderr);
            assert!(
                r.stderr
                    .contains(&format!("can't open '{denied}': Permission denied")),
                "{}",
                r.stderr
            );
        }
        // Not denied: another copy and the applets (su is a link to busybox).
        let r = run("/usr/bin/true && /bin/busybox true && su --help; echo ok");
        assert!(r.stdout.contains("ok"), "{} {}", r.stdout, r.stderr);
    }
    // The denied binary exec'd directly: the engine's exec fails with EACCES.
    let r = w.paddock(&["exec", "n1", "/usr/bin/cc", "true"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("Permission denied") || r.stderr.contains("EACCES"),
        "{}",
        r.stderr
    );
    assert_eq!(
        w.paddock(&["exec", "n1", "/usr/bin/true"]).code,
        0,
        "a free copy runs"
    );

    w.paddock(&["delete", "--force", "n1"]).ok();
    for uid in [base, app] {
        assert_eq!(entries_of(uid, &rootfs), Vec::<String>::new());
    }
    for f in [&cc, &node_denied, &free] {
        assert_eq!(getfacl(f), "user::rwx\ngroup::r-x\nother::r-x\n\n");
        assert_eq!(fs::metadata(f).unwrap().mode() & 0o7777, 0o755);
    }
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

/// A deny path owned by an id of the pool (a rootfs chowned for a user namespace) cannot be
/// denied by a named entry (its owner gets the owner class): the annotation is refused with a
/// clear line, the node list skips it; nothing is left behind.
#[test]
fn a_pool_owned_deny_path_is_refused_in_a_user_namespace() {
    if !require_root() {
        return;
    }
    let w = World::new();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o711)).unwrap();
    configure(&w, &w.path().join("quota"), 200_000, &["/usr/bin/owned"]);
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    let owned = copy_busybox(&b, "usr/bin/owned");
    let owner = BASE + 150_000;
    std::os::unix::fs::chown(&owned, Some(owner), Some(owner)).unwrap();
    w.edit_spec(&b, |v| {
        v["annotations"] = serde_json::json!({
            "io.paddock.app": APP, "io.paddock.userns": "true", "io.paddock.acl.deny": "/usr/bin/owned"
        })
    });
    let rootfs = b.join("rootfs");
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    let r = w.paddock(&["create", "--bundle", s(&b), "o1"]);
    assert_ne!(r.code, 0);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("io.paddock.acl.deny")
            && r.stderr.contains(&format!(
                "/usr/bin/owned is owned by uid {owner} of the identity pool"
            )),
        "{}",
        r.stderr
    );
    assert_eq!(leases(&w), 0);
    assert_eq!(getfacl(&owned), "user::rwx\ngroup::r-x\nother::r-x\n\n");
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
    // The node list alone: skipped, the sandbox runs.
    w.edit_spec(
        &b,
        |v| {
            v["annotations"] =
                serde_json::json!({"io.paddock.app": APP, "io.paddock.userns": "true"})
        },
    );
    w.paddock(&["create", "--bundle", s(&b), "o2"]).ok();
    let base = uid_of(&w, "o2");
    assert_eq!(entries_of(base, &rootfs), Vec::<String>::new());
    assert!(record(&w, "o2")["access"].is_null());
    w.paddock(&["delete", "--force", "o2"]).ok();
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}

/// A process exec'd into a sandbox with a pool identity is held to it, whatever it asks: a
/// process spec as the containerd shim passes (the image's root, capabilities, groups) or
/// `--user 0 --cap …` runs as the sandbox's identity (in a user namespace: inside it), with no
/// capabilities, no supplementary groups and `no_new_privs`, and the deny list holds for it.
#[test]
fn exec_d_processes_are_held_to_the_identity() {
    if !require_root() {
        return;
    }
    let w = World::new();
    fs::set_permissions(w.path(), fs::Permissions::from_mode(0o711)).unwrap();
    configure(&w, &w.path().join("quota"), 200_000, &[]);
    let b = w.bundle("b", &["--", "sleep", "1000"]);
    copy_busybox(&b, "usr/bin/cc");
    let script = "grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status; \
                  /usr/bin/cc true; echo rc=$?";
    let process = w.path().join("process.json");
    fs::write(
        &process,
        serde_json::json!({
            "user": {"uid": 0, "gid": 0, "additionalGids": [4, 27]},
            "args": ["sh", "-c", script],
            "cwd": "/",
            "env": ["PATH=/bin:/usr/bin"],
            "noNewPrivileges": false,
            "capabilities": {
                "bounding": ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SETUID"],
                "effective": ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SETUID"],
                "permitted": ["CAP_SYS_ADMIN", "CAP_DAC_OVERRIDE", "CAP_SETUID"]
            }
        })
        .to_string(),
    )
    .unwrap();
    let before = snapshot(&w.root, &format!("paddock/{APP}"));
    for (id, userns) in [("h1", "false"), ("h2", "true")] {
        w.edit_spec(&b, |v| {
            v["annotations"] = serde_json::json!({
                "io.paddock.app": APP, "io.paddock.userns": userns,
                "io.paddock.acl.deny": "/usr/bin/cc"
            })
        });
        w.paddock(&["run", "-d", "--bundle", s(&b), id]).ok();
        let uid = uid_of(&w, id);
        for run in [
            w.paddock(&["exec", "--process", s(&process), id]),
            w.paddock(&[
                "exec",
                "--user",
                "0",
                "--cap",
                "CAP_DAC_OVERRIDE",
                id,
                "sh",
                "-c",
                script,
            ]),
        ] {
            assert_eq!(run.code, 0, "{id}: {}", run.stderr);
            let status: Vec<(&str, &str)> = run
                .stdout
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k, v.trim()))
                .collect();
            let get = |k: &str| status.iter().find(|(key, _)| *key == k).unwrap().1;
            // Seen from inside: a pool identity shows its host id; in a user namespace the
            // process is container root (the range's base on the host, checked in userns.rs).
            let me = if userns == "true" {
                "0".to_string()
            } else {
                uid.to_string()
            };
            for k in ["Uid", "Gid"] {
                assert!(
                    get(k).split_whitespace().all(|u| u == me),
                    "{id} {k}: {}",
                    run.stdout
                );
            }
            if userns == "true" {
                // Supplementary groups asked for inside the namespace are its own ids.
                assert!(
                    ["", "4 27"].contains(&get("Groups")),
                    "{id}: {}",
                    run.stdout
                );
            } else {
                assert_eq!(get("Groups"), "", "{id}: {}", run.stdout);
            }
            for k in ["CapEff", "CapPrm", "CapBnd"] {
                assert_eq!(get(k), "0000000000000000", "{id} {k}: {}", run.stdout);
            }
            assert_eq!(get("NoNewPrivs"), "1", "{id}: {}", run.stdout);
            assert!(run.stdout.contains("rc=126"), "{id}: {}", run.stdout);
            assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
        }
        // The rewritten process spec paddock handed the engine is gone.
        let leftovers: Vec<_> = fs::read_dir(w.root.join(".paddock").join(id))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("exec-process"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        w.paddock(&["delete", "--force", id]).ok();
    }
    assert_eq!(leases(&w), 0);
    assert_no_leak(&before, &w.root, &format!("paddock/{APP}"));
}
