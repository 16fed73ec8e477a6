//! Link options of the `paddock` binary.
//!
//! `paddock` is exec'd for every lifecycle call (three per sandbox under containerd's runc
//! shim or paddock's own), so its start-up is on every sandbox's path. As a position-
//! independent executable its 23 000 relative relocations touch ~100 pages of
//! `.data.rel.ro` (copy-on-write faults) and ~140 pages of relocation table at every start,
//! ~0.4 ms of its ~0.75 ms start-up over `/bin/true` on the reference machine. Linked at a
//! fixed address those pointers are resolved by the linker instead. Shared libraries, heap,
//! stack and mmap areas stay randomized; only the binary's own image is not (as with
//! Debian's runc, also a non-PIE executable).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
