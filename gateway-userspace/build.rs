//! Embeds the eBPF object that `cargo xtask build-ebpf` builds. Without it the binary still
//! builds (for `cargo build`/`clippy` on machines without the eBPF toolchain) and runs with the
//! fast path off, saying why. Also names the commit the binary is built from, for
//! `gateway --version` (GATEWAY_COMMIT overrides it where there is no git checkout). And has
//! the linker put the functions that run first in the release binary (link-order.txt).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rustc-env=GATEWAY_COMMIT={}", commit());
    embed_ebpf_object();
    order_functions();
}

/// The commit of the checkout, or `unknown`. Cargo reruns this when HEAD or the branch it
/// points to moves (a ref may live in its own file or in packed-refs).
fn commit() -> String {
    println!("cargo:rerun-if-env-changed=GATEWAY_COMMIT");
    if let Ok(commit) = std::env::var("GATEWAY_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in &watched {
        let path = git(&["rev-parse", "--path-format=absolute", "--git-path", name]);
        if let Some(path) = path.filter(|path| std::path::Path::new(path).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn embed_ebpf_object() {
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

/// The functions `cargo xtask link-order` saw running, packed at the front of the text: the
/// kernel maps code in 64 KB windows around each page touched, so packed they keep about 3 MB
/// of the binary resident instead of 10. Only with lld (Rust's linker on x86_64 Linux unless
/// the build names another): other linkers do not know the flag.
fn order_functions() {
    let order = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("link-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let other_linker = var("CARGO_ENCODED_RUSTFLAGS").contains("linker")
        || std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some();
    if var("TARGET") == "x86_64-unknown-linux-gnu"
        && var("PROFILE") == "release"
        && !other_linker
        && order.exists()
    {
        println!(
            "cargo:rustc-link-arg-bin=gateway=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bin=gateway=-Wl,--no-warn-symbol-ordering");
        // The relocations of a position-independent binary, which the loader reads at every
        // start, as a bitmap (DT_RELR, glibc 2.36) instead of 24 bytes each: 0.8 MB less.
        println!("cargo:rustc-link-arg-bin=gateway=-Wl,-z,pack-relative-relocs");
    }
}
