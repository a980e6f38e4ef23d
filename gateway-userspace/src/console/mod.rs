//! The web console on the admin listener, as KubeSphere's Routes pages show routes: the route
//! list, a route's detail page, the gateway page, and the create and edit dialogs. Pages are
//! rendered on the server from the published table and the objects it was made from; plain
//! JavaScript only where a part is live (request rate, errors and p99 from `/metrics`).
//!
//! Changes are checked by translating them with every other object (what `gateway check`
//! runs), shown as a dry run, and applied to the source the gateway reads. Writes need the
//! console token (`--console-token-file`): as a bearer token, or as the cookie the login page
//! sets, which then also needs the page's CSRF field and a same-origin `Origin`.

mod access;
mod edit;
mod pages;
mod token;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::networking::v1::Ingress;

pub use token::Token;
pub use write::Writer;

use crate::explain::Place;
use crate::publish::RouteTable;
use crate::steering::Steering;
use crate::store::{Sourced, Store, namespace_of};
use crate::translate::TranslateOptions;
use edit::RouteForm;
use token::Presented;

/// Form bodies larger than this are refused (a manifest is a few kilobytes).
const MAX_FORM: usize = 1 << 20;

/// What the console reads and where it writes.
pub struct Console {
    pub table: Arc<RouteTable>,
    pub steering: Option<Arc<Steering>>,
    pub place: Place,
    pub options: TranslateOptions,
    pub writer: Writer,
    /// Without one the console is read-only.
    pub token: Option<Token>,
}

/// Whether `path` is the console's (the rest of the admin listener is its JSON endpoints).
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// A request's form fields.
type Form = Vec<(String, String)>;

