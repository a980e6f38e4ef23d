//! The kernel fast path for real: a client namespace and a gateway namespace joined by veth, a
//! VIP that no socket binds, the real `gateway` binary with its real eBPF programs attached.
//! These need root (CI is root); elsewhere they say they skipped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gateway_e2e::gateway::{Gateway, binary};
use gateway_e2e::manifests::{ManifestsDir, ingress};
use gateway_e2e::netns::{
    Background, CLIENT_ADDR, CLIENT_ADDR6, GATEWAY_ADDR, GATEWAY_ADDR6, GATEWAY_IFACE,
    OTHER_CLIENT_ADDR, OTHER_CLIENT_ADDR6, Topology, VIP, VIP6, run,
};

const SHORT: Duration = Duration::from_millis(800);
const LONG: Duration = Duration::from_secs(3);

/// A client in the client namespace that requests `url` (Host: a.com) with curl, a new
/// connection each time, until stopped (at most 30 s).
struct CurlLoad {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl CurlLoad {
    fn start(t: &Topology, url: &str) -> CurlLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, client_ns, running) = (url.to_string(), t.client_ns.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut served, mut failed) = (0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !running.load(Ordering::Relaxed) && Instant::now() < deadline {
                let output = std::process::Command::new("ip")
                    .args(["netns", "exec", &client_ns, "curl", "-s", "-o", "/dev/null"])
                    .args(["-w", "%{http_code}", "--max-time", "3"])
                    .args(["--interface", CLIENT_ADDR, "-H", "Host: a.com", &url])
                    .output()
                    .unwrap();
                match String::from_utf8_lossy(&output.stdout).as_ref() {
                    "200" => served += 1,
                    other => failed.push(other.to_string()),
                }
            }
            (served, failed)
        });
        std::thread::sleep(Duration::from_millis(200));
        CurlLoad { stop, thread }
    }

    /// How many requests were served, and the status of every other (000: no answer).
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A manifests folder routing every host to `web` (127.0.0.1:9001 in the gateway namespace),
/// and that backend, started.
fn routes_to_web(topology: &Topology, annotations: &str) -> (ManifestsDir, Background) {
    let dir = ManifestsDir::new();
    dir.write("service.yaml", &web_service());
    dir.write(
        "ingress.yaml",
        &annotated(ingress("web", None, "/", "Prefix", "web"), annotations),
    );
    let backend = topology.spawn_in_gateway(binary("echo-backend"), &["web=127.0.0.1:9001"]);
    (dir, backend)
}

fn web_service() -> String {
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{name: http, port: 80}]}\n---\n\
     apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
     metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\n\
     addressType: IPv4\nports: [{name: http, port: 9001}]\nendpoints: [{addresses: [127.0.0.1]}]\n"
        .to_string()
}

