//! The HTTP port of a Cairn process: `GET /metrics`, `GET /healthz`, and
//! the pages a role adds beside them (meta's dashboard), behind one check
//! of who is asking.
//!
//! Everything but `/healthz` (for probes of a service manager or
//! Kubernetes; it says only "ok") needs credentials: the cluster's client
//! key as a bearer token (`Authorization: Bearer <key>`, where the key is
//! the client key file's text or its hex; Prometheus's
//! `authorization.credentials_file` can point at the file), or a session
//! cookie that a browser gets from the login form or from a one-time login
//! link (`/?token=…`, which `cairn server` prints, as Jupyter does).
//!
//! One small HTTP/1 server per process, on hyper (already Cairn's S3
//! server).

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// A response with its whole body.
pub type Reply = Response<Full<Bytes>>;
/// A page being made.
pub type PageFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// What a role serves beside its metrics: every authenticated `GET`
/// outside `/metrics`, `/healthz` and `/login`, given its path and its raw
/// (still percent-encoded) query.
pub trait Pages: Send + Sync + 'static {
    fn page(&self, path: &str, query: &str) -> PageFuture;
}

/// Content type of what the encoder writes: the OpenMetrics text format,
/// which Prometheus scrapes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const SESSION_COOKIE: &str = "cairn_session";
/// How long a browser session lasts.
const SESSION_TIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most (the oldest goes first).
const MAX_SESSIONS: usize = 1024;
/// The largest login form read.
const MAX_FORM: usize = 16 << 10;

/// Who may read the port: a check of presented keys, browser sessions,
/// and at most one unused login token.
pub struct Access {
    check: Box<dyn Fn(&str) -> bool + Send + Sync>,
    login: Mutex<Option<String>>,
    /// Live sessions: until when, and the order they were made in.
    sessions: Mutex<HashMap<String, (Instant, u64)>>,
    made: std::sync::atomic::AtomicU64,
}

impl Access {
    /// `check` says whether a presented key (a bearer token or the login
    /// form's, trimmed) is one this process accepts.
    pub fn new(check: impl Fn(&str) -> bool + Send + Sync + 'static) -> Access {
        Access {
            check: Box::new(check),
            login: Mutex::new(None),
            sessions: Mutex::new(HashMap::new()),
            made: Default::default(),
        }
    }

    /// A fresh one-time login token, replacing any unused one: the first
    /// request that brings it as `?token=` gets a browser session, and
    /// the token is spent.
    pub fn one_time_token(&self) -> String {
        let t = random_hex();
        *self.login.lock().unwrap() = Some(t.clone());
        t
    }

    fn spend_token(&self, token: &str) -> bool {
        let mut login = self.login.lock().unwrap();
        match login.as_deref() {
            Some(t) if same(t.as_bytes(), token.as_bytes()) => {
                *login = None;
                true
            }
            _ => false,
        }
    }

    fn new_session(&self) -> String {
        let id = random_hex();
        let now = Instant::now();
        let mut s = self.sessions.lock().unwrap();
        s.retain(|_, (until, _)| *until > now);
        if s.len() >= MAX_SESSIONS {
            if let Some(oldest) = s.iter().min_by_key(|(_, u)| u.1).map(|(k, _)| k.clone()) {
                s.remove(&oldest);
            }
        }
        let n = self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        s.insert(id.clone(), (now + SESSION_TIME, n));
        id
    }

    fn session_valid(&self, id: &str) -> bool {
        let s = self.sessions.lock().unwrap();
        s.get(id).is_some_and(|(until, _)| *until > Instant::now())
    }

    /// Whether the request brings a key this process accepts or a live
    /// session.
    fn allows<B>(&self, req: &Request<B>) -> bool {
        if let Some(key) = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            return (self.check)(key.trim());
        }
        cookie(req, SESSION_COOKIE).is_some_and(|id| self.session_valid(&id))
    }
}

/// Equal bytes, compared in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).expect("OS random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn cookie<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A small response with a body and content type.
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("cache-control", HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:"),
    );
    r
}

/// See-other to `to`, starting a browser session.
fn into_session(access: &Access, to: &str) -> Reply {
    let mut r = reply(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    let to = if to.starts_with('/') && !to.starts_with("//") {
        to
    } else {
        "/"
    };
    r.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/")),
    );
    let c = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        access.new_session(),
        SESSION_TIME.as_secs()
    );
    r.headers_mut()
        .insert(SET_COOKIE, HeaderValue::from_str(&c).expect("ascii cookie"));
    r
}

