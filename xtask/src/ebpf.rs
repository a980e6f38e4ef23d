//! Building the eBPF programs on a stable toolchain: rust-src for `-Z build-std=core`, and a
//! bpf-linker built against rustc's own libLLVM (no LLVM package matches rustc's LLVM, and no
//! prebuilt linker can be downloaded here). See ../shared/TOOLCHAIN.md.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{output, root, run};

/// The target the kernel programs are built for.
const TARGET: &str = "bpfel-unknown-none";

/// Builds gateway-ebpf and returns the object's path (`target/ebpf/gateway-ebpf.o`).
pub fn build() -> Result<PathBuf> {
    ensure_rust_src()?;
    let linker_dir = ensure_bpf_linker()?;
    let crate_dir = root().join("gateway-ebpf");
    let mut command = Command::new("cargo");
    command
        .current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-Z",
            "build-std=core",
        ])
        // -Z flags on the stable compiler, for this build only.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", path_with(&linker_dir)?);
    // The outer cargo's settings are for the host build, not this one.
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key == "RUSTFLAGS"
            || key == "RUSTC"
        {
            command.env_remove(&key);
        }
    }
    run(&mut command).context("building the eBPF programs")?;
    let built = crate_dir
        .join("target")
        .join(TARGET)
        .join("release")
        .join("gateway-ebpf");
    let out_dir = root().join("target").join("ebpf");
    std::fs::create_dir_all(&out_dir)?;
    let object = out_dir.join("gateway-ebpf.o");
    let bytes = std::fs::read(&built).with_context(|| format!("reading {}", built.display()))?;
    // Rewritten only when it changed: the userspace build embeds it and rebuilds when it does.
    if std::fs::read(&object).ok().as_deref() != Some(bytes.as_slice()) {
        std::fs::write(&object, &bytes).with_context(|| format!("writing {}", object.display()))?;
    }
    println!("eBPF object: {}", object.display());
    Ok(object)
}

fn ensure_rust_src() -> Result<()> {
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    let src = PathBuf::from(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if src.exists() {
        return Ok(());
    }
    println!("installing the rust-src component (needed to build core for {TARGET})");
    run(Command::new("rustup").args(["component", "add", "rust-src"]))
}

/// Makes sure a bpf-linker built for this rustc's LLVM exists; returns the folder it is in.
fn ensure_bpf_linker() -> Result<PathBuf> {
    let version = output(Command::new("rustc").arg("-vV"))?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV does not say its LLVM version")?
        .to_string();
    let sysroot = PathBuf::from(output(Command::new("rustc").args(["--print", "sysroot"]))?.trim());
    let cache = home()?.join(".cache/xdp-gateway");
    let install_root = cache.join(format!("bpf-linker-llvm{major}"));
    let linker = install_root.join("bin/bpf-linker");
    let stamp = install_root.join("built-for");
    let built_for = std::fs::read_to_string(&stamp).unwrap_or_default();
    // A linker built for another toolchain links against a libLLVM that may be gone or
    // different: rebuild it rather than fail later with an obscure linker error.
    let usable = built_for == version
        && Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if usable {
        return Ok(install_root.join("bin"));
    }
    println!(
        "building bpf-linker against rustc's LLVM {major} (once per toolchain, about a minute)"
    );
    let lib = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("libLLVM.so") || name.starts_with("libLLVM-"))
        .with_context(|| format!("no libLLVM in {}/lib", sysroot.display()))?;
    let prefix = cache.join(format!("llvm-{major}"));
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for name in ["libLLVM.so", lib.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(sysroot.join("lib").join(&lib), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    let mut install = Command::new("cargo");
    install
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--no-default-features",
        ])
        .args(["--features", &format!("llvm-{major}")])
        .arg("--root")
        .arg(&install_root)
        .env("LLVM_PREFIX", &prefix);
    for (key, _) in std::env::vars() {
        if key.starts_with("CARGO_") && key != "CARGO_HOME" {
            install.env_remove(&key);
        }
    }
    run(&mut install).context("building bpf-linker")?;
    if !Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!(
            "bpf-linker was built but does not run: {}",
            linker.display()
        );
    }
    std::fs::write(&stamp, &version)?;
    Ok(install_root.join("bin"))
}

fn path_with(dir: &std::path::Path) -> Result<std::ffi::OsString> {
    let current = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(&current));
    Ok(std::env::join_paths(paths)?)
}

fn home() -> Result<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}
