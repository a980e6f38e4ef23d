//! The manifests folder as a source: every `*.yaml`/`*.yml` file below it, re-read when it
//! changes. A file that cannot be read or parsed keeps its last good objects, so a half-written
//! file never removes routes.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::manifest;
use crate::store::{Object, Store};
use crate::warning::Warning;

/// How long to wait after a change event for the writes that usually follow it.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// A full rescan at this interval catches changes that file events missed.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

/// The files of a manifests folder and the objects read from each.
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, LoadedFile>,
    /// A problem with the folder itself (missing, unreadable), reported until it is fixed.
    folder_warning: Option<Warning>,
}

struct LoadedFile {
    /// The SHA-256 of what was read (or of the read error): a file whose content is the same
    /// is not parsed again, and its text is not kept (1.3 MB for 10,000 rules).
    digest: Digest,
    objects: Vec<Object>,
    warnings: Vec<Warning>,
}

impl ManifestDir {
    /// A folder that has not been read yet; call [`ManifestDir::rescan`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
            folder_warning: None,
        }
    }

    /// Reads the folder again; returns whether anything changed.
    pub fn rescan(&mut self) -> bool {
        let paths = match manifest_files(&self.root) {
            Ok(paths) => paths,
            Err(e) => {
                // Keep serving what was read last: a folder that vanishes for a moment (a
                // ConfigMap update swapping symlinks) must not empty the route table.
                let warning = Warning::file(
                    &self.root.display().to_string(),
                    format!("cannot read the manifests folder: {e}; keeping the last objects read"),
                );
                let changed = self.folder_warning.as_ref() != Some(&warning);
                self.folder_warning = Some(warning);
                return changed;
            }
        };
        let mut changed = self.folder_warning.take().is_some();
        let present: HashSet<&PathBuf> = paths.iter().collect();
        let before = self.files.len();
        self.files.retain(|path, _| present.contains(path));
        changed |= self.files.len() != before;
        for path in paths {
            changed |= self.load(path);
        }
        changed
    }

    /// Reads one file; returns whether what it contributes changed.
    fn load(&mut self, path: PathBuf) -> bool {
        let name = path.display().to_string();
        let content = match std::fs::read(&path) {
            Ok(content) => content,
            // Gone between listing and reading: the next scan sees it removed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return false,
            Err(e) => {
                return self.keep_last_good(
                    path,
                    content_marker(&e),
                    Warning::file(&name, format!("cannot read: {e}")),
                );
            }
        };
        let digest = digest(&content);
        if self.files.get(&path).is_some_and(|f| f.digest == digest) {
            return false;
        }
        let text = match std::str::from_utf8(&content) {
            Ok(text) => text,
            Err(e) => {
                let warning = Warning::file(&name, format!("not UTF-8 text: {e}"));
                return self.keep_last_good(path, digest, warning);
            }
        };
        match manifest::parse(&name, text) {
            Ok((objects, warnings)) => {
                self.files.insert(
                    path,
                    LoadedFile {
                        digest,
                        objects,
                        warnings,
                    },
                );
            }
            Err(warning) => return self.keep_last_good(path, digest, warning),
        }
        true
    }

    /// Records a problem with a file while keeping the objects it had before, if any.
    fn keep_last_good(&mut self, path: PathBuf, digest: Digest, warning: Warning) -> bool {
        if self.files.get(&path).is_some_and(|f| f.digest == digest) {
            return false;
        }
        let previous = self.files.remove(&path);
        let had_objects = previous.as_ref().is_some_and(|f| !f.objects.is_empty());
        let mut warning = warning;
        if had_objects {
            warning
                .message
                .push_str("; serving the last good version of this file");
        }
        let objects = previous.map(|f| f.objects).unwrap_or_default();
        self.files.insert(
            path,
            LoadedFile {
                digest,
                objects,
                warnings: vec![warning],
            },
        );
        true
    }

    /// The objects of every file, and every warning met reading them. An object defined in two
    /// files is taken from the first file in path order.
    pub fn store(&self) -> (Store, Vec<Warning>) {
        let mut store = Store::default();
        let mut warnings: Vec<Warning> = self.folder_warning.iter().cloned().collect();
        let mut seen = BTreeMap::new();
        for (path, file) in &self.files {
            let source = path.display().to_string();
            warnings.extend(file.warnings.iter().cloned());
            for object in &file.objects {
                let key = object.key();
                if let Some(first) = seen.get(&key) {
                    warnings.push(Warning::new(
                        &key,
                        Some(&source),
                        "metadata.name",
                        format!("already defined in {first}; this definition is ignored"),
                    ));
                    continue;
                }
                seen.insert(key, source.clone());
                store.insert(Some(source.clone()), object.clone());
            }
        }
        (store, warnings)
    }

    /// Watches the folder and calls `on_change` with the new objects after every change, until
    /// the task is dropped. Falls back to polling when file events are unavailable.
    pub async fn watch(mut self, mut on_change: impl FnMut(Store, Vec<Warning>)) {
        let (wake, mut woken) = mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Our own reads raise access events: only changes wake the rescan, or it would
            // wake itself forever.
            if event.is_ok_and(|e| e.kind.is_access()) {
                return;
            }
            // A full channel already holds a wake-up: nothing is lost by dropping this one.
            let _ = wake.try_send(());
        })
        .and_then(|mut watcher| {
            watcher.watch(&self.root, RecursiveMode::Recursive)?;
            Ok(watcher)
        });
        let _watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(folder = %self.root.display(), error = %e,
                    "cannot watch the manifests folder; polling it every {RESCAN_EVERY:?}");
                None
            }
        };
        let mut rescan = tokio::time::interval(RESCAN_EVERY);
        rescan.tick().await;
        loop {
            tokio::select! {
                _ = woken.recv() => tokio::time::sleep(DEBOUNCE).await,
                _ = rescan.tick() => {}
            }
            while woken.try_recv().is_ok() {}
            if self.rescan() {
                let (store, warnings) = self.store();
                on_change(store, warnings);
            }
        }
    }
}

