//! What the end-to-end tests stand on: real backends on loopback, the real `gateway` binary in
//! its own process, a manifests folder, and an HTTP client.

pub mod apiserver;
pub mod backend;
pub mod browser;
pub mod client;
pub mod gateway;
pub mod go_literal;
pub mod h3;
pub mod manifests;
pub mod netns;
pub mod pki;
pub mod raw;
pub mod recorder;
pub mod xdp;
