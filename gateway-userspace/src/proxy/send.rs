//! Sending a request to a backend: the endpoint by the route's balance, timeouts by its policy,
//! and other endpoints tried as `proxy-next-upstream` allows, only where it is safe (a request
//! whose body was sent is never sent again).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Body;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use rustls_pki_types::ServerName;

use super::Proxy;
use super::error::ProxyError;
use super::headers::Forwarding;
use super::request_body::RequestBody;
use super::upstream::{Outbound, PooledBody, Target, UpstreamError};
use crate::observe::{Exchange, Upstream};
use crate::policy::balance::RequestView;
use crate::policy::{Balance, RoutePolicy};
use crate::snapshot::Backend;

/// Where a request goes and the facts its endpoint choice may use.
pub struct Outgoing<'a> {
    /// The forwarding headers, when the upstream is to write them (not already in the map).
    pub forwarding: Option<Forwarding<'a>>,
    pub backend: &'a Arc<Backend>,
    pub policy: &'a RoutePolicy,
    /// The request's host (normalized).
    pub host: &'a str,
    pub client: IpAddr,
    pub scheme: &'static str,
}

/// The backend's response and, for cookie affinity, the cookie to set.
pub struct Sent {
    pub response: Response<PooledBody>,
    pub set_cookie: Option<HeaderValue>,
}

/// What a request without a body needs to be sent again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn request(&self) -> Outbound {
        let mut request = Box::new(Request::new(RequestBody::Empty));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        *request.version_mut() = Version::HTTP_11;
        request
    }
}

