//! A fake Kubernetes API server that speaks the real list/watch protocol over HTTP, for the real
//! kube-rs client inside the real gateway: lists with resourceVersion, watch streams of ADDED,
//! MODIFIED and DELETED events with bookmarks, 410 Gone for expired versions, disconnects and
//! outages on demand, merge-patched status, Leases with optimistic concurrency, and Events.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, Infallible>;

/// The kinds the fake serves: (kind, group/version prefix, plural, namespaced).
const KINDS: [(&str, &str, &str, bool); 17] = [
    ("Ingress", "/apis/networking.k8s.io/v1", "ingresses", true),
    (
        "IngressClass",
        "/apis/networking.k8s.io/v1",
        "ingressclasses",
        false,
    ),
    ("Service", "/api/v1", "services", true),
    ("Secret", "/api/v1", "secrets", true),
    ("Namespace", "/api/v1", "namespaces", false),
    ("ConfigMap", "/api/v1", "configmaps", true),
    (
        "EndpointSlice",
        "/apis/discovery.k8s.io/v1",
        "endpointslices",
        true,
    ),
    ("Lease", "/apis/coordination.k8s.io/v1", "leases", true),
    ("Event", "/apis/events.k8s.io/v1", "events", true),
    ("GatewayClass", GATEWAY_API, "gatewayclasses", false),
    ("Gateway", GATEWAY_API, "gateways", true),
    ("HTTPRoute", GATEWAY_API, "httproutes", true),
    ("GRPCRoute", GATEWAY_API, "grpcroutes", true),
    ("TLSRoute", GATEWAY_API, "tlsroutes", true),
    ("TCPRoute", GATEWAY_API, "tcproutes", true),
    ("UDPRoute", GATEWAY_API, "udproutes", true),
    ("ReferenceGrant", GATEWAY_API, "referencegrants", true),
];

/// Where the Gateway API kinds are served (unless hidden: a cluster without their CRDs).
const GATEWAY_API: &str = "/apis/gateway.networking.k8s.io/v1";

/// One request the gateway made (method and path with query), for assertions.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
}

#[derive(Default)]
struct State {
    version: u64,
    /// Objects by (plural, namespace, name).
    objects: BTreeMap<(String, String, String), Value>,
    /// Every change, for watches that resume from a version.
    history: Vec<(u64, String, &'static str, Value)>,
    /// Watches older than this get 410 Gone.
    oldest: u64,
    watchers: Vec<(String, Option<String>, mpsc::UnboundedSender<Bytes>)>,
    down: bool,
    /// The Gateway API CRDs are not installed: its paths answer 404.
    no_gateway_api: bool,
    log: Vec<Logged>,
}

/// The running fake; stops when dropped.
pub struct FakeApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
    kubeconfig: PathBuf,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

impl FakeApiServer {
    pub async fn start() -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            version: 1,
            ..State::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(state.clone(), request));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let kubeconfig = std::env::temp_dir().join(format!(
            "fake-kubeconfig-{}-{}.yaml",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\n\
                 users: [{{name: fake, user: {{}}}}]\ncontexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n\
                 current-context: fake\n"
            ),
        )
        .unwrap();
        FakeApiServer {
            addr,
            state,
            task,
            kubeconfig,
        }
    }

    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Creates or replaces objects given as YAML documents (as `kubectl apply` would).
    pub fn apply(&self, yaml: &str) {
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let object: Value = serde::Deserialize::deserialize(document).unwrap();
            if object.is_null() {
                continue;
            }
            let kind = object["kind"].as_str().unwrap().to_string();
            let plural = plural_of(&kind);
            let mut state = self.state.lock().unwrap();
            let namespace = namespaced(plural).then(|| {
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string()
            });
            let name = object["metadata"]["name"].as_str().unwrap().to_string();
            put(&mut state, plural, namespace.as_deref(), &name, object);
        }
    }

    /// Deletes an object.
    pub fn delete(&self, kind: &str, namespace: Option<&str>, name: &str) {
        let plural = plural_of(kind);
        let mut state = self.state.lock().unwrap();
        let key = (
            plural.to_string(),
            namespace.unwrap_or("").to_string(),
            name.to_string(),
        );
        remove(&mut state, plural, &key);
    }

    /// An object as the server holds it.
    pub fn get(&self, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (
            plural_of(kind).to_string(),
            namespace.unwrap_or("").to_string(),
            name.to_string(),
        );
        self.state.lock().unwrap().objects.get(&key).cloned()
    }

    /// Every object of a kind.
    pub fn list(&self, kind: &str) -> Vec<Value> {
        let plural = plural_of(kind);
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.0 == plural)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Closes every open watch (the client watches again from its last version).
    pub fn disconnect_watches(&self) {
        self.state.lock().unwrap().watchers.clear();
    }

    /// Forgets the history: watches from older versions get 410 Gone and must list again.
    pub fn expire_history(&self) {
        let mut state = self.state.lock().unwrap();
        // Every version a client holds is now too old; a fresh list gets a newer one.
        state.version += 1;
        state.oldest = state.version;
        state.history.clear();
        state.watchers.clear();
    }

    /// Takes the server down (503 to everything, watches closed) or brings it back.
    /// Serves the cluster as if the Gateway API CRDs were not installed.
    pub fn hide_gateway_api(&self) {
        self.state.lock().unwrap().no_gateway_api = true;
    }

    pub fn set_down(&self, down: bool) {
        let mut state = self.state.lock().unwrap();
        state.down = down;
        if down {
            state.watchers.clear();
        }
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }
}

