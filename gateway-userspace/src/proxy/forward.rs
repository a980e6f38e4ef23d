//! One request: route it by host and path, send it to an endpoint of the chosen backend, and
//! stream the answer back (or tunnel the connection, for an upgrade).

use std::sync::Arc;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::error::{ProxyError, plain_response};
use super::headers;
use super::request_body::RequestBody;
use super::upstream::{PooledBody, UpstreamError};
use super::{Connection, Proxy, ProxyBody};
use crate::lifecycle::DrainState;
use crate::observe::{Exchange, ObservedBody, Upstream, request_id};
use crate::snapshot::normalize_host;

/// Where ACME HTTP-01 challenges are answered: never redirected, so certificates can be issued
/// for hosts that already redirect (as in ingress-nginx).
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// Routes and forwards one request; every failure is turned into its response. The exchange
/// is reported (metrics, access log) when the response body has been sent.
pub async fn handle(
    proxy: Arc<Proxy>,
    connection: Arc<Connection>,
    mut request: Request<Incoming>,
) -> Result<Response<ObservedBody>, std::convert::Infallible> {
    let id = request_id(request.headers_mut());
    let mut exchange = Exchange::begin(connection.clone(), &request, id);
    let response = match forward(&proxy, &connection, request, &mut exchange).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(client = %connection.client, method = %exchange.method,
                path = exchange.uri.path(), %error, "answered by the gateway");
            error.into_response()
        }
    };
    let mut response = response;
    // While draining, keep-alive clients move to a new connection on their next request.
    if exchange.version < Version::HTTP_2 && proxy.drain.state() != DrainState::Serving {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(exchange.respond(proxy.observer.clone(), response))
}

