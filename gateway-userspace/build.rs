//! Embeds the eBPF object that `cargo xtask build-ebpf` builds. Without it the binary still
//! builds (for `cargo build`/`clippy` on machines without the eBPF toolchain) and runs with the
//! fast path off, saying why.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = std::env::var_os("GATEWAY_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest_dir.join("../target/ebpf/gateway-ebpf.o"));
    println!("cargo:rerun-if-env-changed=GATEWAY_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("gateway-ebpf.o");
    match std::fs::read(&object) {
        Ok(bytes) => std::fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=no eBPF object at {}: the fast path is off in this build (run `cargo xtask build-ebpf`)",
                object.display()
            );
            std::fs::write(&out, []).unwrap();
        }
    }
}
