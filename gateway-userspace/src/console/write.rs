//! Where the console's changes go: the source the gateway reads. In file mode, the manifest is
//! written atomically into the folder (its watcher applies it like any edit); in a cluster,
//! through the API server, only with `--console-write`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, PostParams};

/// The source the console writes to.
pub enum Writer {
    /// The manifests folder.
    Folder(PathBuf),
    /// The API server (`--kubernetes --console-write`).
    Cluster(kube::Client),
    /// Nothing may be written, and why.
    ReadOnly(&'static str),
}

impl Writer {
    /// Why nothing can be written, if that is so.
    pub fn read_only(&self) -> Option<&'static str> {
        match self {
            Self::ReadOnly(why) => Some(why),
            _ => None,
        }
    }

    /// Creates or replaces `ingress`; `yaml` is its manifest, `source` the file it was read
    /// from. Says where it went.
    pub async fn put(
        &self,
        ingress: &Ingress,
        yaml: &str,
        source: Option<&str>,
    ) -> Result<String, String> {
        let (namespace, name) = names(ingress);
        match self {
            Self::Folder(folder) => {
                let file = match source.filter(|s| is_inside(folder, Path::new(s))) {
                    Some(file) => PathBuf::from(file),
                    None => folder.join(format!("console-{namespace}-{name}.yaml")),
                };
                let text = std::fs::read_to_string(&file).unwrap_or_default();
                let replaced = replace_document(&text, namespace, name, Some(yaml));
                write_atomically(&file, &replaced)?;
                Ok(format!("written to {}", file.display()))
            }
            Self::Cluster(client) => {
                let api: Api<Ingress> = Api::namespaced(client.clone(), namespace);
                let params = PostParams::default();
                let existing = api.get_opt(name).await.map_err(|e| e.to_string())?;
                let mut object = ingress.clone();
                match existing {
                    Some(existing) => {
                        object.metadata.resource_version = existing.metadata.resource_version;
                        api.replace(name, &params, &object)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(format!(
                            "ingress {namespace}/{name} replaced in the cluster"
                        ))
                    }
                    None => {
                        api.create(&params, &object)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(format!("ingress {namespace}/{name} created in the cluster"))
                    }
                }
            }
            Self::ReadOnly(why) => Err(why.to_string()),
        }
    }

    /// Deletes the Ingress `namespace/name`, read from `source` in file mode.
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        source: Option<&str>,
    ) -> Result<String, String> {
        match self {
            Self::Folder(folder) => {
                let file = source
                    .map(PathBuf::from)
                    .filter(|file| is_inside(folder, file))
                    .ok_or("the Ingress was not read from a file of the manifests folder")?;
                let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
                let rest = replace_document(&text, namespace, name, None);
                if rest.trim().is_empty() {
                    std::fs::remove_file(&file).map_err(|e| e.to_string())?;
                } else {
                    write_atomically(&file, &rest)?;
                }
                Ok(format!("removed from {}", file.display()))
            }
            Self::Cluster(client) => {
                let api: Api<Ingress> = Api::namespaced(client.clone(), namespace);
                api.delete(name, &DeleteParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!(
                    "ingress {namespace}/{name} deleted from the cluster"
                ))
            }
            Self::ReadOnly(why) => Err(why.to_string()),
        }
    }
}

fn names(ingress: &Ingress) -> (&str, &str) {
    (
        ingress.metadata.namespace.as_deref().unwrap_or("default"),
        ingress.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// Whether `file` is in `folder` (both resolved; a file that does not exist yet is judged by
/// its folder).
fn is_inside(folder: &Path, file: &Path) -> bool {
    let Ok(folder) = folder.canonicalize() else {
        return false;
    };
    let resolved = file.canonicalize().or_else(|_| {
        let parent = file.parent().ok_or(std::io::ErrorKind::NotFound)?;
        Ok::<_, std::io::Error>(
            parent
                .canonicalize()?
                .join(file.file_name().unwrap_or_default()),
        )
    });
    resolved.is_ok_and(|file| file.starts_with(folder))
}

/// `text` (documents separated by `---` lines) with the Ingress `namespace/name` replaced by
/// `yaml`, or removed when `yaml` is `None`; appended when it is not there. Other documents keep
/// their text, comments included.
fn replace_document(text: &str, namespace: &str, name: &str, yaml: Option<&str>) -> String {
    let mut documents: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(std::mem::take(&mut current));
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.push(current);
    let is_it = |document: &str| {
        let Ok(value) = serde_yaml::from_str::<serde_yaml::Value>(document) else {
            return false;
        };
        let text = |v: &serde_yaml::Value| v.as_str().map(str::to_string);
        let metadata = &value["metadata"];
        text(&value["kind"]).as_deref() == Some("Ingress")
            && text(&metadata["name"]).as_deref() == Some(name)
            && text(&metadata["namespace"]).as_deref().unwrap_or("default") == namespace
    };
    let mut found = false;
    let mut out: Vec<String> = Vec::new();
    for document in documents {
        if is_it(&document) {
            found = true;
            if let Some(yaml) = yaml {
                out.push(yaml.to_string());
            }
        } else if !document.trim().is_empty() {
            out.push(document);
        }
    }
    if !found && let Some(yaml) = yaml {
        out.push(yaml.to_string());
    }
    out.iter()
        .map(|d| d.trim_end_matches('\n').to_string() + "\n")
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Writes `file` whole or not at all: a hidden temporary file beside it (which the folder's
/// watcher does not read), flushed, then renamed over it.
fn write_atomically(file: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let folder = file.parent().ok_or("the file has no folder")?;
    let temporary = folder.join(format!(
        ".{}.console-{}",
        file.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut out = std::fs::File::create(&temporary)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::rename(&temporary, file)
    })();
    written.map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        format!("writing {}: {e}", file.display())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_is_replaced_or_removed_and_the_others_keep_their_text() {
        let text = "# shop\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\
                    kind: Ingress\nmetadata: {name: web, namespace: shop}\n---\n\
                    kind: Ingress\nmetadata: {name: web}\n";
        let replaced = replace_document(
            text,
            "shop",
            "web",
            Some("kind: Ingress\nmetadata: {name: web, namespace: shop}\nspec: {}\n"),
        );
        assert_eq!(
            replaced,
            "# shop\napiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\n\
             kind: Ingress\nmetadata: {name: web, namespace: shop}\nspec: {}\n---\n\
             kind: Ingress\nmetadata: {name: web}\n"
        );
        let removed = replace_document(text, "default", "web", None);
        assert!(!removed.contains("{name: web}\n"), "{removed}");
        assert!(removed.contains("namespace: shop"));
        let appended = replace_document("", "a", "b", Some("kind: Ingress\n"));
        assert_eq!(appended, "kind: Ingress\n");
    }

    #[test]
    fn only_files_of_the_folder_are_written() {
        let folder = std::env::temp_dir().join(format!("console-inside-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        assert!(is_inside(&folder, &folder.join("new.yaml")));
        assert!(!is_inside(&folder, &folder.join("../elsewhere.yaml")));
        assert!(!is_inside(&folder, Path::new("/etc/passwd")));
        std::fs::remove_dir_all(&folder).unwrap();
    }
}
