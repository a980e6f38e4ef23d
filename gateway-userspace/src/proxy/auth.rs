//! Authentication of a request before it goes to its backend (after access lists, limits, CORS
//! preflights and redirects, as in ingress-nginx): `auth-type: basic`, then `auth-url`.
//! bcrypt runs on the blocking pool, at most one hash per core at a time, so that a flood of
//! wrong passwords slows only itself; an auth service's subrequest goes through the same
//! upstream pool as any request.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::error::{ProxyError, plain_response};
use super::request_body::{ClientBody, RequestBody};
use super::{Connection, Proxy, ProxyBody, headers};
use crate::policy::RoutePolicy;
use crate::policy::auth::BasicAuth;
use crate::policy::auth::external::{ExternalAuth, Verdict};
use crate::policy::template::{RequestView, escape_into};

static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");
static X_SENT_FROM: HeaderName = HeaderName::from_static("x-sent-from");

/// Backend statuses on which the auth answer's cookies are set without
/// `auth-always-set-cookie` (ingress-nginx's list).
const SETS_COOKIES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// Password hashing, one slow hash per core at a time.
pub struct Hashing(Semaphore);

impl Default for Hashing {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self(Semaphore::new(cores))
    }
}

/// The auth service's cookies, for the response.
#[derive(Default)]
pub struct AuthCookies {
    cookies: Vec<HeaderValue>,
    always: bool,
}

impl AuthCookies {
    /// Adds the cookies to `response` where ingress-nginx would.
    pub fn set_on<B>(self, response: &mut Response<B>) {
        if self.always || SETS_COOKIES.contains(&response.status().as_u16()) {
            for cookie in self.cookies {
                response.headers_mut().append(header::SET_COOKIE, cookie);
            }
        }
    }
}

/// Authenticates `request` as its route's policy asks. `Ok(Err(response))` is the auth
/// service's refusal (401, 403, or a redirect to sign in), for the client as it is.
pub async fn authenticate(
    proxy: &Proxy,
    connection: &Connection,
    policy: &RoutePolicy,
    request: &mut Request<ClientBody>,
    host_name: &str,
) -> Result<Result<AuthCookies, Response<ProxyBody>>, ProxyError> {
    if let Some(basic) = &policy.basic_auth {
        basic_auth(&proxy.hashing, basic, request.headers()).await?;
    }
    let Some(auth) = &policy.external_auth else {
        return Ok(Ok(AuthCookies::default()));
    };
    let cached = auth.cache.as_ref().map(|cache| {
        let key = cache.key(&view(connection, request, host_name));
        (cache, key, cache.get(&key))
    });
    let verdict = match cached {
        Some((_, _, Some(verdict))) => verdict,
        _ => {
            let (status, verdict) = ask(proxy, connection, auth, request, host_name).await?;
            if let Some((cache, key, None)) = cached {
                cache.put(key, &verdict, status);
            }
            verdict
        }
    };
    let always = auth.always_set_cookie;
    match verdict {
        Verdict::Allowed { headers, cookies } => {
            // The client's own values of these headers never reach the backend: only the auth
            // service's do (a header it did not send is removed, as ingress-nginx's empty
            // proxy_set_header does).
            for name in &auth.response_headers {
                request.headers_mut().remove(name);
            }
            for (name, value) in headers {
                request.headers_mut().append(name, value);
            }
            Ok(Ok(AuthCookies { cookies, always }))
        }
        Verdict::Denied {
            status,
            challenge,
            cookies,
        } => {
            let mut response = match &auth.signin {
                Some(signin) if status == StatusCode::UNAUTHORIZED => {
                    let mut location = signin.url.render(&view(connection, request, host_name));
                    if let Some(param) = &signin.redirect_param {
                        location.push(if location.contains('?') { '&' } else { '?' });
                        location.push_str(param);
                        location.push('=');
                        escape_into(&original_url(connection, request, host_name), &mut location);
                    }
                    let location =
                        HeaderValue::from_str(&location).map_err(|_| ProxyError::AuthFailed {
                            reason: "the sign-in URL made from this request is not a valid URL"
                                .into(),
                        })?;
                    let mut response = plain_response(StatusCode::FOUND, String::new());
                    response.headers_mut().insert(header::LOCATION, location);
                    response
                }
                _ => {
                    let mut response =
                        plain_response(status, format!("{status} (xdp-gateway: auth-url)\n"));
                    if let Some(challenge) = challenge {
                        response
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, challenge);
                    }
                    response
                }
            };
            AuthCookies { cookies, always }.set_on(&mut response);
            Ok(Err(response))
        }
    }
}