async fn forward(
    proxy: &Proxy,
    connection: &Connection,
    mut request: Request<Incoming>,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    // HTTP/1.0 clients may send no Host: such a request can still match rules without a host.
    let host = request_host(&request);
    let host_name = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(normalize_host)
        .unwrap_or_default();
    let (backend, add_hsts) = {
        let snapshot = proxy.table.current();
        // A connection set up for one tenant's name must not carry requests for another's
        // (domain fronting), unless its certificate covers that name too.
        if let Some(sni) = &connection.sni
            && !host_name.is_empty()
            && *sni != host_name
            && !snapshot
                .certificates
                .lookup(sni)
                .is_some_and(|c| c.covers(&host_name))
        {
            return Err(ProxyError::Misdirected {
                sni: sni.clone(),
                host: host_name,
            });
        }
        let path = request.uri().path();
        let found = snapshot
            .route(&host_name, path)
            .ok_or(ProxyError::NoRoute)?;
        exchange.identity = found.identity.clone();
        if connection.scheme == "http" && found.https_redirect && !path.starts_with(ACME_CHALLENGE)
        {
            return Ok(redirect_to_https(
                proxy,
                connection,
                &host_name,
                request.uri(),
            ));
        }
        (
            found.backend.clone(),
            connection.scheme == "https" && found.tls_host,
        )
    };

    let upgrade = headers::requested_upgrade(request.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    headers::set_forwarding(
        &mut parts.headers,
        connection.client,
        connection.listener,
        connection.scheme,
        host.as_ref(),
    );
    // Origin form (`/path?query`) towards the backend, whatever form the client used.
    let mut target = hyper::http::uri::Parts::default();
    target.path_and_query = parts.uri.path_and_query().cloned();
    let target = Uri::from_parts(target).unwrap_or_else(|_| Uri::from_static("/"));
    let body = RequestBody::new(body, exchange.request_body_bytes.clone());
    let mut upstream_request = Request::from_parts(parts, body);
    *upstream_request.uri_mut() = target;
    *upstream_request.version_mut() = Version::HTTP_11;

    // One more endpoint is tried when connecting fails, as nginx's proxy_next_upstream does
    // for `error`; the request was not written anywhere, so it is sent as it is.
    let attempts = backend.endpoints.len().clamp(1, 2);
    let mut last_error = None;
    for _ in 0..attempts {
        let endpoint = backend
            .next_endpoint()
            .ok_or_else(|| ProxyError::NoEndpoints {
                backend: backend.name(),
            })?;
        let started = std::time::Instant::now();
        let sent = tokio::time::timeout(
            proxy.config.read_timeout,
            proxy.upstream.send(endpoint, upstream_request),
        )
        .await;
        // What the log and metrics say of this attempt; a failed one counts as the status the
        // client gets for it, as nginx's $upstream_status does.
        let attempt = |status| Upstream {
            address: endpoint,
            name: backend.upstream_name(),
            status,
            sent: started,
            header_time: started.elapsed(),
        };
        match sent {
            Err(_) => {
                exchange.upstream = Some(attempt(StatusCode::GATEWAY_TIMEOUT));
                return Err(ProxyError::Timeout {
                    backend: backend.name(),
                    seconds: proxy.config.read_timeout.as_secs(),
                });
            }
            Ok(Ok(response)) => {
                exchange.upstream = Some(attempt(response.status()));
                let mut response = respond(proxy, response, client_upgrade);
                if add_hsts && let Some(hsts) = &proxy.config.hsts {
                    response
                        .headers_mut()
                        .entry(header::STRICT_TRANSPORT_SECURITY)
                        .or_insert_with(|| hsts.clone());
                }
                return Ok(response);
            }
            Ok(Err((UpstreamError::Connect(reason), Some(unsent)))) => {
                let reason = format!("{endpoint}: {reason}");
                tracing::warn!(backend = %backend.name(), %endpoint, error = %reason, "connect to backend failed");
                last_error = Some(reason);
                exchange.upstream = Some(attempt(StatusCode::BAD_GATEWAY));
                upstream_request = unsent;
            }
            Ok(Err((error, _))) => {
                let reason = match error {
                    UpstreamError::Connect(reason) => reason,
                    UpstreamError::Exchange(error) => error_chain(&error),
                };
                exchange.upstream = Some(attempt(StatusCode::BAD_GATEWAY));
                return Err(ProxyError::Upstream {
                    backend: backend.name(),
                    reason: format!("{endpoint}: {reason}"),
                });
            }
        }
    }
    Err(ProxyError::ConnectFailed {
        backend: backend.name(),
        reason: last_error.unwrap_or_else(|| "no endpoint left to try".to_string()),
    })
}

/// The permanent redirect (308, which keeps method and body) of a plain-HTTP request to the
/// same host, path and query over HTTPS.
fn redirect_to_https(
    proxy: &Proxy,
    connection: &Connection,
    host_name: &str,
    uri: &Uri,
) -> Response<ProxyBody> {
    let host = if host_name.is_empty() {
        connection.listener.ip().to_string()
    } else {
        host_name.to_string()
    };
    let port = match proxy.config.https_redirect_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{host}{port}{target}");
    let mut response = plain_response(
        StatusCode::PERMANENT_REDIRECT,
        format!("redirecting to {location}\n"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// The backend's response, on its way back to the client.
fn respond(
    proxy: &Proxy,
    mut response: Response<PooledBody>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            // A drain waits for tunnels (WebSockets) too, up to its deadline.
            proxy.drain.spawn(tunnel(client_upgrade, backend_upgrade));
        }
        let upgrade = response.headers().get(header::UPGRADE).cloned();
        headers::remove_hop_by_hop(response.headers_mut(), upgrade);
    } else {
        headers::remove_hop_by_hop(response.headers_mut(), None);
    }
    response.map(Either::Left)
}

/// Copies bytes both ways between an upgraded client and backend until either side closes.
async fn tunnel(client: hyper::upgrade::OnUpgrade, backend: hyper::upgrade::OnUpgrade) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        tracing::debug!(%error, "upgraded connection ended with an error");
    }
}

/// The host the request is for: `:authority` (HTTP/2, absolute-form targets), else Host.
fn request_host(request: &Request<Incoming>) -> Option<HeaderValue> {
    if let Some(authority) = request.uri().authority() {
        return HeaderValue::from_str(authority.as_str()).ok();
    }
    request.headers().get(header::HOST).cloned()
}

/// An error and its causes, on one line ("client error (Connect): tcp connect error: ...").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
