//! `cargo xtask image`: the gateway as an OCI image archive (`podman load -i`, `skopeo copy
//! oci-archive:...`). There is no base image: one layer holds the release binary (the eBPF
//! object embedded), exactly the shared libraries it links as `ldd` resolves them, and the CA
//! bundle. The archive is written here rather than by a container tool so that the same inputs
//! give the same bytes: sorted entries, owner root, every time and the image's creation date
//! taken from SOURCE_DATE_EPOCH (by default the commit's date), a gzip header without a date.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{output, root};

/// Where the binary lives in the image; the entrypoint.
const BINARY: &str = "usr/local/bin/gateway";
const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What goes into an image, before it is packed.
pub struct Image {
    /// Path in the image (relative, no leading slash) → the host file whose bytes it holds.
    pub files: BTreeMap<String, PathBuf>,
    /// The image reference (`name:tag`) recorded for `podman load`.
    pub reference: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Seconds since the epoch for every file time and the creation date.
    pub epoch: i64,
}

/// `cargo xtask image`: builds the release binary and writes its image to `output`
/// (`target/xdp-gateway-VERSION.oci.tar` by default). Returns the archive's path.
pub fn build(tag: Option<String>, output_path: Option<PathBuf>) -> Result<PathBuf> {
    crate::ebpf::build()?;
    crate::cargo(&[
        "build",
        "--release",
        "--locked",
        "-p",
        "gateway-userspace",
        "--bin",
        "gateway",
    ])?;
    let root = root();
    let binary = root.join("target/release/gateway");
    let version = env!("CARGO_PKG_VERSION");
    let revision = git(&["rev-parse", "HEAD"])?;
    if !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        println!("warning: uncommitted changes: this image is not what commit {revision} builds");
    }
    let epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={value:?} is not a number of seconds"))?,
        Err(_) => git(&["log", "-1", "--format=%ct"])?
            .parse()
            .context("git log: commit time")?,
    };

    let mut files = BTreeMap::from([(BINARY.to_string(), binary.clone())]);
    files.extend(shared_libraries(&binary)?);
    let ca_bundle = Path::new("/").join(CA_BUNDLE);
    if !ca_bundle.exists() {
        bail!(
            "{} is missing: install Debian's ca-certificates",
            ca_bundle.display()
        );
    }
    files.insert(CA_BUNDLE.to_string(), ca_bundle);

    let created = time::OffsetDateTime::from_unix_timestamp(epoch)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let labels = BTreeMap::from(
        [
            ("title", "xdp-gateway"),
            (
                "description",
                "Kubernetes edge gateway with an XDP fast path",
            ),
            ("source", env!("CARGO_PKG_REPOSITORY")),
            ("licenses", env!("CARGO_PKG_LICENSE")),
            ("version", version),
            ("revision", &revision),
            ("created", &created),
        ]
        .map(|(key, value)| (format!("org.opencontainers.image.{key}"), value.to_string())),
    );
    let image = Image {
        files,
        reference: tag.unwrap_or_else(|| format!("xdp-gateway:{version}")),
        entrypoint: vec![format!("/{BINARY}")],
        // What the DaemonSet runs; every install gives its own arguments anyway.
        cmd: ["run", "--kubernetes"].map(String::from).to_vec(),
        labels,
        epoch,
    };
    let path =
        output_path.unwrap_or_else(|| root.join(format!("target/xdp-gateway-{version}.oci.tar")));
    let digest = write_archive(&image, &path)?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "image {} ({digest}, {:.1} MB) written to {}",
        image.reference,
        size as f64 / 1e6,
        path.display()
    );
    Ok(path)
}

fn git(args: &[&str]) -> Result<String> {
    Ok(output(Command::new("git").args(args).current_dir(root()))?
        .trim()
        .to_string())
}

/// The shared libraries `binary` loads, dynamic loader included, at the paths the loader
/// opens them from (`ldd` resolves them as the loader would); not the vDSO, which the kernel
/// provides.
fn shared_libraries(binary: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let listing = output(Command::new("ldd").arg(binary))?;
    let mut libraries = BTreeMap::new();
    for line in listing.lines().map(str::trim) {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2
        // (0x...)` or `linux-vdso.so.1 (0x...)`.
        if line.contains("not found") {
            bail!("{}: a library is missing: {line}", binary.display());
        }
        let path = line.split_once(" => ").map_or(line, |(_, path)| path);
        let path = path.split(" (").next().unwrap_or_default();
        if let Some(relative) = path.strip_prefix('/') {
            libraries.insert(relative.to_string(), PathBuf::from(path));
        }
    }
    if libraries.is_empty() {
        bail!("ldd found no loader for {}:\n{listing}", binary.display());
    }
    Ok(libraries)
}

