//! The admin listener: liveness, readiness, the routes report, metrics, `/explain` and the
//! console.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::console::{self, Console};
use crate::explain::{self, Explanation, Place, Question};
use crate::lifecycle::drain::{self, Drain, DrainState};
use crate::observe::Metrics;
use crate::publish::RouteTable;
use crate::status;
use crate::steering::Steering;

/// What the admin endpoints read.
pub struct Admin {
    /// The kernel fast path, when the gateway has VIPs.
    pub steering: Option<Arc<Steering>>,
    pub table: Arc<RouteTable>,
    pub metrics: Arc<Metrics>,
    pub drain: Arc<Drain>,
    /// Where the gateway serves (the URLs in the report, `/explain`).
    pub place: Place,
    /// The web console, unless `--console off`.
    pub console: Option<Arc<Console>>,
    /// The admin listener has clients too: one slower than this to send a request head is
    /// dropped, ...
    pub header_timeout: Duration,
    /// ... and a console form must arrive within this.
    pub body_timeout: Duration,
}

impl Admin {
    /// Serves the admin endpoints on `listener` until the drain stops accepting.
    pub async fn serve(self: Arc<Self>, listener: Arc<TcpListener>) {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        let server = Arc::new(builder);
        let stop = drain::not_accepting(self.drain.watch());
        tokio::pin!(stop);
        while let Some((stream, _)) = drain::next_connection(&listener, &mut stop).await {
            let admin = self.clone();
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let admin = admin.clone();
                    async move {
                        let response = match &admin.console {
                            Some(console) if console::is_console_path(request.uri().path()) => {
                                console.answer(request, admin.body_timeout).await
                            }
                            _ => admin.answer(&request),
                        };
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = server.serve_connection(TokioIo::new(stream), service).await;
            });
        }
    }

    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
        }
        match request.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" if self.drain.state() != DrainState::Serving => {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
            }
            "/readyz" if !self.table.is_ready() => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no route table yet\n",
            ),
            "/readyz"
                if self
                    .steering
                    .as_ref()
                    .is_some_and(|s| s.synced_generation() == 0) =>
            {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: the listeners of the first route table are not in place yet\n",
                )
            }
            "/readyz" => text(StatusCode::OK, "ready\n"),
            "/bpf/stats" => match self.steering.as_ref().and_then(|s| s.stats()) {
                Some(Ok(report)) => json(&report),
                Some(Err(e)) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}\n")),
                None => text(StatusCode::NOT_FOUND, "the kernel fast path is off\n"),
            },
            "/metrics" => {
                let fast_path = self.steering.as_ref().and_then(|s| s.stats());
                let fast_path = match fast_path {
                    Some(Ok(report)) => Some(report),
                    Some(Err(error)) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "reading the XDP counters failed"
                        );
                        None
                    }
                    None => None,
                };
                match self.metrics.encode(fast_path) {
                    Ok(body) => {
                        let mut response = text(StatusCode::OK, &body);
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        response
                    }
                    Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
                }
            }
            "/routes" => {
                let snapshot = self.table.current();
                json(&status::report(
                    &snapshot,
                    self.table.generation(),
                    self.place.listeners,
                ))
            }
            "/explain" => match self.explain(request.uri().query().unwrap_or_default()) {
                Ok(explanation) => json(&explanation),
                Err(error) => text(StatusCode::BAD_REQUEST, &format!("{error}\n")),
            },
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /healthz, /readyz, /routes, /metrics, /bpf/stats, \
                 /explain?url=...\n",
            ),
        }
    }
}

impl Admin {
    /// `/explain?url=URL[&method=M][&header=K:V]...[&from=IP]`: the explanation of one request
    /// against the table served now.
    fn explain(&self, query: &str) -> Result<Explanation, String> {
        let (mut url, mut method, mut headers, mut from) = (None, None, Vec::new(), None);
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*key {
                "url" => url = Some(value.into_owned()),
                "method" => method = Some(value.into_owned()),
                "header" => headers.push(value.into_owned()),
                "from" if !value.is_empty() => from = Some(value.into_owned()),
                "from" => {}
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        let url = url.ok_or("the url parameter is required: /explain?url=http://host/path")?;
        let method = method.unwrap_or_else(|| "GET".into());
        let question = Question::new(&url, &method, &headers, from.as_deref())?;
        Ok(explain::explain(
            &self.table.current(),
            &self.place,
            &question,
        ))
    }
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
}