impl Console {
    /// Answers one console request; a form must arrive within `body_timeout`.
    pub async fn answer(
        &self,
        request: Request<Incoming>,
        body_timeout: Duration,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path().to_string();
        let query: Form = form(parts.uri.query().unwrap_or_default().as_bytes());
        let segments: Vec<&str> = path
            .trim_start_matches("/console")
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let presented = self
            .token
            .as_ref()
            .map_or(Presented::Nothing, |t| t.presented(&parts.headers));
        let page = pages::Context {
            console: self,
            signed_in: presented != Presented::Nothing,
        };
        if parts.method == Method::GET || parts.method == Method::HEAD {
            return match segments.as_slice() {
                [] => page.routes(&query),
                ["gateway"] => page.gateway(),
                ["new"] => page.form(&RouteForm::default(), None, None),
                ["explain"] => page.explain(&query),
                ["login"] => page.login(None),
                ["routes", namespace, name] => page.route(namespace, name, &query),
                ["routes", namespace, name, "edit"] => page.edit(namespace, name),
                ["routes", namespace, name, "yaml"] => page.yaml(namespace, name, None, None),
                _ => pages::message(StatusCode::NOT_FOUND, "Not found", "no such page"),
            };
        }
        if parts.method != Method::POST {
            return pages::message(
                StatusCode::METHOD_NOT_ALLOWED,
                "Refused",
                "only GET and POST",
            );
        }
        let body = match tokio::time::timeout(body_timeout, Limited::new(body, MAX_FORM).collect())
            .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(_)) => {
                return pages::message(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Refused",
                    "the form is larger than 1 MiB",
                );
            }
            Err(_) => {
                return pages::message(
                    StatusCode::REQUEST_TIMEOUT,
                    "Refused",
                    "the form did not arrive in time",
                );
            }
        };
        let fields = form(&body);
        if segments.as_slice() == ["login"] {
            return self.login(&fields, &page);
        }
        // Everything else posted changes, or may show the way to a change: it needs the token.
        if let Err((status, why)) = self.authorize(&parts, presented, &fields) {
            return pages::message(status, "Refused", why);
        }
        match segments.as_slice() {
            ["dry-run"] => page.dry_run(&fields),
            ["apply"] => self.apply(&fields, &page).await,
            ["routes", namespace, name, "delete"] => self.delete(namespace, name).await,
            _ => pages::message(StatusCode::NOT_FOUND, "Not found", "no such action"),
        }
    }

    /// Refuses a write that lacks the token, or (with the cookie) the CSRF field or a
    /// same-origin `Origin`.
    fn authorize(
        &self,
        parts: &hyper::http::request::Parts,
        presented: Presented,
        fields: &Form,
    ) -> Result<(), (StatusCode, &'static str)> {
        let refuse = |status, why| Err((status, why));
        let Some(token) = &self.token else {
            return refuse(
                StatusCode::FORBIDDEN,
                "the console is read-only: start the gateway with --console-token-file",
            );
        };
        if let Some(why) = self.writer.read_only() {
            return refuse(StatusCode::FORBIDDEN, why);
        }
        match presented {
            Presented::Bearer => Ok(()),
            Presented::Cookie => {
                let csrf = field(fields, "csrf");
                let origin = parts.headers.get(header::ORIGIN).map(HeaderValue::as_bytes);
                let host = parts.headers.get(header::HOST).map(HeaderValue::as_bytes);
                let same_origin = match (origin, host) {
                    (None, _) => true,
                    (Some(origin), Some(host)) => {
                        origin
                            .strip_prefix(b"http://")
                            .or(origin.strip_prefix(b"https://"))
                            == Some(host)
                    }
                    (Some(_), None) => false,
                };
                if token.csrf_matches(csrf) && same_origin {
                    Ok(())
                } else {
                    refuse(
                        StatusCode::FORBIDDEN,
                        "the form did not come from this console (CSRF check failed): reload \
                         the page",
                    )
                }
            }
            Presented::Nothing => refuse(
                StatusCode::UNAUTHORIZED,
                "changes need the console token: sign in first",
            ),
        }
    }

    fn login(&self, fields: &Form, page: &pages::Context<'_>) -> Response<Full<Bytes>> {
        let Some(token) = &self.token else {
            return page.login(Some(
                "the console is read-only: there is no token to sign in with",
            ));
        };
        if !token.matches(field(fields, "token")) {
            return page.login(Some("that is not the console token"));
        }
        let mut response = redirect("/");
        if let Ok(cookie) = HeaderValue::from_str(&token.cookie()) {
            response.headers_mut().insert(header::SET_COOKIE, cookie);
        }
        response
    }

    /// Applies the manifest of a dry run that allowed it, checking it again first.
    async fn apply(&self, fields: &Form, page: &pages::Context<'_>) -> Response<Full<Bytes>> {
        let ingress = match edit::parse_yaml(field(fields, "yaml")) {
            Ok(ingress) => ingress,
            Err(error) => return pages::message(StatusCode::BAD_REQUEST, "Not applied", &error),
        };
        let store = self.store();
        let source = self.source_of(&store, &ingress);
        let dry_run = page.check(&store, &ingress, source.clone());
        if !dry_run.applicable() {
            return page.dry_run_of(&ingress, field(fields, "original"), &dry_run);
        }
        let yaml = edit::to_yaml(&ingress);
        match self.writer.put(&ingress, &yaml, source.as_deref()).await {
            Ok(done) => {
                let namespace = namespace_of(&ingress.metadata);
                let name = ingress.metadata.name.as_deref().unwrap_or_default();
                tracing::info!(ingress = %format!("{namespace}/{name}"), "console: {done}");
                self.settled(|store| {
                    find(store, namespace, name).is_some_and(|i| {
                        i.object.spec == ingress.spec
                            && i.object.metadata.annotations == ingress.metadata.annotations
                    })
                })
                .await;
                redirect(&format!("/console/routes/{namespace}/{name}?applied=1"))
            }
            Err(error) => pages::message(StatusCode::BAD_GATEWAY, "Not applied", &error),
        }
    }

    async fn delete(&self, namespace: &str, name: &str) -> Response<Full<Bytes>> {
        let store = self.store();
        let Some(existing) = find(&store, namespace, name) else {
            return pages::message(
                StatusCode::NOT_FOUND,
                "Not deleted",
                &format!("there is no Ingress {namespace}/{name}"),
            );
        };
        match self
            .writer
            .delete(namespace, name, existing.source.as_deref())
            .await
        {
            Ok(done) => {
                tracing::info!(ingress = %format!("{namespace}/{name}"), "console: {done}");
                self.settled(|store| find(store, namespace, name).is_none())
                    .await;
                redirect("/?deleted=1")
            }
            Err(error) => pages::message(StatusCode::BAD_GATEWAY, "Not deleted", &error),
        }
    }

    /// Waits (a few seconds at most) until the table served has objects that `done` accepts:
    /// the source applies a change asynchronously, and the page shown next should show it.
    async fn settled(&self, done: impl Fn(&Store) -> bool) {
        let mut published = self.table.subscribe();
        let wait = async {
            while !done(&self.store()) {
                if published.changed().await.is_err() {
                    return;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
    }

    /// The objects of the table served now.
    fn store(&self) -> Arc<Store> {
        self.table.sources().unwrap_or_default()
    }

    /// The file an Ingress of this name was read from, if it was.
    fn source_of(&self, store: &Store, ingress: &Ingress) -> Option<String> {
        let namespace = namespace_of(&ingress.metadata);
        let name = ingress.metadata.name.as_deref().unwrap_or_default();
        find(store, namespace, name).and_then(|i| i.source.clone())
    }
}

/// The Ingress `namespace/name` of `store`.
fn find<'a>(store: &'a Store, namespace: &str, name: &str) -> Option<&'a Sourced<Ingress>> {
    store.ingresses.iter().find(|i| {
        namespace_of(&i.object.metadata) == namespace
            && i.object.metadata.name.as_deref() == Some(name)
    })
}

fn form(bytes: &[u8]) -> Form {
    form_urlencoded::parse(bytes).into_owned().collect()
}

/// The first value of `name` ("" when absent).
fn field<'a>(fields: &'a Form, name: &str) -> &'a str {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map_or("", |(_, value)| value.as_str())
}

/// A 303 to `location`: after a POST, the browser GETs the page.
fn redirect(location: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(location) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}