fn login_page(status: StatusCode, note: &str) -> Reply {
    let body = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Cairn: log in</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\">\
         <h1>Cairn</h1><p>{note}</p>\
         <form method=post action=/login><label>Client key (the text of client.key, or its hex)<br>\
         <input name=key type=password autocomplete=off size=70 autofocus></label>\
         <p><button>Log in</button></p></form></body></html>"
    );
    reply(status, "text/html; charset=utf-8", body)
}

fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn answer(
    access: Arc<Access>,
    pages: Option<Arc<dyn Pages>>,
    req: Request<hyper::body::Incoming>,
) -> Reply {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let text = "text/plain; charset=utf-8";
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => return reply(StatusCode::OK, text, "ok\n"),
        (&Method::POST, "/login") => {
            let body = Limited::new(req.into_body(), MAX_FORM).collect().await;
            let Ok(body) = body else {
                return reply(StatusCode::PAYLOAD_TOO_LARGE, text, "form too large\n");
            };
            let key = query_value(std::str::from_utf8(&body.to_bytes()).unwrap_or(""), "key")
                .unwrap_or_default();
            return match (access.check)(key.trim()) {
                true => into_session(&access, "/"),
                false => login_page(StatusCode::UNAUTHORIZED, "That key is not this cluster's."),
            };
        }
        (&Method::GET, _) => {}
        _ => return reply(StatusCode::METHOD_NOT_ALLOWED, text, "read-only\n"),
    }
    if let Some(token) = query_value(&query, "token") {
        return match access.spend_token(&token) {
            true => into_session(&access, &path),
            false => login_page(
                StatusCode::UNAUTHORIZED,
                "This login link was used already or is not this server's: log in with the client key.",
            ),
        };
    }
    if path == "/login" {
        return login_page(StatusCode::OK, "Log in to see the cluster.");
    }
    if !access.allows(&req) {
        return match (path.as_str(), &pages) {
            ("/", Some(_)) => login_page(StatusCode::UNAUTHORIZED, "Log in to see the cluster."),
            _ => {
                let mut r = reply(
                    StatusCode::UNAUTHORIZED,
                    text,
                    "credentials needed: Authorization: Bearer <client key>\n",
                );
                r.headers_mut().insert(
                    "www-authenticate",
                    HeaderValue::from_static("Bearer realm=\"cairn\""),
                );
                r
            }
        };
    }
    match (path.as_str(), pages) {
        ("/metrics", _) => reply(StatusCode::OK, OPENMETRICS, crate::global().render()),
        (_, Some(p)) => p.page(&path, &query).await,
        (_, None) => reply(StatusCode::NOT_FOUND, text, "only /metrics is here\n"),
    }
}

/// Serve `listener` until the task is dropped or aborted: `/metrics` of
/// [`crate::global`], `/healthz`, the login, and `pages` if any.
pub async fn serve(listener: TcpListener, access: Arc<Access>, pages: Option<Arc<dyn Pages>>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("HTTP listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (access, pages) = (access.clone(), pages.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (access, pages) = (access.clone(), pages.clone());
                async move { Ok::<_, std::convert::Infallible>(answer(access, pages, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("HTTP connection: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(uri: &str, headers: &[(&'static str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn keys_sessions_and_one_time_tokens() {
        let a = Access::new(|k| k == "right");
        assert!(!a.allows(&get("/metrics", &[])));
        assert!(a.allows(&get("/metrics", &[("authorization", "Bearer right")])));
        assert!(!a.allows(&get("/metrics", &[("authorization", "Bearer wrong")])));
        assert!(!a.allows(&get("/", &[("cookie", "cairn_session=made-up")])));
        let s = a.new_session();
        let c = format!("other=1; cairn_session={s}");
        assert!(a.allows(&get("/", &[("cookie", &c)])));

        let t = a.one_time_token();
        assert!(!a.spend_token("not-it"));
        assert!(a.spend_token(&t));
        assert!(!a.spend_token(&t), "a login token works once");
    }

    #[test]
    fn sessions_are_bounded() {
        let a = Access::new(|_| false);
        let first = a.new_session();
        for _ in 0..MAX_SESSIONS {
            a.new_session();
        }
        assert_eq!(a.sessions.lock().unwrap().len(), MAX_SESSIONS);
        assert!(!a.session_valid(&first), "the oldest session went first");
    }
}
