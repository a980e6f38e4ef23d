//! One request: route it by host and path, apply its route's policy (access, limits, CORS,
//! redirects, rewrites, canary), send it to an endpoint of the chosen backend, and stream the
//! answer back (or tunnel the connection, for an upgrade).

use std::borrow::Cow;
use std::sync::Arc;

use http_body_util::Either;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};

use super::error::{ProxyError, plain_response};
use super::h1_server::TunnelIdle;
use super::request_body::{ClientBody, RequestBody};
use super::send::{self, Outgoing};
use super::upstream::PooledBody;
use super::{Connection, Proxy, ProxyBody, auth, error_page, headers, mirror, strict};
use crate::lifecycle::DrainState;
use crate::normalize::PathError;
use crate::observe::{Exchange, ObservedBody, request_id};
use crate::policy::template::RequestView;
use crate::policy::{ACME_CHALLENGE, Cors, Protocol, RoutePolicy, https_location};
use crate::snapshot::{Backend, normalize_host};
use crate::tls::client_auth::Refusal;

static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// Fields the gateway adds to most requests' maps: the request id, and `Host` for HTTP/2 and
/// HTTP/3 (the forwarding headers are written by the upstream's encoder).
pub const ADDED_FIELDS: usize = 2;

/// Routes and forwards one request; every failure is turned into its response. The exchange
/// is reported (metrics, access log) when the response body has been sent.
pub async fn handle(
    proxy: Arc<Proxy>,
    connection: Arc<Connection>,
    mut request: Request<ClientBody>,
) -> Result<Response<ObservedBody>, std::convert::Infallible> {
    // The map grows once, if at all, not header by header.
    request.headers_mut().reserve(ADDED_FIELDS);
    let id = request_id(request.headers_mut());
    let logged = proxy.observer.logs_exchanges();
    let mut exchange = Exchange::begin(connection.clone(), &request, id, logged);
    // The request is boxed: a future keeps its parameters twice over. The state of forwarding
    // is large (routing, policy, retries, the upstream exchange): each protocol's server
    // boxes the whole request's future, once (an HTTP/1.1 exchange, an HTTP/2 stream, an
    // HTTP/3 request's task).
    let request = Box::new(request);
    let forwarded = forward(&proxy, &connection, request, &mut exchange).await;
    let mut close = false;
    let mut response = match forwarded {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(client = %connection.client, method = %exchange.method,
                path = exchange.uri.path(), %error, "answered by the gateway");
            close = error.closes_connection();
            error.into_response()
        }
    };
    // While draining, keep-alive clients move to a new connection on their next request (an
    // upgrade keeps its connection: it is a tunnel now, which the drain waits for).
    if exchange.version < Version::HTTP_2
        && response.status() != StatusCode::SWITCHING_PROTOCOLS
        && (close || proxy.drain.state() != DrainState::Serving)
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(exchange.respond(proxy.observer.clone(), response))
}

/// What routing decided, taken out of the snapshot so that it is not held while waiting.
struct Routed {
    backend: Arc<Backend>,
    policy: Arc<RoutePolicy>,
    add_hsts: bool,
    /// The same, unless the host asks for client certificates (which HTTP/3 does not ask for:
    /// such a host answers it 421).
    offer_http3: bool,
    /// The path and query for the backend, when `rewrite-target` changed them.
    rewritten: Option<String>,
    /// The snapshot's default backend, for `custom-http-errors` without `default-backend`.
    default_backend: Option<Arc<Backend>>,
}

