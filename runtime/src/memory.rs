//! Memory limits paddock writes itself: the app level (`io.paddock.app.memory`), shared by all
//! of an app's instances, and the checks `update` makes against live usage.

use std::fs;
use std::path::PathBuf;

use crate::cgroups::Layout;
use crate::error::{Error, Result};

fn write(path: PathBuf, value: &str) -> Result<()> {
    fs::write(&path, value).map_err(|e| Error::io("write", path, e))
}

/// Sets a memory limit with no swap on the cgroup `rel` (e.g. `/paddock/shop`).
pub fn set_limit(layout: &Layout, rel: &str, limit: u64) -> Result<()> {
    let rel = rel.trim_start_matches('/');
    if layout.is_unified() {
        if let Some(h) = layout.v2() {
            let dir = h.mount_point.join(rel);
            write(dir.join("memory.max"), &limit.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(swap, "0")?;
            }
        }
        return Ok(());
    }
    let Some(h) = layout.v1("memory") else {
        return Err(Error::Invalid(
            "the memory controller is not mounted".into(),
        ));
    };
    let dir = h.mount_point.join(rel);
    let limit_file = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    // memsw must never be below the limit: raise in the order that keeps it so.
    let current = fs::read_to_string(&limit_file)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    if memsw.exists() && limit > current {
        write(memsw.clone(), &limit.to_string())?;
        write(limit_file, &limit.to_string())?;
    } else {
        write(limit_file, &limit.to_string())?;
        if memsw.exists() {
            write(memsw, &limit.to_string())?;
        }
    }
    Ok(())
}

/// What `memory.swap.max` must be for a spec's memory section, when paddock has to write it:
/// `swap` = `limit` (no swap, paddock's default) is 0 on cgroup v2, a value libcgroups never
/// writes (it skips zeros), which would leave swap unlimited.
pub fn v2_swap_max(memory: &oci_spec::runtime::LinuxMemory) -> Option<&'static str> {
    match (memory.limit(), memory.swap()) {
        (Some(limit), Some(swap)) if limit > 0 && swap == limit => Some("0"),
        _ => None,
    }
}

/// Writes the no-swap `memory.swap.max` of [`v2_swap_max`] on the v2 cgroup `rel`, after the
/// engine applied the rest of `memory`.
pub fn enforce_no_swap(
    layout: &Layout,
    rel: &str,
    memory: &oci_spec::runtime::LinuxMemory,
) -> Result<()> {
    let (Some(value), Some(h)) = (v2_swap_max(memory), layout.v2()) else {
        return Ok(());
    };
    if !layout.is_unified() {
        return Ok(());
    }
    let swap = h
        .mount_point
        .join(rel.trim_start_matches('/'))
        .join("memory.swap.max");
    if swap.exists() {
        write(swap, value)?;
    }
    Ok(())
}

/// Current memory usage of the cgroup at `rel`, in bytes.
pub fn usage(layout: &Layout, rel: &str) -> Option<u64> {
    let rel = rel.trim_start_matches('/');
    let path = if layout.is_unified() {
        layout.v2()?.mount_point.join(rel).join("memory.current")
    } else {
        layout
            .v1("memory")?
            .mount_point
            .join(rel)
            .join("memory.usage_in_bytes")
    };
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(text: String) -> Layout {
        Layout::from_mountinfo(&text)
    }

    #[test]
    fn v2_app_limit_has_no_swap() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = tmp.path().join("paddock/shop");
        std::fs::create_dir_all(&app).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(app.join("memory.swap.max"), "max").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(app.join("memory.current"), "4096").unwrap_or_else(|e| panic!("{e}"));
        let l = layout(format!(
            "25 20 0:22 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        ));
        set_limit(&l, "/paddock/shop", 256 << 20).unwrap_or_else(|e| panic!("{e}"));
        let read = |f: &str| std::fs::read_to_string(app.join(f)).unwrap_or_default();
        assert_eq!(read("memory.max"), (256u64 << 20).to_string());
        assert_eq!(read("memory.swap.max"), "0");
        assert_eq!(usage(&l, "/paddock/shop"), Some(4096));
    }

    #[test]
    fn v2_no_swap_is_written_where_libcgroups_skips_it() {
        let mem = |limit: Option<i64>, swap: Option<i64>| {
            let mut m = oci_spec::runtime::LinuxMemory::default();
            m.set_limit(limit);
            m.set_swap(swap);
            m
        };
        assert_eq!(v2_swap_max(&mem(Some(64 << 20), Some(64 << 20))), Some("0"));
        assert_eq!(v2_swap_max(&mem(Some(64 << 20), Some(128 << 20))), None);
        assert_eq!(v2_swap_max(&mem(Some(-1), Some(-1))), None);
        assert_eq!(v2_swap_max(&mem(None, None)), None);

        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inst = tmp.path().join("paddock/shop/web-0");
        std::fs::create_dir_all(&inst).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(inst.join("memory.swap.max"), "max").unwrap_or_else(|e| panic!("{e}"));
        let read = || std::fs::read_to_string(inst.join("memory.swap.max")).unwrap_or_default();
        let v1 = layout(format!(
            "34 30 0:30 / {} rw - cgroup cgroup rw,memory\n",
            tmp.path().display()
        ));
        enforce_no_swap(
            &v1,
            "/paddock/shop/web-0",
            &mem(Some(1 << 20), Some(1 << 20)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(), "max", "v1 has no memory.swap.max to write");
        let v2 = layout(format!(
            "25 20 0:22 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        ));
        enforce_no_swap(
            &v2,
            "/paddock/shop/web-0",
            &mem(Some(1 << 20), Some(2 << 20)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(), "max", "swap asked for stays");
        enforce_no_swap(
            &v2,
            "/paddock/shop/web-0",
            &mem(Some(1 << 20), Some(1 << 20)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read(), "0");
    }

    #[test]
    fn v1_limit_and_memsw_move_in_a_valid_order() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let app = tmp.path().join("paddock/shop");
        std::fs::create_dir_all(&app).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(app.join("memory.limit_in_bytes"), "1048576")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(app.join("memory.memsw.limit_in_bytes"), "1048576")
            .unwrap_or_else(|e| panic!("{e}"));
        let l = layout(format!(
            "34 30 0:30 / {} rw - cgroup cgroup rw,memory\n",
            tmp.path().display()
        ));
        set_limit(&l, "/paddock/shop", 8 << 20).unwrap_or_else(|e| panic!("{e}"));
        let read = |f: &str| std::fs::read_to_string(app.join(f)).unwrap_or_default();
        assert_eq!(read("memory.limit_in_bytes"), (8u64 << 20).to_string());
        assert_eq!(
            read("memory.memsw.limit_in_bytes"),
            (8u64 << 20).to_string()
        );
    }
}