fn annotated(yaml: String, annotations: &str) -> String {
    if annotations.is_empty() {
        return yaml;
    }
    yaml.replace(
        "metadata: {name: web}",
        &format!("metadata: {{name: web, annotations: {{{annotations}}}}}"),
    )
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// Polls until `check` holds, for at most `limit`.
fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the gateway says its fast path is on: it is set up after the gateway is ready
/// (which serves on its own sockets meanwhile).
fn wait_for_fast_path(gw: &Gateway) {
    assert!(
        eventually(LONG, || gw
            .log()
            .iter()
            .any(|l| l.contains("kernel fast path on"))),
        "{:#?}",
        gw.log()
    );
}

#[test]
fn steers_vip_traffic_and_drops_denied_sources_in_xdp() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    let gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--vip",
            "198.18.1.1:80=http",
            "--xdp-iface",
            GATEWAY_IFACE,
            "--allow-source",
            "198.18.0.0/24",
        ],
    );
    wait_for_fast_path(&gw);
    let vip = addr("198.18.1.1:80");
    let url = format!("http://{VIP}/hello");

    // No socket is bound to the VIP: only sk_lookup can hand the connection to the proxy.
    let listening = run(t.in_gateway("ss").args(["-Htln"]));
    assert!(!String::from_utf8_lossy(&listening.stdout).contains(VIP));
    assert_eq!(t.curl(&url, "shop.example.com", None, LONG), Some(200));
    assert!(t.counter(vip, "passed") > 0);

    let dropped_before = t.counter(vip, "dropped_acl");
    assert_eq!(
        t.curl(&url, "shop.example.com", Some(OTHER_CLIENT_ADDR), SHORT),
        None,
        "denied source must time out"
    );
    assert!(
        t.counter(vip, "dropped_acl") > dropped_before,
        "the SYN was dropped in XDP"
    );
    // The allowed client on the same listener is unaffected.
    assert_eq!(
        t.curl(&url, "shop.example.com", Some(CLIENT_ADDR), LONG),
        Some(200)
    );

    let (status, body) = gw.admin_get("/bpf/stats").unwrap();
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["listeners"][0]["address"], "198.18.1.1:80");
    assert_eq!(stats["listeners"][0]["allow_list"], true);

    // The same counters on /metrics, per listener and reason.
    let (status, metrics) = gw.admin_get("/metrics").unwrap();
    assert_eq!(status, 200);
    let dropped = metrics
        .lines()
        .find(|l| {
            l.starts_with("xdp_gateway_xdp_packets_total{")
                && l.contains("listener=\"198.18.1.1:80\"")
                && l.contains("reason=\"dropped_acl\"")
        })
        .unwrap_or_else(|| panic!("no XDP drop counter:\n{metrics}"));
    let value: u64 = dropped.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > dropped_before, "{dropped}");

    // explain says the same of a client on each side of the allow-list.
    let explain = |from: &str| -> serde_json::Value {
        let path = format!(
            "/explain?url=http%3A%2F%2F{VIP}%2Fhello&header=Host%3A%20shop.example.com&from={from}"
        );
        let (status, body) = gw.admin_get(&path).unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let denied = explain(OTHER_CLIENT_ADDR);
    assert_eq!(denied["steps"][1]["stage"], "fast-path", "{denied:#}");
    assert_eq!(denied["steps"][1]["verdict"], "drops", "{denied:#}");
    let allowed = explain(CLIENT_ADDR);
    assert!(
        allowed["steps"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("allow-list entry 198.18.0.0/24"),
        "{allowed:#}"
    );
    assert_eq!(
        allowed["outcome"]["backend"], "default/web:80",
        "{allowed:#}"
    );
    // The console's gateway page shows the listener, its allow-list and its counters.
    let (status, page) = gw.admin_get("/console/gateway").unwrap();
    assert_eq!(status, 200);
    for shown in ["http 198.18.1.1:80", "198.18.0.0/24", GATEWAY_IFACE] {
        assert!(
            page.contains(shown),
            "{shown} not on the gateway page:\n{page}"
        );
    }
}

#[test]
fn traffic_not_for_a_listener_passes_untouched() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    // Other services of the node: a TCP server on another port of the VIP and on the node's
    // IPv6 address, and a UDP echo server.
    let _tcp = t.spawn_in_gateway("python3", &["-m", "http.server", "--bind", VIP, "81"]);
    let _tcp6 = t.spawn_in_gateway("python3", &["-m", "http.server", "--bind", "::", "8081"]);
    let udp_echo = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',5353))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(d,a)";
    let _udp = t.spawn_in_gateway("python3", &["-c", udp_echo]);
    // Everything is denied on the listener, so any packet XDP wrongly took for it would drop.
    let gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--vip",
            "198.18.1.1:80=http",
            "--xdp-iface",
            GATEWAY_IFACE,
            "--allow-source",
            "192.0.2.1/32",
        ],
    );
    let vip = addr("198.18.1.1:80");
    assert!(eventually(LONG, || t.curl(
        &format!("http://{VIP}:81/"),
        "x",
        None,
        SHORT
    ) == Some(200)));
    // Its server starts in the background too: wait for it as for the IPv4 one.
    assert!(eventually(LONG, || t.curl(
        &format!("http://[{GATEWAY_ADDR6}]:8081/"),
        "x",
        None,
        SHORT
    ) == Some(200)));
    let udp = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(b'ping',('198.18.0.1',5353))\nprint(s.recvfrom(64)[0].decode())";
    let reply = run(t.in_client("python3").args(["-c", udp]));
    assert_eq!(String::from_utf8_lossy(&reply.stdout).trim(), "ping");
    if std::process::Command::new("ping")
        .arg("-V")
        .output()
        .is_ok()
    {
        run(t
            .in_client("ping")
            .args(["-c", "2", "-i", "0.2", "-W", "2", GATEWAY_ADDR]));
    } else {
        eprintln!("ping is not installed: ICMP not checked");
    }
    assert_eq!(t.counter(vip, "dropped_acl"), 0);
    assert_eq!(t.counter(vip, "passed"), 0);
    let (_, body) = gw.admin_get("/bpf/stats").unwrap();
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(stats["other"]["packets"].as_u64().unwrap() > 10, "{stats}");
}

