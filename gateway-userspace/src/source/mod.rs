//! Where objects come from: a manifests folder (and, later, the Kubernetes API).

pub mod files;
pub mod kube;
pub mod manifest;
pub mod yaml;
