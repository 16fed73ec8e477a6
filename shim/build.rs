//! Link options of `containerd-shim-paddock-v2`: containerd execs it twice for every container
//! (the `start` action, and the `delete` action it runs after every shim and waits for), so its
//! start-up is on every container's path. Linked at a fixed address, its ~11 700 relative
//! relocations are resolved by the linker instead of at each start (as for `paddock`; see
//! runtime/build.rs). Libraries, heap, stack and mmap areas stay randomized.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rerun-if-changed=build.rs");
}