#[test]
fn manifest_changes_reach_the_maps_within_a_second_without_failed_requests() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    let gateway_service = |ips: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: gateway, namespace: xdp-gateway}}\n\
             spec: {{type: LoadBalancer, externalIPs: [{ips}], ports: [{{name: http, port: 80}}]}}\n"
        )
    };
    dir.write("gateway-service.yaml", &gateway_service(VIP));
    t.ip(&[
        "-n",
        &t.gateway_ns,
        "addr",
        "add",
        "198.18.1.2/32",
        "dev",
        "lo",
    ]);
    let gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--publish-service",
            "xdp-gateway/gateway",
            "--xdp-iface",
            GATEWAY_IFACE,
        ],
    );
    let url = format!("http://{VIP}/");
    assert_eq!(t.curl(&url, "a.com", None, LONG), Some(200));
    assert_eq!(
        t.curl(&url, "a.com", Some(OTHER_CLIENT_ADDR), LONG),
        Some(200)
    );

    // A steady client while the maps change under it.
    let load = CurlLoad::start(&t, "http://198.18.1.1/");

    // A new VIP and an allow-list that leaves the other source out, in one change.
    let changed = Instant::now();
    dir.write(
        "gateway-service.yaml",
        &gateway_service(&format!("{VIP}, 198.18.1.2")),
    );
    dir.write(
        "ingress.yaml",
        &annotated(
            ingress("web", None, "/", "Prefix", "web"),
            "nginx.ingress.kubernetes.io/whitelist-source-range: \"198.18.0.0/24\"",
        ),
    );
    let new_vip = addr("198.18.1.2:80");
    assert!(
        eventually(Duration::from_secs(1), || t.counter(new_vip, "passed") > 0
            || t.curl(
                "http://198.18.1.2/",
                "a.com",
                None,
                Duration::from_millis(300)
            ) == Some(200)),
        "the new VIP was not served within a second"
    );
    assert!(
        eventually(
            Duration::from_secs(1)
                .saturating_sub(changed.elapsed())
                .max(Duration::from_millis(300)),
            || {
                t.curl(
                    &url,
                    "a.com",
                    Some(OTHER_CLIENT_ADDR),
                    Duration::from_millis(200),
                )
                .is_none()
            }
        ),
        "the allow-list did not apply within a second"
    );
    assert!(t.counter(addr("198.18.1.1:80"), "dropped_acl") > 0);
    std::thread::sleep(Duration::from_millis(300));
    let (served, failed) = load.stop();
    assert!(
        failed.is_empty(),
        "failed requests during the change: {failed:?}"
    );
    assert!(served > 3, "the load ran ({served})");
    drop(gw);
}

#[test]
fn syn_budget_drops_a_burst_from_one_source_and_not_from_another() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    let _gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--vip",
            "198.18.1.1:80=http",
            "--xdp-iface",
            GATEWAY_IFACE,
            "--syn-budget",
            "1/4",
        ],
    );
    let vip = addr("198.18.1.1:80");
    let burst = t.connect_burst(OTHER_CLIENT_ADDR, vip, 20, SHORT);
    assert!(
        (4..=6).contains(&burst),
        "a burst of 20 from one source gets about the budget of 4, got {burst}"
    );
    assert!(t.counter(vip, "dropped_syn_budget") >= 14);
    // Another source has its own budget.
    assert_eq!(t.connect_burst(CLIENT_ADDR, vip, 4, LONG), 4);
    // And requests still work (established connections are never counted against a budget).
    assert_eq!(
        t.curl(&format!("http://{VIP}/"), "a.com", Some(CLIENT_ADDR), LONG),
        Some(200)
    );
}

