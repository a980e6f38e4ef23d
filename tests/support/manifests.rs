//! A manifests folder for one test, removed when dropped, and the YAML of the usual objects.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary manifests folder.
pub struct ManifestsDir {
    pub path: PathBuf,
}

impl ManifestsDir {
    /// An empty folder, unique to this test.
    pub fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "gateway-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create manifests folder");
        Self { path }
    }

    /// Writes `name` atomically (a hidden temporary file renamed into place), as a
    /// deployment tool would, so the gateway never reads a half-written file.
    pub fn write(&self, name: &str, yaml: &str) {
        let temp = self.path.join(format!(".{name}.tmp"));
        std::fs::write(&temp, yaml).expect("write manifest");
        std::fs::rename(&temp, self.path.join(name)).expect("rename manifest");
    }

    /// Removes `name`.
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("remove manifest");
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for ManifestsDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ManifestsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A Service `name` (port 80, named `http`) and an EndpointSlice with `endpoints` as its ready
/// addresses, each with its own port: what a test needs to route to loopback backends.
pub fn service(name: &str, endpoints: &[SocketAddr]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
         spec: {{ports: [{{name: http, port: 80}}]}}\n---\n"
    );
    // A slice has one port per name, so endpoints with different ports get a slice each.
    for (i, endpoint) in endpoints.iter().enumerate() {
        yaml += &format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-{i}, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [\"{ip}\"]}}]\n---\n",
            port = endpoint.port(),
            ip = endpoint.ip(),
        );
    }
    yaml
}

/// An Ingress `name` with one rule: `host` (`None` for any host), `path` of `path_type`, to
/// port 80 of `service`.
pub fn ingress(
    name: &str,
    host: Option<&str>,
    path: &str,
    path_type: &str,
    service: &str,
) -> String {
    let host = host.map_or(String::new(), |h| format!("host: \"{h}\"\n    "));
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n  rules:\n  - {host}http:\n      paths:\n      - path: {path}\n        pathType: {path_type}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n---\n"
    )
}

/// An Ingress `name` with one rule for `host` (`None` for any host): `paths` (path, pathType)
/// to port 80 of `service`, with ingress-nginx annotations (`(name, value)`, without the
/// `nginx.ingress.kubernetes.io/` prefix).
pub fn annotated_ingress(
    name: &str,
    host: Option<&str>,
    paths: &[(&str, &str)],
    service: &str,
    annotations: &[(&str, &str)],
) -> String {
    let quote = |text: &str| serde_json::to_string(text).expect("a string");
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    nginx.ingress.kubernetes.io/{k}: {}\n", quote(v)))
        .collect();
    let annotations = match annotations.is_empty() {
        true => String::new(),
        false => format!("  annotations:\n{annotations}"),
    };
    let host = host.map_or(String::new(), |h| format!("host: {}\n    ", quote(h)));
    let paths: String = paths
        .iter()
        .map(|(path, kind)| {
            format!(
                "      - path: {}\n        pathType: {kind}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n",
                quote(path)
            )
        })
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n{annotations}spec:\n  rules:\n  - {host}http:\n      paths:\n{paths}---\n"
    )
}

/// A gateway (started with `args`) whose one route sends `shop.test` to `backend`.
pub fn shop_gateway(backend: SocketAddr, args: &[&str]) -> (ManifestsDir, crate::gateway::Gateway) {
    let dir = ManifestsDir::new();
    dir.write(
        "shop.yaml",
        &[
            service("shop", &[backend]),
            ingress("shop", Some("shop.test"), "/", "Prefix", "shop"),
        ]
        .concat(),
    );
    let gateway = crate::gateway::Gateway::start(dir.path(), args);
    (dir, gateway)
}

/// A loopback port nothing listens on (for a Gateway listener), both for TCP and UDP. It is
/// taken below the kernel's ephemeral range (32768 and up by default), where the ports that
/// other tests' processes bind as `:0` come from: a port handed out here and bound a moment
/// later by the gateway cannot have been given to another one meanwhile.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    // Each test process starts at its own place, and walks on from there.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let turn = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (std::process::id() + turn) % COUNT) as u16;
        let address = loopback(port);
        if std::net::TcpListener::bind(address).is_ok()
            && std::net::UdpSocket::bind(address).is_ok()
        {
            return port;
        }
    }
}

/// The loopback address at `port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The GatewayClass `xdp` and a Gateway `edge` of it in `namespace`, with one HTTP listener
/// (`web`) on `port`.
pub fn http_gateway(namespace: &str, port: u16) -> String {
    let listener = format!("{{name: web, port: {port}, protocol: HTTP}}");
    gateway_class().to_string() + &gateway(namespace, "edge", &[listener])
}

/// A GatewayClass `xdp` of this gateway's controller.
pub fn gateway_class() -> &'static str {
    "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: xdp}\n\
     spec: {controllerName: xdp-gateway.io/gateway-controller}\n---\n"
}

/// A Gateway `name` in `namespace` with `listeners` (YAML flow mappings).
pub fn gateway(namespace: &str, name: &str, listeners: &[String]) -> String {
    let listeners: String = listeners.iter().map(|l| format!("  - {l}\n")).collect();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         spec:\n  gatewayClassName: xdp\n  listeners:\n{listeners}---\n"
    )
}
