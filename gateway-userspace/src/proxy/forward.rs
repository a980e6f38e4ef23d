//! One request: route it by host and path, send it to an endpoint of the chosen backend, and
//! stream the answer back (or tunnel the connection, for an upgrade).

use std::sync::Arc;

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::error::ProxyError;
use super::headers;
use super::upstream::ReclaimableBody;
use super::{Connection, Proxy, ProxyBody};

/// Routes and forwards one request; every failure is turned into its response.
pub async fn handle(
    proxy: Arc<Proxy>,
    connection: Arc<Connection>,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, std::convert::Infallible> {
    // Both are reference-counted: cheap to keep for the log line of a failure.
    let method = request.method().clone();
    let uri = request.uri().clone();
    match forward(&proxy, &connection, request).await {
        Ok(response) => Ok(response),
        Err(error) => {
            tracing::debug!(client = %connection.client, %method, path = uri.path(), %error,
                "answered by the gateway");
            Ok(error.into_response())
        }
    }
}

async fn forward(
    proxy: &Proxy,
    connection: &Connection,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, ProxyError> {
    // HTTP/1.0 clients may send no Host: such a request can still match rules without a host.
    let host = request_host(&request);
    let backend = {
        let snapshot = proxy.table.current();
        let host = host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or_default();
        let found = snapshot.route(host, request.uri().path());
        found
            .map(|m| m.backend.clone())
            .ok_or(ProxyError::NoRoute)?
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
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();

    // One more endpoint is tried when connecting fails, as nginx's proxy_next_upstream does
    // for `error`; the body was not touched, so it is sent as it is.
    let mut body = body;
    let attempts = backend.endpoints.len().min(2);
    let mut last_error = None;
    for attempt in 1..=attempts.max(1) {
        let endpoint = backend
            .next_endpoint()
            .ok_or_else(|| ProxyError::NoEndpoints {
                backend: backend.name(),
            })?;
        let uri: Uri = format!("http://{endpoint}{path_and_query}")
            .parse()
            .map_err(|e| ProxyError::Upstream {
                backend: backend.name(),
                reason: format!("bad request target: {e}"),
            })?;
        let (reclaimable, reclaimed) = ReclaimableBody::new(body);
        let mut upstream_request = Request::new(reclaimable);
        *upstream_request.method_mut() = parts.method.clone();
        *upstream_request.uri_mut() = uri;
        *upstream_request.version_mut() = Version::HTTP_11;
        *upstream_request.headers_mut() = if attempt < attempts {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };

        let sent = tokio::time::timeout(
            proxy.config.read_timeout,
            proxy.client.request(upstream_request),
        )
        .await;
        match sent {
            Err(_) => {
                return Err(ProxyError::Timeout {
                    backend: backend.name(),
                    seconds: proxy.config.read_timeout.as_secs(),
                });
            }
            Ok(Ok(response)) => return Ok(respond(response, client_upgrade)),
            Ok(Err(error)) if error.is_connect() => {
                let reason = format!("{endpoint}: {}", error_chain(&error));
                tracing::warn!(backend = %backend.name(), %endpoint, error = %reason, "connect to backend failed");
                last_error = Some(reason);
                match reclaimed.await {
                    Ok(unused) => body = unused,
                    Err(_) => break,
                }
            }
            Ok(Err(error)) => {
                return Err(ProxyError::Upstream {
                    backend: backend.name(),
                    reason: format!("{endpoint}: {}", error_chain(&error)),
                });
            }
        }
    }
    Err(ProxyError::ConnectFailed {
        backend: backend.name(),
        reason: last_error.unwrap_or_else(|| "no endpoint left to try".to_string()),
    })
}

/// The backend's response, on its way back to the client.
fn respond(
    mut response: Response<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Response<ProxyBody> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_upgrade, backend_upgrade));
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