/// `auth-type: basic`: the request's credentials must be one of the users'.
async fn basic_auth(
    hashing: &Hashing,
    basic: &Arc<BasicAuth>,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let refused = || ProxyError::Unauthorized {
        challenge: basic.challenge.clone(),
    };
    let header = headers.get(header::AUTHORIZATION).ok_or_else(refused)?;
    let mut decoded = Vec::new();
    let offered = basic.offered(header, &mut decoded).ok_or_else(refused)?;
    let verified = if basic.remembers(&offered) {
        true
    } else if !basic.is_slow(&offered) {
        basic.verify(&offered)
    } else {
        let _permit = (hashing.0)
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let (basic, header) = (basic.clone(), header.clone());
        tokio::task::spawn_blocking(move || {
            let mut decoded = Vec::new();
            (basic.offered(&header, &mut decoded)).is_some_and(|offered| basic.verify(&offered))
        })
        .await
        .unwrap_or(false)
    };
    verified.then_some(()).ok_or_else(refused)
}

/// The subrequest to the auth service: the request's headers (no body), and what ingress-nginx
/// adds to them.
async fn ask(
    proxy: &Proxy,
    connection: &Connection,
    auth: &ExternalAuth,
    request: &Request<ClientBody>,
    host_name: &str,
) -> Result<(StatusCode, Verdict), ProxyError> {
    let failed = |reason: String| ProxyError::AuthFailed { reason };
    let mut headers = request.headers().clone();
    headers::remove_hop_by_hop(&mut headers, None);
    headers.remove(header::CONTENT_LENGTH);
    connection
        .forwarding(request.headers().get(header::HOST))
        .insert_into(&mut headers);
    headers.insert(header::HOST, auth.url.authority.clone());
    let original = original_url(connection, request, host_name);
    let original = HeaderValue::from_str(&original).map_err(|e| failed(e.to_string()))?;
    headers.insert(X_ORIGINAL_URL.clone(), original);
    headers.insert(
        X_ORIGINAL_METHOD.clone(),
        HeaderValue::from_str(request.method().as_str()).map_err(|e| failed(e.to_string()))?,
    );
    let redirect = match &auth.request_redirect {
        Some(redirect) => redirect.clone(),
        None => HeaderValue::from_str(request_uri(request)).map_err(|e| failed(e.to_string()))?,
    };
    headers.insert(X_AUTH_REQUEST_REDIRECT.clone(), redirect);
    headers.insert(
        X_SENT_FROM.clone(),
        HeaderValue::from_static("nginx-ingress-controller"),
    );

    let mut subrequest = Request::new(RequestBody::Empty);
    *subrequest.method_mut() = auth
        .method
        .clone()
        .unwrap_or_else(|| request.method().clone());
    *subrequest.uri_mut() = auth
        .url
        .path_and_query
        .as_str()
        .parse()
        .map_err(|_| failed("the auth URL's path is not a valid request target".into()))?;
    *subrequest.headers_mut() = headers;

    let target = (proxy
        .resolver
        .target(&auth.url, proxy.config.connect_timeout)
        .await)
        .map_err(failed)?;
    let timeout = proxy.config.read_timeout;
    let exchange = async {
        let response = (proxy
            .upstream
            .send(&target, Box::new(subrequest), None)
            .await)
            .map_err(|(error, _)| format!("{error:?}"))?;
        let (parts, mut body) = response.into_parts();
        // Read to its end (the connection goes back to its pool); the body itself is not used.
        while let Some(frame) = body.frame().await {
            frame.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(parts)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| failed(format!("no answer within {}s", timeout.as_secs())))?
        .map_err(failed)?;
    let cookies = || {
        answer
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect()
    };
    let verdict = match answer.status.as_u16() {
        200..=299 => Verdict::Allowed {
            headers: (auth.response_headers.iter())
                .filter_map(|name| Some((name.clone(), answer.headers.get(name)?.clone())))
                .collect(),
            cookies: cookies(),
        },
        401 | 403 => Verdict::Denied {
            status: answer.status,
            challenge: answer.headers.get(header::WWW_AUTHENTICATE).cloned(),
            cookies: cookies(),
        },
        _ => {
            let reason = format!("the auth service answered {}", answer.status);
            return Err(failed(reason));
        }
    };
    Ok((answer.status, verdict))
}

fn view<'a>(
    connection: &Connection,
    request: &'a Request<ClientBody>,
    host_name: &'a str,
) -> RequestView<'a> {
    RequestView {
        method: request.method(),
        uri: request.uri(),
        host: host_name,
        client: connection.client.ip(),
        scheme: connection.scheme,
        headers: request.headers(),
    }
}

/// `scheme://host/path?query` of the request, as the client addressed it.
fn original_url(connection: &Connection, request: &Request<ClientBody>, host_name: &str) -> String {
    let host = (request.headers().get(header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or(host_name);
    format!("{}://{host}{}", connection.scheme, request_uri(request))
}

fn request_uri(request: &Request<ClientBody>) -> &str {
    request.uri().path_and_query().map_or("/", |p| p.as_str())
}