fn plural_of(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|k| k.0 == kind)
        .map(|k| k.2)
        .unwrap_or_else(|| panic!("kind {kind} not served"))
}

fn namespaced(plural: &str) -> bool {
    KINDS.iter().any(|k| k.2 == plural && k.3)
}

/// Stores an object with a new resourceVersion (and a uid and creationTimestamp when new).
/// Removes an object, telling the watches; the object as it was last.
fn remove(state: &mut State, plural: &str, key: &(String, String, String)) -> Option<Value> {
    let mut object = state.objects.remove(key)?;
    state.version += 1;
    object["metadata"]["resourceVersion"] = json!(state.version.to_string());
    broadcast(state, plural, "DELETED", object.clone());
    Some(object)
}

fn put(
    state: &mut State,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
    mut object: Value,
) -> Value {
    state.version += 1;
    let key = (
        plural.to_string(),
        namespace.unwrap_or("").to_string(),
        name.to_string(),
    );
    let existing = state.objects.get(&key).cloned();
    let metadata = &mut object["metadata"];
    metadata["resourceVersion"] = json!(state.version.to_string());
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    let (uid, created) = match &existing {
        Some(old) => (
            old["metadata"]["uid"].clone(),
            old["metadata"]["creationTimestamp"].clone(),
        ),
        None => (
            json!(format!("uid-{}", state.version)),
            json!(format!(
                "2024-01-01T00:{:02}:{:02}Z",
                state.version / 60 % 60,
                state.version % 60
            )),
        ),
    };
    metadata["uid"] = uid;
    if metadata.get("creationTimestamp").is_none_or(Value::is_null) {
        metadata["creationTimestamp"] = created;
    }
    state.objects.insert(key, object.clone());
    broadcast(
        state,
        plural,
        if existing.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        },
        object.clone(),
    );
    object
}

fn broadcast(state: &mut State, plural: &str, kind: &'static str, object: Value) {
    let version = state.version;
    state
        .history
        .push((version, plural.to_string(), kind, object.clone()));
    let namespace = object["metadata"]["namespace"].as_str().map(str::to_string);
    let line = event_line(kind, &object);
    state.watchers.retain(|(watched, watched_ns, sender)| {
        if watched != plural || (watched_ns.is_some() && *watched_ns != namespace) {
            return !sender.is_closed();
        }
        sender.send(line.clone()).is_ok()
    });
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{}\n", json!({ "type": kind, "object": object })))
}

/// A parsed request target.
struct Target {
    plural: &'static str,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn route(path: &str) -> Option<Target> {
    for (_, prefix, plural, _) in KINDS {
        let Some(rest) = path.strip_prefix(prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
        let (namespace, rest) = match parts.as_slice() {
            ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest.to_vec()),
            rest => (None, rest.to_vec()),
        };
        let target = |name: Option<&&str>, subresource: Option<&&str>| Target {
            plural,
            namespace: namespace.clone(),
            name: name.map(|n| n.to_string()),
            subresource: subresource.map(|s| s.to_string()),
        };
        match rest.as_slice() {
            [p] if *p == plural => return Some(target(None, None)),
            [p, name] if *p == plural => return Some(target(Some(name), None)),
            [p, name, sub] if *p == plural => return Some(target(Some(name), Some(sub))),
            _ => {}
        }
    }
    None
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap(),
        &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code }),
    )
}