type Digest = [u8; 32];

fn digest(content: &[u8]) -> Digest {
    Sha256::digest(content).into()
}

/// A stand-in digest for a file that could not be read, so that the same error is not
/// reported as a change on every scan.
fn content_marker(error: &std::io::Error) -> Digest {
    digest(format!("\0unreadable: {error}").as_bytes())
}

/// Every `*.yaml`/`*.yml` file below `root`, skipping hidden names (which also skips the
/// `..data` folders of a mounted ConfigMap, whose files appear through symlinks at the top).
fn manifest_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n";

    #[test]
    fn broken_file_keeps_its_last_good_objects() {
        let dir = tempdir();
        std::fs::write(dir.join("a.yaml"), SERVICE).unwrap();
        std::fs::write(dir.join("notes.txt"), "not read").unwrap();
        let mut source = ManifestDir::new(&dir);
        assert!(source.rescan());
        assert_eq!(source.store().0.services.len(), 1);
        assert!(!source.rescan(), "nothing changed");

        std::fs::write(dir.join("a.yaml"), "kind: [broken").unwrap();
        assert!(source.rescan());
        let (store, warnings) = source.store();
        assert_eq!(store.services.len(), 1);
        assert!(
            warnings[0]
                .message
                .contains("serving the last good version"),
            "{warnings:?}"
        );

        std::fs::remove_file(dir.join("a.yaml")).unwrap();
        assert!(source.rescan());
        assert!(source.store().0.services.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn duplicate_objects_across_files_warn() {
        let dir = tempdir();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.yaml"), SERVICE).unwrap();
        std::fs::write(dir.join("sub/b.yml"), SERVICE).unwrap();
        let mut source = ManifestDir::new(&dir);
        source.rescan();
        let (store, warnings) = source.store();
        assert_eq!(store.services.len(), 1);
        assert!(
            warnings[0].message.contains("already defined in"),
            "{warnings:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_folder_is_a_warning() {
        let mut source = ManifestDir::new("/nonexistent/manifests");
        assert!(source.rescan());
        assert!(
            source.store().1[0]
                .message
                .contains("cannot read the manifests folder")
        );
        assert!(!source.rescan());
    }

    fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gateway-files-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
