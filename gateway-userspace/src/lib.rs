//! The xdp-gateway daemon as a library: the stages of the data flow, one module each.
//!
//! source (files) -> store -> translate -> snapshot -> publish -> proxy, stream (layer 4) / admin

pub mod admin;
pub mod alloc;
pub mod bpf;

pub mod cidr;
pub mod cluster;
pub mod console;
pub mod explain;
pub mod gateway_api;
pub mod gateway_status;
pub mod lifecycle;
pub mod normalize;
pub mod observe;
pub mod policy;
pub mod proxy;
pub mod publish;
pub mod random;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod steering;
pub mod stream;

pub mod store;
pub mod tls;
pub mod translate;
pub mod warning;