#[test]
fn a_restart_hands_the_steered_sockets_over_without_a_failed_request() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    let handoff = dir.path().join("handoff.sock");
    let flags = [
        "--vip",
        "198.18.1.1:80=http",
        "--xdp-iface",
        GATEWAY_IFACE,
        "--drain-delay",
        "1",
        "--access-log",
        "off",
        "--handoff-socket",
        handoff.to_str().unwrap(),
    ];
    let mut old = Gateway::start_in(&t, dir.path(), &flags);
    let load = CurlLoad::start(&t, &format!("http://{VIP}/"));
    let new = Gateway::start_in(&t, dir.path(), &flags);
    assert!(
        old.wait_exit(Duration::from_secs(15))
            .is_some_and(|s| s.success()),
        "the old process drains and exits: {:#?}",
        old.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let (served, failed) = load.stop();
    assert!(failed.is_empty(), "failed through the restart: {failed:?}");
    assert!(served > 5, "the load ran ({served})");
    assert!(
        new.log()
            .iter()
            .any(|l| l.contains("took over from the running gateway"))
    );
    // The steering sockets in the kernel's map are the ones the new process serves.
    assert_eq!(
        t.curl(&format!("http://{VIP}/"), "a.com", None, LONG),
        Some(200)
    );
}

#[test]
fn restart_keeps_the_pinned_fast_path_and_detach_removes_everything() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    let flags = [
        "--vip",
        "198.18.1.1:80=http",
        "--xdp-iface",
        GATEWAY_IFACE,
        "--allow-source",
        "198.18.0.0/24",
    ];
    let url = format!("http://{VIP}/");
    let vip = addr("198.18.1.1:80");
    let mut first = Gateway::start_in(&t, dir.path(), &flags);
    assert_eq!(t.curl(&url, "a.com", None, LONG), Some(200));
    first.kill();

    // With no daemon at all, XDP keeps filtering from the pinned link and maps.
    let dropped = t.counter(vip, "dropped_acl");
    assert_eq!(t.curl(&url, "a.com", Some(OTHER_CLIENT_ADDR), SHORT), None);
    assert!(t.counter(vip, "dropped_acl") > dropped);
    let pins: Vec<String> = std::fs::read_dir(&t.pin_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        pins.contains(&"xdp_veth-gw".to_string()) && pins.contains(&"sk_lookup_link".to_string()),
        "{pins:?}"
    );

    // A new daemon takes the pinned objects over: steering resumes, counters carry on.
    let passed = t.counter(vip, "passed");
    let second = Gateway::start_in(&t, dir.path(), &flags);
    assert!(
        eventually(LONG, || second
            .log()
            .iter()
            .any(|l| l.contains("kept (pinned link)"))),
        "{:#?}",
        second.log()
    );
    assert_eq!(t.curl(&url, "a.com", None, LONG), Some(200));
    assert!(t.counter(vip, "passed") > passed);
    drop(second);

    let detach = run(std::process::Command::new(binary("gateway"))
        .args(["bpf", "detach", "--bpf-pin-dir"])
        .arg(&t.pin_dir));
    assert!(String::from_utf8_lossy(&detach.stdout).contains("xdp_veth-gw"));
    assert!(!t.pin_dir.exists(), "the pin folder is gone");
    let link = run(std::process::Command::new("ip").args([
        "-n",
        &t.gateway_ns,
        "link",
        "show",
        GATEWAY_IFACE,
    ]));
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "no XDP program left on the interface"
    );
    // Nothing steers any more: the VIP has no socket.
    assert_eq!(t.curl(&url, "a.com", None, SHORT), None);
}