async fn handle(
    state: Arc<Mutex<State>>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query: BTreeMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3D", "=").replace("%2F", "/")))
        .collect();
    {
        let mut s = state.lock().unwrap();
        s.log.push(Logged {
            method: method.to_string(),
            path: request.uri().to_string(),
        });
        if s.down {
            return Ok(status(
                503,
                "ServiceUnavailable",
                "the fake API server is down",
            ));
        }
    }
    let hidden = state.lock().unwrap().no_gateway_api && path.starts_with(GATEWAY_API);
    if path == GATEWAY_API && !hidden {
        return Ok(json_response(StatusCode::OK, &gateway_api_discovery()));
    }
    let found = route(&path).filter(|_| !hidden);
    let Some(Target {
        plural,
        namespace,
        name,
        subresource,
    }) = found
    else {
        return Ok(status(404, "NotFound", &format!("no route for {path}")));
    };
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = state.lock().unwrap();
    let key = |name: &str| {
        (
            plural.to_string(),
            namespace.clone().unwrap_or_default(),
            name.to_string(),
        )
    };
    Ok(match (method, name) {
        (Method::GET, None) if query.get("watch").map(String::as_str) == Some("true") => {
            let from: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (sender, receiver) = mpsc::unbounded_channel();
            if from < s.oldest {
                let gone = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "message": "too old resource version", "code": 410 });
                let _ = sender.send(event_line("ERROR", &gone));
                drop(sender);
            } else {
                for (version, watched, kind, object) in &s.history {
                    let in_namespace = namespace.is_none()
                        || object["metadata"]["namespace"].as_str() == namespace.as_deref();
                    if *version > from && watched == plural && in_namespace {
                        let _ = sender.send(event_line(kind, object));
                    }
                }
                if query.get("allowWatchBookmarks").map(String::as_str) == Some("true") {
                    let bookmark = json!({ "kind": KINDS.iter().find(|k| k.2 == plural).unwrap().0, "apiVersion": "v1", "metadata": { "resourceVersion": s.version.to_string() } });
                    let _ = sender.send(event_line("BOOKMARK", &bookmark));
                }
                s.watchers
                    .push((plural.to_string(), namespace.clone(), sender));
            }
            let stream = tokio_stream(receiver).map(|line| Ok::<_, Infallible>(Frame::data(line)));
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
            response
                .headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            response
        }
        (Method::GET, None) => {
            let selector = query.get("fieldSelector").cloned();
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((p, ns, _), _)| {
                    p == plural && (namespace.is_none() || Some(ns) == namespace.as_ref())
                })
                .map(|(_, v)| v.clone())
                // The two field selectors the gateway uses; watches are not filtered (the
                // gateway must cope with more than it asked for).
                .filter(
                    |v| match selector.as_deref().and_then(|f| f.split_once('=')) {
                        Some(("type", wanted)) => v["type"].as_str() == Some(wanted),
                        Some(("metadata.name", wanted)) => {
                            v["metadata"]["name"].as_str() == Some(wanted)
                        }
                        _ => true,
                    },
                )
                .collect();
            json_response(
                StatusCode::OK,
                &json!({ "kind": "List", "apiVersion": "v1", "metadata": { "resourceVersion": s.version.to_string() }, "items": items }),
            )
        }
        (Method::GET, Some(name)) => match s.objects.get(&key(&name)) {
            Some(object) => json_response(StatusCode::OK, object),
            None => status(404, "NotFound", &format!("{plural} {name} not found")),
        },
        (Method::POST, None) => {
            let mut object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if object["metadata"]["name"].is_null()
                && let Some(prefix) = object["metadata"]["generateName"].as_str()
            {
                object["metadata"]["name"] = json!(format!("{prefix}{}", s.version));
            }
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if s.objects.contains_key(&key(&name)) {
                status(
                    409,
                    "AlreadyExists",
                    &format!("{plural} {name} already exists"),
                )
            } else {
                let stored = put(&mut s, plural, namespace.as_deref(), &name, object);
                json_response(StatusCode::CREATED, &stored)
            }
        }
        (Method::PUT, Some(name)) => {
            let object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let current = s
                .objects
                .get(&key(&name))
                .map(|o| o["metadata"]["resourceVersion"].clone());
            let sent = object["metadata"]["resourceVersion"].clone();
            match current {
                None => status(404, "NotFound", &format!("{plural} {name} not found")),
                Some(current) if !sent.is_null() && sent != current => {
                    status(409, "Conflict", "the object has been modified")
                }
                Some(_) => {
                    let stored = put(&mut s, plural, namespace.as_deref(), &name, object);
                    json_response(StatusCode::OK, &stored)
                }
            }
        }
        (Method::PATCH, Some(name)) => {
            let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            match s.objects.get(&key(&name)).cloned() {
                None => status(404, "NotFound", &format!("{plural} {name} not found")),
                Some(mut object) => {
                    // Only the status subresource changes status, and nothing else.
                    let patch = match subresource.as_deref() {
                        Some("status") => json!({ "status": patch["status"].clone() }),
                        _ => patch,
                    };
                    merge(&mut object, &patch);
                    let stored = put(&mut s, plural, namespace.as_deref(), &name, object);
                    json_response(StatusCode::OK, &stored)
                }
            }
        }
        (Method::DELETE, Some(name)) => match remove(&mut s, plural, &key(&name)) {
            None => status(404, "NotFound", &format!("{plural} {name} not found")),
            Some(object) => json_response(StatusCode::OK, &object),
        },
        (method, _) => status(405, "MethodNotAllowed", &format!("{method} not served")),
    })
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(target), Some(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else {
                    merge(target.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn tokio_stream(
    mut receiver: mpsc::UnboundedReceiver<Bytes>,
) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// The discovery document of the Gateway API group version (an APIResourceList).
fn gateway_api_discovery() -> Value {
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|(_, prefix, _, _)| *prefix == GATEWAY_API)
        .map(|(kind, _, plural, namespaced)| {
            json!({"name": plural, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                   "kind": kind, "verbs": ["get", "list", "watch", "patch", "update"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1",
           "groupVersion": "gateway.networking.k8s.io/v1", "resources": resources})
}