pub async fn send(
    proxy: &Proxy,
    outgoing: Outgoing<'_>,
    request: Outbound,
    exchange: &mut Exchange,
) -> Result<Sent, ProxyError> {
    let Outgoing {
        backend, policy, ..
    } = outgoing;
    let retry = &policy.retry;
    let attempts = retry.attempts(backend.endpoints.len());
    // Only a request without a body can be sent again once it was written; a non-idempotent
    // one only when the route says so.
    let replay = (attempts > 1
        && request.body().is_end_stream()
        && (retry.non_idempotent || is_idempotent(request.method())))
    .then(|| Replay {
        method: request.method().clone(),
        uri: request.uri().clone(),
        headers: request.headers().clone(),
    });
    let first = {
        let view = RequestView {
            method: request.method(),
            uri: &exchange.uri,
            host: outgoing.host,
            client: outgoing.client,
            scheme: outgoing.scheme,
            headers: request.headers(),
        };
        policy
            .balance
            .pick(backend, &view)
            .ok_or_else(|| ProxyError::NoEndpoints {
                backend: backend.name(),
            })?
    };
    let protocol = backend.protocol(policy.protocol);
    let tls = (policy.backend_tls.as_ref())
        .or(backend.tls.as_ref())
        .cloned();
    let server_name = protocol
        .is_tls()
        .then(|| server_name(outgoing.host, policy, first.endpoint));
    let connect_timeout = policy
        .connect_timeout
        .unwrap_or(proxy.config.connect_timeout);
    let read_timeout = policy.read_timeout.unwrap_or(proxy.config.read_timeout);

    // Kept only when there can be a second attempt.
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut endpoint = first.endpoint;
    let mut set_cookie = first.set_cookie;
    let mut request = Some(request);
    let mut failure = None;
    for attempt in 0..attempts {
        if attempt > 0 {
            match next_untried(backend, &tried) {
                Some(next) => endpoint = next,
                None => break,
            }
            // A new endpoint: the affinity cookie (if any) must follow it.
            set_cookie = None;
        }
        if attempts > 1 {
            tried.push(endpoint);
        }
        let Some(this) = request
            .take()
            .or_else(|| replay.as_ref().map(Replay::request))
        else {
            break;
        };
        let target = Target {
            endpoint,
            protocol,
            server_name: server_name.clone(),
            tls: tls.clone(),
            connect_timeout,
        };
        let started = Instant::now();
        let in_flight = match policy.balance {
            Balance::Ewma => backend
                .index_of(endpoint)
                .and_then(|index| backend.load.start(index)),
            _ => None,
        };
        // The deadline from `started`: one clock read per attempt, not two.
        let deadline = tokio::time::Instant::from_std(started) + read_timeout;
        let exchanged = tokio::time::timeout_at(
            deadline,
            proxy.upstream.send(&target, this, outgoing.forwarding),
        );
        let outcome = match policy.send_timeout {
            Some(send_timeout) => tokio::select! {
                outcome = exchanged => outcome,
                () = exchange.request_body.stalled(send_timeout) => {
                    record(exchange, endpoint, backend, StatusCode::GATEWAY_TIMEOUT, started);
                    return Err(ProxyError::SendTimeout {
                        backend: backend.name(),
                        seconds: send_timeout.as_secs(),
                    });
                }
            },
            None => exchanged.await,
        };
        let last = attempt + 1 == attempts;
        match outcome {
            Ok(Ok(response)) => {
                if let Some(in_flight) = in_flight {
                    in_flight.done(started.elapsed());
                }
                let status = response.status();
                record(exchange, endpoint, backend, status, started);
                if !last && replay.is_some() && retry.on_status.contains(&status) {
                    tracing::debug!(backend = %backend.name(), %endpoint, %status,
                        "trying the next endpoint (proxy-next-upstream)");
                    continue;
                }
                return Ok(Sent {
                    response,
                    set_cookie,
                });
            }
            Ok(Err((error, unsent))) => {
                record(
                    exchange,
                    endpoint,
                    backend,
                    StatusCode::BAD_GATEWAY,
                    started,
                );
                if exchange.request_body.client_timed_out() {
                    return Err(ProxyError::ClientTimeout);
                }
                if exchange.request_body.client_failed() {
                    return Err(ProxyError::Malformed(
                        "the request body is malformed or was cut short",
                    ));
                }
                if exchange.request_body.exceeded() {
                    return Err(ProxyError::TooLarge {
                        limit: policy.body_limit.unwrap_or(0),
                    });
                }
                let error = match error {
                    UpstreamError::Connect(reason) => ProxyError::ConnectFailed {
                        backend: backend.name(),
                        reason: format!("{endpoint}: {reason}"),
                    },
                    UpstreamError::Exchange(error) => ProxyError::Upstream {
                        backend: backend.name(),
                        reason: format!("{endpoint}: {}", error_chain(error.as_ref())),
                    },
                };
                tracing::warn!(%endpoint, %error, "backend request failed");
                let retriable = retry.on_error && (unsent.is_some() || replay.is_some());
                failure = Some(error);
                if !retriable {
                    break;
                }
                request = unsent;
            }
            Err(_) => {
                record(
                    exchange,
                    endpoint,
                    backend,
                    StatusCode::GATEWAY_TIMEOUT,
                    started,
                );
                failure = Some(ProxyError::Timeout {
                    backend: backend.name(),
                    seconds: read_timeout.as_secs(),
                });
                if !(retry.on_timeout && replay.is_some()) {
                    break;
                }
            }
        }
    }
    Err(failure.unwrap_or_else(|| ProxyError::NoEndpoints {
        backend: backend.name(),
    }))
}

/// What the log and metrics say of an attempt; a failed one counts as the status the client
/// gets for it, as nginx's `$upstream_status` does.
fn record(
    exchange: &mut Exchange,
    endpoint: SocketAddr,
    backend: &Arc<Backend>,
    status: StatusCode,
    started: Instant,
) {
    exchange.upstream = Some(Upstream {
        address: endpoint,
        backend: backend.clone(),
        status,
        sent: started,
        header_time: started.elapsed(),
    });
}

/// The next endpoint in round-robin order that this request has not tried.
fn next_untried(backend: &Backend, tried: &[SocketAddr]) -> Option<SocketAddr> {
    (0..backend.endpoints.len())
        .filter_map(|_| backend.next_endpoint())
        .find(|endpoint| !tried.contains(endpoint))
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The TLS server name towards an HTTPS or GRPCS backend: `upstream-vhost`, else the request's
/// host, else the endpoint's address.
fn server_name(host: &str, policy: &RoutePolicy, endpoint: SocketAddr) -> ServerName<'static> {
    let vhost = policy
        .upstream_vhost
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .map(crate::snapshot::normalize_host);
    let name = vhost.as_deref().unwrap_or(host);
    ServerName::try_from(name.to_string()).unwrap_or_else(|_| ServerName::from(endpoint.ip()))
}

/// An error and its causes, on one line ("client error (Connect): tcp connect error: ...").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
