//! One set of routes, one certificate and equivalent configurations for every system under
//! test, generated into the bench work folder (../shared/BENCHMARKS.md 6.2). Every system sets
//! the forwarding headers an Ingress controller sets (X-Forwarded-For/-Proto/-Host/-Port,
//! X-Real-IP), as the gateway does: the same work for all.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Backend ports: four "pods" answering `ok`.
pub const BACKEND_PORTS: [u16; 4] = [9000, 9001, 9002, 9003];
/// A fifth backend answering `new`: routes added during route-churn tests point at it, so a
/// client can tell when a new route is served (and not a default one).
pub const NEW_BACKEND_PORT: u16 = 9004;

/// The benchmark backend's auth service (T13).
pub const AUTH_PORT: u16 = 9005;
/// T13: the routes that authenticate (to backend 0), and the request headers that pass each:
/// basic auth (`bench:bench`, Apache MD5 as `htpasswd` writes by default), external auth
/// (a session cookie), external auth with its verdicts cached.
pub const AUTH_ROUTES: [(&str, &str); 4] = [
    ("r0.bench.test", ""),
    ("basic.bench.test", "Authorization: Basic YmVuY2g6YmVuY2g="),
    ("extauth.bench.test", "Cookie: _oauth2_proxy=session"),
    ("extauth-cached.bench.test", "Cookie: _oauth2_proxy=session"),
];
/// `bench:bench`, from `openssl passwd -apr1 -salt benchslt bench`.
const HTPASSWD: &str = "bench:$apr1$benchslt$xg8nhdNCXN8cv7mXxgHvB0\n";

/// Ports of each system under test: (HTTP, HTTPS).
pub const GATEWAY_PORTS: (u16, u16) = (8083, 8443);
pub const NGINX_PORTS: (u16, u16) = (8081, 8441);
pub const HAPROXY_PORTS: (u16, u16) = (8082, 8442);

/// Layer 4 ports of each system under test (T11): (to the bulk server, to backend 0).
pub const GATEWAY_TCP_PORTS: (u16, u16) = (8183, 8283);
pub const NGINX_TCP_PORTS: (u16, u16) = (8181, 8281);
pub const HAPROXY_TCP_PORTS: (u16, u16) = (8182, 8282);
/// The bulk TCP server behind the layer 4 ports (iperf3).
pub const BULK_PORT: u16 = 9201;

/// The generated files.
pub struct Fixtures {
    pub dir: PathBuf,
}

impl Fixtures {
    pub fn manifests(&self) -> PathBuf {
        self.dir.join("manifests")
    }
}