#[test]
fn ipv6_and_vlan_tagged_traffic_is_classified() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    let _gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--vip",
            &format!("[{VIP6}]:80=http"),
            "--vip",
            "198.18.11.1:80=http",
            "--xdp-iface",
            GATEWAY_IFACE,
            "--allow-source",
            &format!("{CLIENT_ADDR6}/128,198.18.10.2/32"),
        ],
    );
    let v6 = SocketAddr::new(VIP6.parse().unwrap(), 80);
    let v6_url = format!("http://[{VIP6}]/");
    assert_eq!(
        t.curl(&v6_url, "a.com", Some(CLIENT_ADDR6), LONG),
        Some(200)
    );
    assert!(t.counter(v6, "passed") > 0);
    assert_eq!(
        t.curl(&v6_url, "a.com", Some(OTHER_CLIENT_ADDR6), SHORT),
        None
    );
    assert!(t.counter(v6, "dropped_acl") > 0);

    // The kernel here has no 8021q module for VLAN devices, so tagged SYNs are written onto the
    // wire directly (AF_PACKET) and the XDP counters tell how each was classified.
    let tagged = addr("198.18.11.1:80");
    let link = run(std::process::Command::new("ip").args([
        "-n",
        &t.gateway_ns,
        "-br",
        "link",
        "show",
        GATEWAY_IFACE,
    ]));
    let mac = String::from_utf8_lossy(&link.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .replace(':', "");

    let send = |source: &str, tags: &[u16]| {
        let script = format!(
            r#"
import socket, struct
dst = bytes.fromhex("{mac}")
tags = {tags:?}
frame = dst + bytes.fromhex("020000000002")
for i, tag in enumerate(tags):
    frame += struct.pack("!HH", 0x88a8 if i == 0 and len(tags) == 2 else 0x8100, tag)
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 1, 0, 64, 6, 0,
                 socket.inet_aton("{source}"), socket.inet_aton("198.18.11.1"))
tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 0x50, 0x02, 65535, 0, 0)
frame += struct.pack("!H", 0x0800) + ip + tcp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("veth-cl", 0))
for _ in range(3):
    s.send(frame)
"#
        );
        run(t.in_client("python3").args(["-c", &script]));
    };
    send("198.18.10.2", &[10]);
    assert!(
        eventually(LONG, || t.counter(tagged, "passed") >= 3),
        "an 802.1Q frame from an allowed source passes"
    );
    send("198.18.10.3", &[10]);
    assert!(
        eventually(LONG, || t.counter(tagged, "dropped_acl") >= 3),
        "an 802.1Q frame from a denied source drops"
    );
    send("198.18.10.3", &[100, 10]);
    assert!(
        eventually(LONG, || t.counter(tagged, "dropped_acl") >= 6),
        "QinQ frames are classified too"
    );
}

#[test]
fn without_bpf_the_gateway_binds_its_vips_and_says_so() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    // A pin folder that is not on bpffs: the fast path cannot start.
    let not_bpffs = std::env::temp_dir().join(format!("gwt-not-bpffs-{}", std::process::id()));
    let gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--vip",
            "198.18.1.1:80=http",
            "--xdp-iface",
            GATEWAY_IFACE,
            "--bpf-pin-dir",
            not_bpffs.to_str().unwrap(),
        ],
    );
    let said = || {
        gw.log()
            .iter()
            .filter(|l| l.contains("KERNEL FAST PATH OFF"))
            .count()
    };
    assert!(eventually(LONG, || said() > 0), "{:#?}", gw.log());
    let url = format!("http://{VIP}/");
    assert!(eventually(LONG, || t.curl(&url, "a.com", None, SHORT) == Some(200)));
    assert_eq!(said(), 1, "said once: {:#?}", gw.log());
    let listening = run(t.in_gateway("ss").args(["-Htln"]));
    assert!(
        String::from_utf8_lossy(&listening.stdout).contains("198.18.1.1:80"),
        "the VIP is bound directly"
    );
    let _ = std::fs::remove_dir_all(not_bpffs);
}

