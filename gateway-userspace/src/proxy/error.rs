//! Every failure of the proxy becomes a response here, and only here: the status says what kind
//! of failure it was, the body says which backend and why.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{Response, StatusCode, header};

use super::ProxyBody;

/// Why the gateway answered instead of a backend.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    #[error("the request target is too long")]
    UriTooLong,
    #[error("a request header line is too long")]
    HeaderTooLarge,
    #[error("the request head is too large (its size or its number of fields)")]
    HeadTooLarge,
    #[error("the client stopped sending its request body")]
    ClientTimeout,
    #[error("bad request path: {0}")]
    BadPath(#[from] crate::normalize::PathError),
    #[error("this route is closed: {reason}")]
    Closed { reason: std::sync::Arc<str> },
    #[error("no route for this host and path")]
    NoRoute,
    #[error("the route's backend reference cannot be used (see the route's status)")]
    Unresolved,
    #[error("backend {backend} has no ready endpoint")]
    NoEndpoints { backend: String },
    #[error("could not connect to backend {backend} ({reason})")]
    ConnectFailed { backend: String, reason: String },
    #[error("backend {backend} did not answer within {seconds}s")]
    Timeout { backend: String, seconds: u64 },
    #[error("backend {backend} did not read the request body for {seconds}s")]
    SendTimeout { backend: String, seconds: u64 },
    #[error("this client is not allowed on this route")]
    Forbidden,
    #[error("this route needs a user name and password")]
    Unauthorized { challenge: header::HeaderValue },
    #[error("the route's auth service failed: {reason}")]
    AuthFailed { reason: String },
    #[error("{reason}")]
    ClientCertificate { reason: String },
    #[error("too many requests from this client")]
    Limited,
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("backend {backend} failed: {reason}")]
    Upstream { backend: String, reason: String },
    #[error("this connection is for {sni:?}, whose certificate does not cover {host:?}")]
    Misdirected { sni: String, host: String },
}

impl ProxyError {
    /// The status a client sees for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            // As nginx answers a missing or failed client certificate.
            ProxyError::BadPath(_)
            | ProxyError::Malformed(_)
            | ProxyError::ClientCertificate { .. } => StatusCode::BAD_REQUEST,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::HeaderTooLarge | ProxyError::HeadTooLarge => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            // As ingress-nginx denies a location whose access rules it cannot apply.
            ProxyError::Closed { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            // As the Gateway API requires for an invalid backend reference.
            ProxyError::Unresolved => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::NoEndpoints { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed { .. } | ProxyError::Upstream { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout { .. } | ProxyError::SendTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Forbidden => StatusCode::FORBIDDEN,
            ProxyError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            // As ingress-nginx answers when auth_request gets anything but 2xx, 401 or 403.
            ProxyError::AuthFailed { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            // ingress-nginx's default limit-req-status-code and limit-conn-status-code.
            ProxyError::Limited => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Misdirected { .. } => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// Whether the client's connection is closed after this answer: its framing cannot be
    /// trusted, or it was too slow.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::Malformed(_)
                | ProxyError::UriTooLong
                | ProxyError::HeaderTooLarge
                | ProxyError::HeadTooLarge
                | ProxyError::ClientTimeout
        )
    }

    /// A short plain-text response that names the failure.
    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let mut response = plain_response(status, format!("{status}: {self} (xdp-gateway)\n"));
        if let ProxyError::Unauthorized { challenge } = self {
            (response.headers_mut()).insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// A plain-text response generated by the gateway itself.
pub fn plain_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