/// Writes routes `r0..r{routes-1}.bench.test` (to backend `i % 4`), the certificate and the
/// nginx, HAProxy and gateway configurations into `dir`.
pub fn generate(dir: &Path, routes: usize) -> Result<Fixtures> {
    std::fs::create_dir_all(dir.join("routes"))?;
    let manifests = dir.join("manifests");
    if manifests.exists() {
        std::fs::remove_dir_all(&manifests)?;
    }
    std::fs::create_dir_all(&manifests)?;
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };

    // One ECDSA P-256 certificate for *.bench.test, used by all three.
    let mut params = rcgen::CertificateParams::new(vec!["*.bench.test".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bench.test");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    write(dir.join("cert.pem"), cert.pem())?;
    write(dir.join("key.pem"), key.serialize_pem())?;
    write(dir.join("combined.pem"), cert.pem() + &key.serialize_pem())?;

    let all_backends: Vec<u16> = BACKEND_PORTS
        .iter()
        .copied()
        .chain([NEW_BACKEND_PORT])
        .collect();
    let mut upstreams = String::new();
    for (i, port) in all_backends.iter().enumerate() {
        writeln!(
            upstreams,
            "upstream be{i} {{ server 127.0.0.1:{port}; keepalive 256; }}"
        )?;
    }
    write(dir.join("routes/nginx-upstreams.conf"), upstreams)?;
    let mut nginx_map = String::new();
    let mut haproxy_map = String::new();
    for i in 0..routes {
        writeln!(nginx_map, "r{i}.bench.test be{};", i % 4)?;
        writeln!(haproxy_map, "r{i}.bench.test be{}", i % 4)?;
    }
    write(dir.join("routes/nginx-hosts.map"), nginx_map)?;
    write(dir.join("routes/haproxy-hosts.map"), haproxy_map)?;
    // Loopback only, except the `-any` variants for a network namespace of the run, where
    // the peers must also answer on the VIP.
    for (resume, address) in [(false, LOOPBACK), (true, LOOPBACK), (false, ANY)] {
        write(
            dir.join(config_name("nginx", resume, address, "conf")),
            nginx_conf(dir, resume, address),
        )?;
        write(
            dir.join(config_name("haproxy", resume, address, "cfg")),
            haproxy_cfg(dir, resume, address, &all_backends),
        )?;
    }
    write(
        dir.join("hosts.lua"),
        format!(
            "math.randomseed(42)\nrequest = function()\n  wrk.headers[\"Host\"] = \"r\" .. math.random(0, {}) .. \".bench.test\"\n  return wrk.format(nil, \"/\")\nend\n",
            routes - 1
        ),
    )?;

    write(dir.join("htpasswd"), HTPASSWD.to_string())?;
    for (host, header) in AUTH_ROUTES {
        let header = match header.split_once(": ") {
            Some((name, value)) => format!("  wrk.headers[\"{name}\"] = \"{value}\"\n"),
            None => String::new(),
        };
        write(
            dir.join(format!("{host}.lua")),
            format!(
                "request = function()\n  wrk.headers[\"Host\"] = \"{host}\"\n{header}  return wrk.format(nil, \"/\")\nend\n"
            ),
        )?;
    }
    write(manifests.join("auth.yaml"), auth_manifests())?;

    let mut services = String::new();
    for (i, port) in all_backends.iter().enumerate() {
        write!(
            services,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: be{i}, namespace: bench}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: be{i}-1, namespace: bench, labels: {{kubernetes.io/service-name: be{i}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
        )?;
    }
    // Layer 4 (T11): the bulk server and backend 0 behind the gateway's TCP ports.
    let (bulk, connections) = GATEWAY_TCP_PORTS;
    write!(
        services,
        "apiVersion: v1\nkind: Service\nmetadata: {{name: bulk, namespace: bench}}\nspec: {{ports: [{{name: tcp, port: 80}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: bulk-1, namespace: bench, labels: {{kubernetes.io/service-name: bulk}}}}\n\
         addressType: IPv4\nports: [{{name: tcp, port: {BULK_PORT}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tcp-services, namespace: bench}}\n\
         data: {{\"{bulk}\": \"bench/bulk:80\", \"{connections}\": \"bench/be0:80\"}}\n---\n"
    )?;
    write(manifests.join("services.yaml"), services)?;
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    write(
        manifests.join("secret.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-tls, namespace: bench}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(&cert.pem()),
            indent(&key.serialize_pem())
        ),
    )?;
    let mut ingress = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: bench\n  namespace: bench\n  annotations: {nginx.ingress.kubernetes.io/ssl-redirect: \"false\"}\nspec:\n  tls:\n  - hosts: [\"*.bench.test\"]\n    secretName: bench-tls\n  rules:\n",
    );
    // r7 has a file of its own: the route-churn test flips its backend by rewriting it.
    for i in (0..routes).filter(|i| *i != 7) {
        writeln!(
            ingress,
            "  - host: r{i}.bench.test\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: be{}, port: {{number: 80}}}}}}}}]}}",
            i % 4
        )?;
    }
    write(manifests.join("routes.yaml"), ingress)?;
    write(manifests.join("r7.yaml"), extra_route("r7", 3))?;
    Ok(Fixtures {
        dir: dir.to_path_buf(),
    })
}

/// T13's Ingresses: basic auth from an htpasswd Secret, external auth, cached external auth.
fn auth_manifests() -> String {
    let auth_url = format!("http://127.0.0.1:{AUTH_PORT}/oauth2/auth");
    let ingress = |host: &str, annotations: &[(&str, &str)]| {
        let name = host.split('.').next().unwrap_or(host);
        let annotations: String = annotations
            .iter()
            .map(|(k, v)| format!("    nginx.ingress.kubernetes.io/{k}: \"{v}\"\n"))
            .collect();
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: bench\n  annotations:\n{annotations}spec:\n  rules:\n  - host: {host}\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: be0, port: {{number: 80}}}}}}}}]}}\n---\n"
        )
    };
    let external = [
        ("auth-url", auth_url.as_str()),
        ("auth-response-headers", "X-Auth-Request-User"),
    ];
    let cached = [
        external[0],
        external[1],
        ("auth-cache-key", "$cookie__oauth2_proxy"),
        ("auth-cache-duration", "202 401 5m"),
    ];
    let users = HTPASSWD.trim_end();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-users, namespace: bench}}\ntype: Opaque\nstringData: {{auth: \"{users}\"}}\n---\n{}{}{}",
        ingress(
            AUTH_ROUTES[1].0,
            &[("auth-type", "basic"), ("auth-secret", "bench-users")]
        ),
        ingress(AUTH_ROUTES[2].0, &external),
        ingress(AUTH_ROUTES[3].0, &cached),
    )
}

