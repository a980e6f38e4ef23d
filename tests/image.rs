//! The container image that `cargo xtask image` builds, loaded and run with podman the way a node
//! runs it (host network, the manifests mounted): the example routes answer, /readyz is 200,
//! the image names its version and commit, and SIGTERM drains and exits 0. `cargo xtask test`
//! builds the image and passes its path in XDP_GATEWAY_IMAGE.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use gateway_e2e::backend::Backend;
use gateway_e2e::client::HttpClient;
use gateway_e2e::gateway::{Gateway, podman, podman_run};
use hyper::StatusCode;

/// The image archive under test.
fn image_archive() -> PathBuf {
    let path = std::env::var_os("XDP_GATEWAY_IMAGE")
        .map(PathBuf::from)
        .expect(
            "XDP_GATEWAY_IMAGE names no image archive: run `cargo xtask test`, which builds one \
         (`cargo xtask image`) and passes its path",
        );
    assert!(path.exists(), "{} is missing", path.display());
    path
}

fn succeeds(command: &mut Command) -> String {
    let out = command
        .output()
        .expect("podman is installed (`cargo xtask test` installs it)");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image loaded into podman's store, removed again when dropped.
struct Loaded(String);

impl Loaded {
    fn from_archive(archive: &Path) -> Loaded {
        let said = succeeds(podman().args(["load", "--quiet", "--input"]).arg(archive));
        let reference = said
            .lines()
            .find_map(|line| line.strip_prefix("Loaded image: "))
            .unwrap_or_else(|| panic!("podman load named no image: {said}"))
            .to_string();
        Loaded(reference)
    }

    fn label(&self, key: &str) -> String {
        let format = format!("{{{{index .Labels \"org.opencontainers.image.{key}\"}}}}");
        succeeds(podman().args(["image", "inspect", "--format", &format, &self.0]))
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = podman().args(["rmi", "--force", &self.0]).output();
    }
}

fn repository_commit() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The labels and `gateway --version` name the version and the commit of this checkout.
fn names_its_version_and_commit(image: &Loaded) {
    let commit = repository_commit();
    assert_eq!(image.label("revision"), commit);
    assert_eq!(image.label("version"), env!("CARGO_PKG_VERSION"));
    let version = succeeds(podman_run().args(["--network", "none", &image.0, "--version"]));
    assert_eq!(
        version,
        format!("gateway {} (commit {commit})", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs `curl` for one HTTPS request to the example host, returning the status and body.
fn curl_https(port: u16, host: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sk",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            "--resolve",
        ])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("https://{host}:{port}{path}"))
        .output()
        .expect("curl is installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.parse().unwrap_or(0), body.to_string())
}

// One test: tests running beside each other would share the loaded image, and one's clean-up
// would remove it under the other's container.
#[tokio::test(flavor = "multi_thread")]
async fn the_image_names_its_commit_serves_the_examples_on_the_host_network_and_drains() {
    let image = Loaded::from_archive(&image_archive());
    names_its_version_and_commit(&image);
    // The example backends where deploy/examples points (as `cargo xtask demo` starts them).
    let mut backends = Vec::new();
    for (name, port) in [("web", 9001), ("api", 9002), ("docs", 9003)] {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let backend = Backend::start_on(name, addr)
            .await
            .unwrap_or_else(|e| panic!("port {port} must be free for the example {name}: {e}"));
        backends.push(backend);
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let reference = image.0.clone();
    let gateway = tokio::task::spawn_blocking(move || {
        // Ready (/readyz 200) is what start waits for.
        Gateway::start_container(&reference, &examples, &["--drain-delay", "1"])
    })
    .await
    .unwrap();
    assert_eq!(gateway.admin_get("/readyz").map(|(s, _)| s), Some(200));

    let client = HttpClient::new();
    for (host, path, service) in [
        ("docs.127.0.0.1.nip.io", "/guide", "docs"),
        ("v2.docs.example.com", "/", "docs"),
    ] {
        let answer = client.get(gateway.http, host, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{host}{path}");
        assert_eq!(answer.service(), service, "{host}{path}");
    }
    let redirect = client.get(gateway.http, "shop.example.com", "/").await;
    assert_eq!(redirect.status, StatusCode::PERMANENT_REDIRECT);
    let https = gateway.https.port();
    let (status, body) = curl_https(https, "shop.example.com", "/api/orders?id=7");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"api\""), "{body}");
    let answer = client.get(gateway.http, "unknown.example.com", "/").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    // A slow request is in flight when the kubelet's SIGTERM arrives: it is answered, and the
    // gateway exits 0 once drained.
    let slow = {
        let addr = gateway.http;
        tokio::spawn(async move {
            HttpClient::new()
                .get(addr, "docs.127.0.0.1.nip.io", "/sleep/1500")
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    gateway.terminate();
    let answer = slow.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    let (status, log) = tokio::task::spawn_blocking(move || {
        let mut gateway = gateway;
        let status = gateway.wait_exit(Duration::from_secs(20));
        (status, gateway.log())
    })
    .await
    .unwrap();
    assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{log:#?}");
    assert!(
        log.iter().any(|line| line.contains("drained; exiting")),
        "{log:#?}"
    );
}