/// Writes `image` as an OCI archive at `path` and returns its manifest digest, which is the
/// image's identity in registries.
pub fn write_archive(image: &Image, path: &Path) -> Result<String> {
    let layer = layer(image)?;
    let diff_id = sha256(&layer);
    let mut gzip = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    gzip.write_all(&layer)?;
    let layer = gzip.finish()?;

    let config = json!({
        "created": image.labels.get("org.opencontainers.image.created"),
        "architecture": oci_architecture()?,
        "os": "linux",
        "config": {
            "Entrypoint": image.entrypoint,
            "Cmd": image.cmd,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "Labels": image.labels,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "cargo xtask image"}],
    });
    let config = serde_json::to_vec(&config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, &config),
        "layers": [descriptor(OCI_LAYER, &layer)],
    }))?;
    let digest = sha256(&manifest);
    let mut manifest_descriptor = descriptor(OCI_MANIFEST, &manifest);
    manifest_descriptor["annotations"] =
        json!({"org.opencontainers.image.ref.name": image.reference});
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [manifest_descriptor],
    }))?;

    let mut entries = BTreeMap::from([
        (
            "oci-layout".to_string(),
            Entry::File(br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(), 0o644),
        ),
        ("index.json".to_string(), Entry::File(index, 0o644)),
    ]);
    for blob in [config, layer, manifest] {
        let name = format!("blobs/sha256/{}", hex(&Sha256::digest(&blob)));
        entries.insert(name, Entry::File(blob, 0o644));
    }
    add_parent_directories(&mut entries);
    let archive = tar(&entries, image.epoch)?;

    if let Some(folder) = path.parent() {
        std::fs::create_dir_all(folder)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, archive).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path)?;
    Ok(digest)
}

enum Entry {
    Directory,
    File(Vec<u8>, u32),
}

/// The image's one layer: its files and the folders above them, uncompressed.
fn layer(image: &Image) -> Result<Vec<u8>> {
    let mut entries = BTreeMap::new();
    for (path, source) in &image.files {
        let bytes =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        // Executables and libraries keep their execute bit; everything is owned by root.
        let mode = if is_executable(source)? { 0o755 } else { 0o644 };
        entries.insert(path.clone(), Entry::File(bytes, mode));
    }
    add_parent_directories(&mut entries);
    tar(&entries, image.epoch)
}

fn is_executable(path: &Path) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o111 != 0)
}

fn add_parent_directories(entries: &mut BTreeMap<String, Entry>) {
    let folders: Vec<String> = entries
        .keys()
        .flat_map(|path| Path::new(path).ancestors().skip(1))
        .filter(|folder| !folder.as_os_str().is_empty())
        .map(|folder| format!("{}/", folder.display()))
        .collect();
    for folder in folders {
        entries.entry(folder).or_insert(Entry::Directory);
    }
}

/// A tar stream of `entries` in path order (a folder's name sorts before its contents).
fn tar(entries: &BTreeMap<String, Entry>, epoch: i64) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(epoch.max(0) as u64);
        let data: &[u8] = match entry {
            Entry::Directory => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                &[]
            }
            Entry::File(bytes, mode) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                bytes
            }
        };
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, data)?;
    }
    Ok(builder.into_inner()?)
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(blob), "size": blob.len()})
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The OCI name of this machine's architecture (the binary is built for it).
fn oci_architecture() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI architecture name for {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_of(file: &Path, epoch: i64) -> Image {
        Image {
            files: BTreeMap::from([("usr/local/bin/tool".to_string(), file.to_path_buf())]),
            reference: "example:1".into(),
            entrypoint: vec!["/usr/local/bin/tool".into()],
            cmd: vec![],
            labels: BTreeMap::from([(
                "org.opencontainers.image.created".into(),
                "2026-01-01T00:00:00Z".into(),
            )]),
            epoch,
        }
    }

    fn entries(archive: &Path) -> Vec<(String, u64, u32)> {
        let mut reader = tar::Archive::new(std::fs::File::open(archive).unwrap());
        reader
            .entries()
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let header = entry.header();
                (
                    entry.path().unwrap().display().to_string(),
                    header.mtime().unwrap(),
                    header.mode().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_same_inputs_give_the_same_digest_whatever_the_files_times() {
        let folder = std::env::temp_dir().join(format!("xtask-image-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join("tool");
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        let first = write_archive(&image_of(&file, 1_700_000_000), &folder.join("a.tar")).unwrap();
        // Touched, and written again: only the content counts.
        std::fs::write(&file, b"#!/bin/sh\necho hi\n").unwrap();
        let second = write_archive(&image_of(&file, 1_700_000_000), &folder.join("b.tar")).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            std::fs::read(folder.join("a.tar")).unwrap(),
            std::fs::read(folder.join("b.tar")).unwrap()
        );
        // Another date is another image.
        let third = write_archive(&image_of(&file, 1_700_000_001), &folder.join("c.tar")).unwrap();
        assert_ne!(first, third);

        let listed = entries(&folder.join("a.tar"));
        let names: Vec<&str> = listed.iter().map(|(name, _, _)| name.as_str()).collect();
        // Three blobs (config, layer, manifest) under their folders, then the index.
        assert_eq!(names.len(), 7, "{names:?}");
        assert_eq!(&names[..2], ["blobs/", "blobs/sha256/"]);
        assert!(names[2..5].iter().all(|n| n.starts_with("blobs/sha256/")));
        assert_eq!(&names[5..], ["index.json", "oci-layout"]);
        assert!(listed.iter().all(|(_, mtime, _)| *mtime == 1_700_000_000));
        std::fs::remove_dir_all(&folder).unwrap();
    }

    #[test]
    fn the_layer_has_the_folders_above_each_file_before_it() {
        let folder = std::env::temp_dir().join(format!("xtask-layer-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let file = folder.join("tool");
        std::fs::write(&file, b"x").unwrap();
        let layer = layer(&image_of(&file, 0)).unwrap();
        let mut reader = tar::Archive::new(&layer[..]);
        let listed: Vec<(String, u32)> = reader
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("usr/".to_string(), 0o755),
                ("usr/local/".to_string(), 0o755),
                ("usr/local/bin/".to_string(), 0o755),
                ("usr/local/bin/tool".to_string(), 0o644),
            ]
        );
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