/// Layer 4 through the kernel fast path: the tcp-services and udp-services ports of the
/// published Service's external IP (the VIP) are classified by protocol in XDP and steered by
/// sk_lookup into the proxy's layer 4 sockets, with no socket bound to the VIP; UDP replies
/// come from the VIP:port the client sent to.
#[test]
fn tcp_and_udp_ports_are_steered_from_a_vip_nothing_binds() {
    let Some(t) = Topology::new() else { return };
    let dir = ManifestsDir::new();
    let service = |name: &str, port: u16| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{name: p, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: p, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
        )
    };
    dir.write(
        "layer4.yaml",
        &[
            service("raw", 9001),
            service("dns", 9053),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tcp-services}\ndata: {\"9000\": \"default/raw:80\"}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: udp-services}\ndata: {\"5353\": \"default/dns:80\"}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {name: gateway}\n\
             spec:\n  externalIPs: [198.18.1.1]\n  ports: [{name: raw, port: 9000}, {name: dns, port: 5353, protocol: UDP}]\n---\n"
                .to_string(),
        ]
        .concat(),
    );
    let _backends = t.spawn_in_gateway(
        binary("echo-backend"),
        &["raw=127.0.0.1:9001", "dns=udp:127.0.0.1:9053"],
    );
    let gw = Gateway::start_in(
        &t,
        dir.path(),
        &[
            "--publish-service",
            "default/gateway",
            "--xdp-iface",
            GATEWAY_IFACE,
            "--tcp-services-configmap",
            "default/tcp-services",
            "--udp-services-configmap",
            "default/udp-services",
        ],
    );
    wait_for_fast_path(&gw);
    for flags in ["-Htln", "-Huln"] {
        let listening = run(t.in_gateway("ss").arg(flags));
        assert!(!String::from_utf8_lossy(&listening.stdout).contains(VIP));
    }
    // TCP: an HTTP request relayed whole to the HTTP backend behind port 9000.
    assert!(eventually(LONG, || t.curl(
        &format!("http://{VIP}:9000/"),
        "raw.test",
        None,
        SHORT
    ) == Some(200)));
    // UDP: the reply's source is the VIP:port, as the client's socket checks.
    let udp = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\n\
         s.sendto(b'query',('{VIP}',5353))\nd,a=s.recvfrom(64)\nprint(d.decode(), a[0], a[1])"
    );
    let reply = run(t.in_client("python3").args(["-c", &udp]));
    assert_eq!(
        String::from_utf8_lossy(&reply.stdout).trim(),
        format!("dns:query {VIP} 5353")
    );
    assert!(t.counter(addr("198.18.1.1:9000"), "passed") > 0);
    assert!(t.counter(addr("198.18.1.1:5353"), "passed") > 0);
    let (_, body) = gw.admin_get("/bpf/stats").unwrap();
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    let protocol = |address: &str| {
        let listeners = stats["listeners"].as_array().unwrap();
        let found = listeners.iter().find(|l| l["address"] == address);
        found.map(|l| l["protocol"].clone())
    };
    assert_eq!(protocol("198.18.1.1:9000"), Some("tcp".into()), "{stats}");
    assert_eq!(protocol("198.18.1.1:5353"), Some("udp".into()), "{stats}");
}

/// Pins of another layout (as an older gateway leaves them: here, without the layout map) are
/// not shared with programs that read them differently: the new daemon replaces them whole,
/// says so, and steers again.
#[test]
fn pins_of_another_layout_are_replaced_not_shared() {
    let Some(t) = Topology::new() else { return };
    let (dir, _backend) = routes_to_web(&t, "");
    let flags = ["--vip", "198.18.1.1:80=http", "--xdp-iface", GATEWAY_IFACE];
    let url = format!("http://{VIP}/");
    let mut first = Gateway::start_in(&t, dir.path(), &flags);
    wait_for_fast_path(&first);
    assert_eq!(t.curl(&url, "a.com", None, LONG), Some(200));
    first.kill();
    std::fs::remove_file(t.pin_dir.join("LAYOUT")).expect("the layout pin");

    let second = Gateway::start_in(&t, dir.path(), &flags);
    wait_for_fast_path(&second);
    let log = second.log();
    assert!(
        log.iter().any(|l| l.contains("of another layout")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|l| l.contains("kept (pinned link)")),
        "{log:#?}"
    );
    assert_eq!(t.curl(&url, "a.com", None, LONG), Some(200));
    assert!(t.pin_dir.join("LAYOUT").exists());
}