/// The same routes as `routes` Ingresses of one rule each (`r{i}` for `r{i}.bench.test`), for
/// an API server to list (T8 from Kubernetes); written to `api-ingresses.yaml` in `dir`.
pub fn api_ingresses(dir: &Path, routes: usize) -> Result<PathBuf> {
    let mut text = String::new();
    for i in 0..routes {
        text += &route_manifest(&format!("r{i}"), i % 4, FIELD_MANAGERS);
        text += "---\n";
    }
    let path = dir.join("api-ingresses.yaml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// What a real API server lists in an Ingress's `metadata` beside its name: the writers of its
/// fields, here `kubectl apply` and the controller writing its status (in this fixture they
/// make the list 3.3 times larger).
const FIELD_MANAGERS: &str = r#",
  managedFields: [{apiVersion: networking.k8s.io/v1, fieldsType: FieldsV1, fieldsV1: {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}}, "f:spec": {"f:rules": {}}}, manager: kubectl-client-side-apply, operation: Update, time: "2026-12-01T10:00:00Z"},
    {apiVersion: networking.k8s.io/v1, fieldsType: FieldsV1, fieldsV1: {"f:status": {"f:loadBalancer": {"f:ingress": {}}}}, manager: xdp-gateway, operation: Update, subresource: status, time: "2026-12-01T10:00:01Z"}]"#;

/// The manifest of one extra route, `name.bench.test` to backend `backend` (route churn).
pub fn extra_route(name: &str, backend: usize) -> String {
    route_manifest(name, backend, "")
}

/// One route's Ingress, with `more_metadata` after its name and namespace.
fn route_manifest(name: &str, backend: usize, more_metadata: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: bench{more_metadata}}}\nspec:\n  rules:\n  - host: {name}.bench.test\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: be{backend}, port: {{number: 80}}}}}}}}]}}\n"
    )
}

pub const LOOPBACK: &str = "127.0.0.1";
pub const ANY: &str = "0.0.0.0";

/// `nginx.conf`, `nginx-resume.conf`, `nginx-any.conf`, ...
pub fn config_name(system: &str, resume: bool, address: &str, extension: &str) -> String {
    let resume = if resume { "-resume" } else { "" };
    let any = if address == ANY { "-any" } else { "" };
    format!("{system}{resume}{any}.{extension}")
}

