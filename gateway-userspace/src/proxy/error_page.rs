//! `custom-http-errors`: a backend answer with one of the listed statuses is replaced by the
//! error backend's page for it, asked for with the headers ingress-nginx's error backends read.

use http_body_util::Either;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};

use super::request_body::RequestBody;
use super::upstream::Target;
use super::{Proxy, ProxyBody};
use crate::observe::Exchange;

use crate::snapshot::Backend;

/// The error backend's page for `status`, or `None` when it has none to give (then the
/// backend's own answer stands).
pub async fn fetch(
    proxy: &Proxy,
    errors: &Backend,
    status: StatusCode,
    exchange: &Exchange,
) -> Option<Response<ProxyBody>> {
    let endpoint = errors.next_endpoint()?;
    let mut request = Request::new(RequestBody::Empty);
    *request.uri_mut() = exchange.uri.path_and_query()?.as_str().parse().ok()?;
    *request.version_mut() = Version::HTTP_11;
    let identity = &exchange.identity;
    let headers = request.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("x-code", status.as_str());
    set("x-format", "text/html");
    set("x-original-uri", exchange.uri.path_and_query()?.as_str());
    set("x-namespace", &identity.namespace);
    set("x-ingress-name", &identity.ingress);
    set("x-service-name", &identity.service);
    set("x-request-id", exchange.request_id.to_str().unwrap_or(""));
    set("host", &errors.service);
    let target = Target::plain(endpoint, proxy.config.connect_timeout);
    let sent = tokio::time::timeout(
        proxy.config.read_timeout,
        proxy.upstream.send(&target, Box::new(request), None),
    )
    .await;
    match sent {
        Ok(Ok(mut page)) => {
            // The client sees the original status with the error backend's page.
            *page.status_mut() = status;
            super::headers::remove_hop_by_hop(page.headers_mut(), None);
            Some(page.map(Either::Left))
        }
        _ => {
            tracing::warn!(backend = %errors.name(), %endpoint, "the error backend failed; the backend's answer is sent as it is");
            None
        }
    }
}