async fn forward(
    proxy: &Proxy,
    connection: &Connection,
    mut request: Box<Request<ClientBody>>,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, ProxyError> {
    strict::check_request(&request, &proxy.config.client_limits)?;
    normalize_path(request.uri_mut())?;
    // HTTP/1.0 clients may send no Host: such a request can still match rules without a host.
    let host = exchange.host.clone();
    let host_name = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .map(normalize_host)
        .unwrap_or_default();
    let routed = match route(proxy, connection, &request, &host_name, exchange)? {
        Ok(routed) => routed,
        Err(answer) => return Ok(answer),
    };
    let policy = routed.policy.clone();
    if let Some(certificate) = &connection.client_certificate {
        match certificate.admit(request.headers_mut()) {
            Ok(()) => {}
            Err(Refusal::Unverified(reason)) => match &certificate.auth.error_page {
                Some(page) => return Ok(redirect_to(StatusCode::FOUND, page.clone())),
                None => return Err(ProxyError::ClientCertificate { reason }),
            },
            Err(Refusal::Subject) => return Err(ProxyError::Forbidden),
        }
    }

    let client = connection.client.ip();
    // Only CORS reads it.
    let origin = policy
        .cors
        .as_ref()
        .and(request.headers().get(header::ORIGIN))
        .cloned();
    if let Some(answer) = answered_by_policy(&policy, connection, &request, &host_name, exchange)? {
        return Ok(answer);
    }
    let auth_cookies = if policy.basic_auth.is_some() || policy.external_auth.is_some() {
        // Boxed: only routes with authentication pay for its state.
        match Box::pin(auth::authenticate(
            proxy,
            connection,
            &policy,
            &mut request,
            &host_name,
        ))
        .await?
        {
            Ok(cookies) => Some(cookies),
            Err(refusal) => return Ok(refusal),
        }
    } else {
        None
    };

    let forwarding = connection.forwarding(host.as_ref());
    // Mirrors and header edits read the map: the forwarding headers go into it for them.
    let forwarding_written_upstream = policy.mirrors.is_empty() && policy.request_headers.is_none();
    let upgrade = headers::requested_upgrade(request.headers());
    let asked_upgrade = upgrade.is_some();
    // In a block: the request's parts are not kept in the future while the backend answers.
    let upstream_request = {
        let (mut parts, body) = (*request).into_parts();
        headers::remove_hop_by_hop(&mut parts.headers, upgrade);
        headers::remove_forwarding_claims(&mut parts.headers);
        // HTTP/1.0 clients may send no Host, HTTP/2 and HTTP/3 clients an authority instead.
        if let Some(host) = &host
            && parts.headers.get(header::HOST) != Some(host)
        {
            parts.headers.insert(header::HOST, host.clone());
        }
        if !forwarding_written_upstream {
            forwarding.insert_into(&mut parts.headers);
        }
        if let Some(prefix) = &policy.forwarded_prefix {
            parts
                .headers
                .insert(X_FORWARDED_PREFIX.clone(), prefix.clone());
        }
        if let Some(vhost) = &policy.upstream_vhost {
            parts.headers.insert(header::HOST, vhost.clone());
        }
        if let Some(edits) = &policy.request_headers {
            edits.apply(&mut parts.headers);
        }
        if policy.protocol.is_http2() {
            // gRPC servers expect it; it is hop-by-hop, so the client's was removed.
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let target = upstream_uri(
            &parts.uri,
            routed.rewritten.as_deref(),
            routed.backend.protocol(policy.protocol),
            &parts.headers,
        );
        let feeds = if policy.mirrors.is_empty() {
            Vec::new()
        } else {
            let sending = mirror::Sending {
                pool: &proxy.upstream,
                resolver: &proxy.resolver,
                connect_timeout: proxy.config.connect_timeout,
                timeout: proxy.config.read_timeout,
            };
            let has_body = !hyper::body::Body::is_end_stream(&body);
            let view = RequestView {
                method: &parts.method,
                uri: &parts.uri,
                host: &host_name,
                client,
                scheme: connection.scheme,
                headers: &parts.headers,
            };
            (proxy.mirrors).start(sending, &policy.mirrors, &view, &target, has_body)
        };
        let body = RequestBody::new(
            body,
            exchange.request_body.clone(),
            policy.body_limit,
            proxy.config.client_limits.body_timeout,
            feeds,
        );
        let mut upstream_request = Box::new(Request::from_parts(parts, body));
        *upstream_request.uri_mut() = target;
        *upstream_request.version_mut() = Version::HTTP_11;
        upstream_request
    };

    let outgoing = Outgoing {
        forwarding: forwarding_written_upstream.then_some(forwarding),
        backend: &routed.backend,
        policy: &policy,
        host: &host_name,
        client,
        scheme: connection.scheme,
    };
    // Error pages are rare: their fetch (a whole upstream exchange) is boxed, so that it does
    // not enlarge every request's future.
    let error_backend = policy.fallback.as_ref().or(routed.default_backend.as_ref());
    let sent = match send::send(proxy, outgoing, upstream_request, exchange).await {
        Ok(sent) => sent,
        // The gateway's own 502/503/504 get the error page too, as in ingress-nginx.
        Err(error) => {
            let status = error.status();
            if policy.custom_errors.contains(&status)
                && let Some(errors) = error_backend
                && let Some(page) =
                    Box::pin(error_page::fetch(proxy, errors, status, exchange)).await
            {
                return Ok(page);
            }
            return Err(error);
        }
    };
    // A tunnel that carries nothing either way for the read timeout is closed, as
    // ingress-nginx closes an idle WebSocket after proxy-read-timeout.
    let tunnel_idle = TunnelIdle(policy.read_timeout.unwrap_or(proxy.config.read_timeout));
    let mut response = respond(&routed.backend, sent.response, asked_upgrade, tunnel_idle)?;

    if policy.custom_errors.contains(&response.status())
        && let Some(errors) = error_backend
        && let Some(page) = Box::pin(error_page::fetch(
            proxy,
            errors,
            response.status(),
            exchange,
        ))
        .await
    {
        response = page;
    }
    if let Some(cors) = &policy.cors {
        cors.decorate(origin.as_ref(), response.headers_mut());
    }
    if let Some(edits) = &policy.response_headers {
        edits.apply(response.headers_mut());
    }
    if let Some(cookie) = sent.set_cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    if let Some(cookies) = auth_cookies {
        cookies.set_on(&mut response);
    }
    if routed.add_hsts
        && let Some(hsts) = &proxy.config.hsts
    {
        response
            .headers_mut()
            .entry(header::STRICT_TRANSPORT_SECURITY)
            .or_insert_with(|| hsts.clone());
    }
    if routed.offer_http3
        && let Some(alt_svc) = &proxy.config.alt_svc
    {
        response
            .headers_mut()
            .entry(header::ALT_SVC)
            .or_insert_with(|| alt_svc.clone());
    }
    Ok(response)
}

/// What the route's policy answers by itself, before any backend: refusals (403, 503, 413),
/// CORS preflights and redirects; `None` when the request goes on to a backend.
fn answered_by_policy(
    policy: &RoutePolicy,
    connection: &Connection,
    request: &Request<ClientBody>,
    host_name: &str,
    exchange: &mut Exchange,
) -> Result<Option<Response<ProxyBody>>, ProxyError> {
    if let Some(reason) = &policy.closed {
        return Err(ProxyError::Closed {
            reason: reason.clone(),
        });
    }
    let client = connection.client.ip();
    if !policy.admits(client) {
        return Err(ProxyError::Forbidden);
    }
    if let Some(limits) = &policy.limits {
        exchange.in_progress = limits.admit(client).map_err(|_| ProxyError::Limited)?;
    }
    if let Some(cors) = &policy.cors
        && Cors::is_preflight(request.method(), request.headers())
    {
        let (status, headers) = cors.preflight(request.headers());
        let mut response = plain_response(status, String::new());
        response.headers_mut().extend(headers);
        return Ok(Some(response));
    }
    if let Some(redirect) = &policy.redirect {
        return Ok(Some(redirect_to(
            redirect.status,
            redirect.location.clone(),
        )));
    }
    if let Some(rule) = &policy.redirect_rule {
        let uri = request.uri();
        let host = host_or_address(connection, host_name);
        let location = rule.location(
            connection.scheme,
            &host,
            connection.listener.port(),
            uri.path(),
            uri.query(),
        );
        if let Ok(location) = HeaderValue::from_str(&location) {
            return Ok(Some(redirect_to(rule.status, location)));
        }
    }
    if let Some(root) = &policy.app_root
        && request.uri().path() == "/"
    {
        let host = host_or_address(connection, host_name);
        let location = format!("{}://{host}{root}", connection.scheme);
        if let Ok(location) = HeaderValue::from_str(&location) {
            return Ok(Some(redirect_to(StatusCode::FOUND, location)));
        }
    }
    if let Some(limit) = policy.body_limit
        && request_length(request).is_some_and(|length| length > limit)
    {
        return Err(ProxyError::TooLarge { limit });
    }
    Ok(None)
}

/// Finds the route in the current snapshot: `Ok(Ok(routed))` to forward, `Ok(Err(answer))` when
/// the gateway answers itself (redirects).
fn route(
    proxy: &Proxy,
    connection: &Connection,
    request: &Request<ClientBody>,
    host_name: &str,
    exchange: &mut Exchange,
) -> Result<Result<Routed, Response<ProxyBody>>, ProxyError> {
    let snapshot = proxy.table.current();
    // A connection set up for one tenant's name must not carry requests for another's
    // (domain fronting), unless its certificate covers that name too.
    if let Some(sni) = &connection.sni
        && !host_name.is_empty()
        && sni != host_name
        && !snapshot
            .certificates
            .lookup(sni)
            .is_some_and(|c| c.covers(host_name))
    {
        return Err(ProxyError::Misdirected {
            sni: sni.clone(),
            host: host_name.to_string(),
        });
    }
    let uri = request.uri();
    if let Some(target) = snapshot.www_redirect(host_name) {
        let location = format!(
            "{}://{target}{}",
            connection.scheme,
            uri.path_and_query().map_or("/", |p| p.as_str())
        );
        if let Ok(location) = HeaderValue::from_str(&location) {
            return Ok(Err(redirect_to(StatusCode::PERMANENT_REDIRECT, location)));
        }
    }
    let path = uri.path();
    let found = match snapshot.gateway_listeners.get(&connection.listener) {
        Some(listener) => listener.route(
            host_name,
            path,
            request.method(),
            request.headers(),
            uri.query(),
        ),
        None => snapshot.route(host_name, path),
    };
    let found = found.ok_or(ProxyError::NoRoute)?;
    exchange.identity = found.identity.clone();
    if connection.scheme == "http" && found.https_redirect && !path.starts_with(ACME_CHALLENGE) {
        return Ok(Err(redirect_to_https(proxy, connection, host_name, uri)));
    }
    if snapshot.has_client_auth
        && !snapshot
            .gateway_listeners
            .contains_key(&connection.listener)
    {
        let wanted = snapshot.client_auth(host_name);
        let verified = connection.client_certificate.as_ref().map(|c| &c.auth);
        match (wanted, verified) {
            (None, None) => {}
            (Some(wanted), Some(verified)) if Arc::ptr_eq(wanted, verified) => {}
            // The client certificate was asked for with another host's rules (or none).
            _ if connection.scheme == "https" => {
                return Err(ProxyError::Misdirected {
                    sni: connection.sni.clone().unwrap_or_default(),
                    host: host_name.to_string(),
                });
            }
            _ => {
                return Err(ProxyError::ClientCertificate {
                    reason: "this host requires a client certificate: use https".into(),
                });
            }
        }
    }
    let mut policy = found
        .route
        .map_or_else(RoutePolicy::plain, |r| r.policy.clone());
    let canary = found.route.and_then(|r| r.canary.as_ref());
    let mut backend = match canary {
        Some(canary) if canary.chosen(request.headers()) => {
            exchange.canary = Some(canary.backend.upstream_name());
            canary.backend.clone()
        }
        _ => found.backend.clone(),
    };
    if let Some(split) = found.route.and_then(|r| r.split.as_ref()) {
        let chosen = split.choose().ok_or(ProxyError::Unresolved)?;
        backend = chosen.backend.clone().ok_or(ProxyError::Unresolved)?;
        if let Some(own) = &chosen.policy {
            policy = own.clone();
        }
    }
    if backend.endpoints.is_empty()
        && let Some(fallback) = &policy.fallback
    {
        backend = fallback.clone();
    }
    let regex = found.route.and_then(|r| r.regex.as_deref());
    let rewritten = policy.rewritten_target(regex, path, uri.query());
    let add_hsts = connection.scheme == "https" && found.tls_host;
    Ok(Ok(Routed {
        backend,
        add_hsts,
        offer_http3: add_hsts
            && proxy.config.alt_svc.is_some()
            && !(snapshot.has_client_auth && snapshot.client_auth(host_name).is_some()),
        policy,
        rewritten,
        default_backend: snapshot.default_backend.as_ref().map(|d| d.backend.clone()),
    }))
}

/// Rewrites the target's path to its one normal form (see [`crate::normalize`]), so routing,
/// policy and the backend all see the same path.
fn normalize_path(uri: &mut Uri) -> Result<(), ProxyError> {
    let normal = match crate::normalize::path(uri.path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(normal)) => normal,
        Err(error) => return Err(ProxyError::BadPath(error)),
    };
    let target = match uri.query() {
        Some(query) => format!("{normal}?{query}"),
        None => normal,
    };
    let mut parts = std::mem::take(uri).into_parts();
    parts.path_and_query = Some(
        target
            .parse()
            .map_err(|_| ProxyError::BadPath(PathError::BadEscape))?,
    );
    *uri = Uri::from_parts(parts).map_err(|_| ProxyError::BadPath(PathError::BadEscape))?;
    Ok(())
}

/// The request's declared body length, when it declares one.
pub(super) fn request_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The target of the upstream request: origin form (`/path?query`) for HTTP/1.1, absolute
/// form for HTTP/2 (whose `:scheme` and `:authority` come from it).
fn upstream_uri(
    uri: &Uri,
    rewritten: Option<&str>,
    protocol: Protocol,
    headers: &hyper::HeaderMap,
) -> Uri {
    let path_and_query = match rewritten {
        Some(rewritten) => rewritten.parse().ok(),
        None => uri.path_and_query().cloned(),
    };
    let mut target = hyper::http::uri::Parts::default();
    target.path_and_query = path_and_query;
    if protocol.is_http2() {
        target.scheme = Some(if protocol.is_tls() {
            hyper::http::uri::Scheme::HTTPS
        } else {
            hyper::http::uri::Scheme::HTTP
        });
        target.authority = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
            .or_else(|| Some(hyper::http::uri::Authority::from_static("backend")));
    }
    Uri::from_parts(target).unwrap_or_else(|_| Uri::from_static("/"))
}

/// A redirect answered by the gateway.
fn redirect_to(status: StatusCode, location: HeaderValue) -> Response<ProxyBody> {
    let mut response = plain_response(
        status,
        format!("redirecting to {}\n", location.to_str().unwrap_or("")),
    );
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// The host of redirects the gateway makes: the request's, or the address it reached.
fn host_or_address(connection: &Connection, host_name: &str) -> String {
    if host_name.is_empty() {
        connection.listener.ip().to_string()
    } else {
        host_name.to_string()
    }
}

/// The permanent redirect (308, which keeps method and body) of a plain-HTTP request to the
/// same host, path and query over HTTPS.
fn redirect_to_https(
    proxy: &Proxy,
    connection: &Connection,
    host_name: &str,
    uri: &Uri,
) -> Response<ProxyBody> {
    let location = https_location(
        proxy.config.https_redirect_port,
        &host_or_address(connection, host_name),
        uri.path_and_query().map_or("/", |p| p.as_str()),
    );
    match HeaderValue::from_str(&location) {
        Ok(location) => redirect_to(StatusCode::PERMANENT_REDIRECT, location),
        Err(_) => plain_response(StatusCode::BAD_REQUEST, "bad host\n".into()),
    }
}

/// The backend's response, on its way back to the client. A 101 keeps the backend's
/// connection in its body, for the HTTP/1 server to make the tunnel of.
fn respond(
    backend: &Backend,
    response: Response<PooledBody>,
    asked_upgrade: bool,
    tunnel_idle: TunnelIdle,
) -> Result<Response<ProxyBody>, ProxyError> {
    let (mut parts, body) = response.into_parts();
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        headers::remove_hop_by_hop(&mut parts.headers, None);
        return Ok(Response::from_parts(parts, Either::Left(body)));
    }
    if !asked_upgrade {
        return Err(ProxyError::Upstream {
            backend: backend.upstream_name(),
            reason: "a 101 to a request that asked for no upgrade".into(),
        });
    }
    let upgrade = parts.headers.get(header::UPGRADE).cloned();
    headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    parts.extensions.insert(tunnel_idle);
    Ok(Response::from_parts(parts, Either::Left(body)))
}