fn nginx_conf(dir: &Path, resume: bool, address: &str) -> String {
    let d = dir.display();
    let (tickets, cache) = if resume {
        ("on", "shared:SSL:10m")
    } else {
        ("off", "off")
    };
    let (http, https) = NGINX_PORTS;
    let (bulk, connections) = NGINX_TCP_PORTS;
    let backend = BACKEND_PORTS[0];
    format!(
        r#"load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1; worker_cpu_affinity 10; worker_rlimit_nofile 20000; pid {d}/nginx.pid;
daemon off; user root;
events {{ worker_connections 32768; }}
stream {{
  server {{ listen {address}:{bulk} backlog=4096; proxy_pass 127.0.0.1:{BULK_PORT}; }}
  server {{ listen {address}:{connections} backlog=4096; proxy_pass 127.0.0.1:{backend}; }}
}}
http {{
  access_log off; error_log {d}/nginx-error.log warn;
  client_body_temp_path {d}/nginx-tmp; proxy_temp_path {d}/nginx-tmp;
  keepalive_timeout 75s; keepalive_requests 1000000;
  ssl_protocols TLSv1.3; ssl_ecdh_curve X25519; ssl_session_tickets {tickets}; ssl_session_cache {cache};
  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;
  include {d}/routes/nginx-upstreams.conf;
  map $host $be {{ hostnames; default be0; include {d}/routes/nginx-hosts.map; }}
  server {{ listen {address}:{http} backlog=4096; listen {address}:{https} ssl http2;
           ssl_certificate {d}/cert.pem; ssl_certificate_key {d}/key.pem;
           location / {{ proxy_pass http://$be; {PROXY_HEADERS} }} }}
  # T13: authentication, as ingress-nginx configures it.
  upstream authsrv {{ server 127.0.0.1:{AUTH_PORT}; keepalive 64; }}
  proxy_cache_path {d}/nginx-auth-cache keys_zone=auth:1m;
  server {{ listen {address}:{http}; server_name {basic};
           location / {{ auth_basic "bench"; auth_basic_user_file {d}/htpasswd;
             proxy_pass http://be0; {PROXY_HEADERS} }} }}
  server {{ listen {address}:{http}; server_name {external};
           location = /_auth {{ internal; proxy_pass http://authsrv/oauth2/auth; {AUTH_REQUEST} }}
           location / {{ auth_request /_auth; auth_request_set $user $upstream_http_x_auth_request_user;
             proxy_set_header X-Auth-Request-User $user; proxy_pass http://be0; {PROXY_HEADERS} }} }}
  server {{ listen {address}:{http}; server_name {cached};
           location = /_auth {{ internal; proxy_pass http://authsrv/oauth2/auth; {AUTH_REQUEST}
             proxy_cache auth; proxy_cache_key $cookie__oauth2_proxy; proxy_cache_valid 202 401 5m; }}
           location / {{ auth_request /_auth; auth_request_set $user $upstream_http_x_auth_request_user;
             proxy_set_header X-Auth-Request-User $user; proxy_pass http://be0; {PROXY_HEADERS} }} }} }}
"#,
        basic = AUTH_ROUTES[1].0,
        external = AUTH_ROUTES[2].0,
        cached = AUTH_ROUTES[3].0,
    )
}

/// What every nginx location sends to its backend, as the gateway does.
const PROXY_HEADERS: &str = "proxy_http_version 1.1; proxy_set_header Connection \"\";
             proxy_set_header Host $http_host; proxy_set_header X-Forwarded-For $remote_addr;
             proxy_set_header X-Real-IP $remote_addr; proxy_set_header X-Forwarded-Proto $scheme;
             proxy_set_header X-Forwarded-Host $http_host; proxy_set_header X-Forwarded-Port $server_port;";

/// ingress-nginx's auth subrequest: no body, the original URL and method.
const AUTH_REQUEST: &str = "proxy_http_version 1.1; proxy_set_header Connection \"\";
             proxy_pass_request_body off; proxy_set_header Content-Length \"\";
             proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
             proxy_set_header X-Original-Method $request_method;";

fn haproxy_cfg(dir: &Path, resume: bool, address: &str, backends: &[u16]) -> String {
    let d = dir.display();
    let (http, https) = HAPROXY_PORTS;
    let (bulk, connections) = HAPROXY_TCP_PORTS;
    let backend = BACKEND_PORTS[0];
    let options = if resume {
        "ssl-min-ver TLSv1.3"
    } else {
        "ssl-min-ver TLSv1.3 no-tls-tickets"
    };
    let cache = if resume { "20000" } else { "0" };
    let backends: String = backends
        .iter()
        .enumerate()
        .map(|(i, port)| format!("backend be{i}\n  server s0 127.0.0.1:{port} pool-max-conn 256\n"))
        .collect();
    format!(
        r#"global
  nbthread 1
  cpu-map 1/1 1
  maxconn 9500
  tune.ssl.cachesize {cache}
  ssl-default-bind-options {options}
  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256
  stats socket {d}/haproxy.sock mode 600 level admin expose-fd listeners
defaults
  mode http
  timeout connect 5s
  timeout client 75s
  timeout server 30s
  timeout http-keep-alive 75s
  option http-keep-alive
  http-reuse always
frontend fe
  bind {address}:{http}
  bind {address}:{https} ssl crt {d}/combined.pem alpn h2,http/1.1 curves X25519
  http-request set-header X-Forwarded-For %[src]
  http-request set-header X-Real-IP %[src]
  http-request set-header X-Forwarded-Proto http if !{{ ssl_fc }}
  http-request set-header X-Forwarded-Proto https if {{ ssl_fc }}
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Forwarded-Port %[dst_port]
  use_backend %[req.hdr(host),field(1,:),lower,map({d}/routes/haproxy-hosts.map,be0)]
frontend tcp_bulk
  mode tcp
  bind {address}:{bulk}
  default_backend tcp_bulk
frontend tcp_connections
  mode tcp
  bind {address}:{connections}
  default_backend tcp_connections
backend tcp_bulk
  mode tcp
  server s0 127.0.0.1:{BULK_PORT}
backend tcp_connections
  mode tcp
  server s0 127.0.0.1:{backend}
{backends}"#
    )
}
