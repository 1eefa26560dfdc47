//! The HTTP server: access control, routing, Braid resources, the page's
//! JSON endpoints and its assets. HTTP/1.1 and HTTP/2 (prior knowledge) on
//! one port.

// Parses what clients send: no slicing or indexing that can panic on it.
#![deny(clippy::indexing_slicing, clippy::string_slice)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::braid::{format_versions, parse_put, parse_versions};
use crate::hub::{self, Msg};
use crate::owner::{gone, Owner, Read, Refusal, Target, Write};
use crate::page;

/// Largest PUT body.
pub const MAX_BODY: usize = 64 << 20;
/// Connections served at once; more wait. Above the subscriptions, so
/// plain requests are still served when every subscription is taken.
pub const MAX_CONNECTIONS: usize = crate::hub::MAX_SUBSCRIBERS + 512;
/// Largest request head (a longer one is refused with 431).
pub const MAX_HEAD: usize = 64 << 10;
/// Time a client has to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest heartbeat period a subscriber may ask for.
const MIN_HEARTBEAT: Duration = Duration::from_secs(1);
/// The reserved first path segment of the page's own endpoints.
pub const RESERVED: &str = ".fsync";

type Out = http_body_util::combinators::BoxBody<Bytes, Infallible>;

struct Shared {
    owner: Owner,
    hub: mpsc::Sender<Msg>,
    token: String,
    /// The access cookie's name (per port: browsers share cookies between
    /// ports of one host, and several nodes may run on one machine).
    cookie: String,
}

/// Serves `listener` until the owner's queue closes.
pub(crate) async fn serve(listener: TcpListener, token: String, owner: Owner, changes: tokio::sync::watch::Receiver<u64>) {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let hub = hub::start(owner.clone(), changes);
    let shared = Arc::new(Shared { owner, hub, token, cookie: format!("fsync-token-{port}") });
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.owner.0.is_closed() {
            return;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req, peer).await) }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT).max_buf_size(MAX_HEAD);
            builder.http2().max_header_list_size(MAX_HEAD as u32);
            if let Err(e) = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await {
                tracing::debug!(%peer, "http connection: {e}");
            }
        });
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Out> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, message: &str) -> Response<Out> {
    let mut r = full(status, format!("{message}\n"));
    set(&mut r, "content-type", "text/plain; charset=utf-8");
    r
}

fn json(value: &serde_json::Value) -> Response<Out> {
    let mut r = full(StatusCode::OK, value.to_string());
    set(&mut r, "content-type", "application/json");
    r
}

/// A status this crate's HTTP library has no reason phrase for.
fn with_reason(mut r: Response<Out>, code: u16, reason: &'static str) -> Response<Out> {
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
    r
}

fn set(r: &mut Response<Out>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The answer to a refusal: its status and one line saying why.
fn refused(r: Refusal) -> Response<Out> {
    match r {
        Refusal::UnknownVersions(v) => {
            let mut out = with_reason(text(StatusCode::CONFLICT, "version unknown here"), 309, "Version Unknown Here");
            set(&mut out, "version", &format_versions(&v));
            set(&mut out, "retry-after", "1");
            out
        }
        Refusal::NotFound(m) => text(StatusCode::NOT_FOUND, &m),
        Refusal::Conflict(m) => text(StatusCode::CONFLICT, &m),
        Refusal::Forbidden(m) => text(StatusCode::FORBIDDEN, &m),
        Refusal::BadRequest(m) => text(StatusCode::BAD_REQUEST, &m),
        Refusal::TooLarge(m) => text(StatusCode::PAYLOAD_TOO_LARGE, &m),
        Refusal::Unavailable(m) => text(StatusCode::SERVICE_UNAVAILABLE, &m),
    }
}

/// Equal without telling how much of it matched.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Shared {
    /// The token from `Authorization: Bearer` or the cookie.
    fn allowed(&self, h: &HeaderMap) -> bool {
        let token = self.token.as_bytes();
        if let Some(b) = header(h, "authorization").and_then(|a| a.strip_prefix("Bearer ")) {
            return same(b.trim().as_bytes(), token);
        }
        h.get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .any(|c| c.trim().split_once('=').is_some_and(|(k, v)| k == self.cookie && same(v.as_bytes(), token)))
    }
}

/// `/?token=T`: the token as a query parameter.
fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("token="))
}

/// The path's segments, percent-decoded. Refused: `..`, `.`, empty
/// segments inside, a `/` or NUL made by decoding, bad UTF-8.
fn segments(path: &str) -> Result<(Vec<String>, bool), String> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let dir = trimmed.ends_with('/') || trimmed.is_empty();
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok((Vec::new(), true));
    }
    let mut out = Vec::new();
    for raw in trimmed.split('/') {
        let s = decode(raw).ok_or_else(|| format!("{raw:?}: bad percent-encoding or not UTF-8"))?;
        if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
            return Err(format!("{s:?}: not a name in a folder"));
        }
        out.push(s);
    }
    Ok((out, dir))
}

fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(sh: &Shared, req: Request<Incoming>, peer: SocketAddr) -> Response<Out> {
    let query = req.uri().query().map(str::to_owned);
    // Visiting `/?token=T` sets the cookie and shows the page.
    if req.uri().path() == "/" && req.method() == Method::GET {
        if let Some(t) = query_token(query.as_deref()) {
            if !same(t.as_bytes(), sh.token.as_bytes()) {
                return full(StatusCode::UNAUTHORIZED, Bytes::new());
            }
            let mut r = full(StatusCode::SEE_OTHER, Bytes::new());
            set(&mut r, "location", "/");
            set(&mut r, "set-cookie", &format!("{}={}; Path=/; HttpOnly; SameSite=Strict", sh.cookie, sh.token));
            return r;
        }
    }
    if !sh.allowed(req.headers()) {
        tracing::debug!(%peer, path = %req.uri().path(), "http request without the token");
        return full(StatusCode::UNAUTHORIZED, Bytes::new());
    }
    let (parts, dir) = match segments(req.uri().path()) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let mut parts = parts.into_iter();
    let Some(first) = parts.next() else {
        return match *req.method() {
            Method::GET | Method::HEAD => asset("index.html"),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "the page is read-only"),
        };
    };
    let rest: Vec<String> = parts.collect();
    if first == ".well-known" && req.method() == Method::POST {
        // No multiplexing (Braid's multiplexer): a plain 404 tells the
        // reference client to use one connection per subscription.
        return text(StatusCode::NOT_FOUND, "no multiplexer here");
    }
    if first == RESERVED {
        return own(sh, req, rest).await;
    }
    let target = Target { folder: first, path: rest.join("/") };
    match *req.method() {
        Method::GET | Method::HEAD => get(sh, req, target, dir).await,
        Method::PUT => put(sh, req, target).await,
        Method::OPTIONS => {
            let mut r = full(StatusCode::OK, Bytes::new());
            set(&mut r, "allow", "GET, HEAD, PUT, OPTIONS");
            r
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD, PUT or OPTIONS"),
    }
}

/// One of the page's files, served from the binary.
fn asset(name: &str) -> Response<Out> {
    match page::asset(name) {
        Some((content_type, body)) => {
            let mut r = full(StatusCode::OK, Bytes::from_static(body));
            set(&mut r, "content-type", content_type);
            set(&mut r, "cache-control", "no-cache");
            r
        }
        None => text(StatusCode::NOT_FOUND, "no such page"),
    }
}

/// `/.fsync/...`: the page's assets and JSON endpoints.
async fn own(sh: &Shared, req: Request<Incoming>, rest: Vec<String>) -> Response<Out> {
    let mut rest = rest.into_iter();
    let what = rest.next().unwrap_or_default();
    let target = |rest: std::vec::IntoIter<String>| {
        let mut r = rest;
        r.next().map(|folder| Target { folder, path: r.collect::<Vec<_>>().join("/") })
    };
    match (req.method().clone(), what.as_str()) {
        (Method::GET, "status") => match sh.owner.status().await {
            Some(s) => json(&s),
            None => refused(gone()),
        },
        (Method::GET, "log") => match target(rest) {
            Some(t) => match sh.owner.log(&t).await {
                Ok(v) => json(&v),
                Err(e) => refused(e),
            },
            None => text(StatusCode::NOT_FOUND, "/.fsync/log/FOLDER/PATH"),
        },
        (Method::POST, "restore") => {
            let version = query_param(req.uri().query(), "version");
            match (target(rest), version) {
                (Some(t), Some(v)) => match sh.owner.restore(&t, v).await {
                    Ok(said) => text(StatusCode::OK, &said),
                    Err(e) => refused(e),
                },
                _ => text(StatusCode::BAD_REQUEST, "POST /.fsync/restore/FOLDER/PATH?version=VERSION"),
            }
        }
        (Method::GET, name) => asset(name),
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "not here"),
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).and_then(|(_, v)| decode(&v.replace('+', " "))))
}

fn versions_header(h: &HeaderMap, name: &'static str) -> Result<Option<Vec<String>>, Response<Out>> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => {
            let v = v.to_str().map_err(|_| text(StatusCode::BAD_REQUEST, &format!("{name}: not ASCII")))?;
            parse_versions(name, v).map(Some).map_err(|e| text(StatusCode::BAD_REQUEST, &e.to_string()))
        }
    }
}

/// The merge types this server speaks.
fn merge_type(h: &HeaderMap) -> Result<&'static str, Response<Out>> {
    match header(h, "merge-type").map(str::trim) {
        None | Some("simpleton") => Ok("simpleton"),
        Some("aww") => Ok("aww"),
        Some(other) => Err(text(
            StatusCode::BAD_REQUEST,
            &format!("Merge-Type {other:?}: this server speaks simpleton (text) and aww (binary)"),
        )),
    }
}

fn peer_of(h: &HeaderMap) -> Option<String> {
    header(h, "peer").map(|p| p.trim().trim_matches('"').to_owned()).filter(|p| !p.is_empty())
}

async fn get(sh: &Shared, req: Request<Incoming>, target: Target, dir: bool) -> Response<Out> {
    let h = req.headers();
    let merge = match merge_type(h) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let (version, parents) = match (versions_header(h, "version"), versions_header(h, "parents")) {
        (Ok(v), Ok(p)) => (v, p),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    if h.contains_key("subscribe") {
        if version.is_some() {
            return text(StatusCode::BAD_REQUEST, "Version is not taken with Subscribe: name the version held in Parents");
        }
        return subscribe(sh, h, target, parents, merge).await;
    }
    let read = match sh.owner.read(&target, version.clone(), None).await {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let head = req.method() == Method::HEAD;
    let current = format_versions(read.version());
    let mut r = match read {
        Read::Text { text, .. } => {
            let mut r = full(StatusCode::OK, text);
            set(&mut r, "content-type", "text/plain; charset=utf-8");
            set(&mut r, "merge-type", merge);
            set(&mut r, "accept-subscribe", "true");
            r
        }
        Read::Binary { bytes, .. } => binary(h, bytes),
        Read::Link { target: to, .. } => json(&serde_json::json!({ "kind": "symlink", "target": to })),
        Read::Dir { entries, .. } => {
            if !dir && !target.path.is_empty() {
                // A directory's listing lives at its name with a slash, so
                // relative links in it resolve inside it.
                let mut r = full(StatusCode::MOVED_PERMANENTLY, Bytes::new());
                set(&mut r, "location", &format!("{}/", req.uri().path()));
                return r;
            }
            json(&serde_json::json!({ "folder": target.folder, "path": target.path, "entries": entries }))
        }
        Read::Unchanged => return refused(Refusal::NotFound("nothing there".into())),
    };
    if version.is_none() {
        set(&mut r, "current-version", &current);
    }
    set(&mut r, "version", &current);
    if head {
        *r.body_mut() = Full::new(Bytes::new()).boxed();
    }
    r
}

/// Binary content, with `Range: bytes=A-B` (one range) answered 206.
fn binary(h: &HeaderMap, bytes: Vec<u8>) -> Response<Out> {
    let total = bytes.len();
    let range = header(h, "range").and_then(|r| r.trim().strip_prefix("bytes=")).filter(|r| !r.contains(','));
    let mut r = match range.map(|r| byte_range(r, total)) {
        None => full(StatusCode::OK, bytes),
        Some(None) => {
            let mut r = full(StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new());
            set(&mut r, "content-range", &format!("bytes */{total}"));
            return r;
        }
        Some(Some((a, b))) => {
            let part = bytes.get(a..=b).map(<[u8]>::to_vec).unwrap_or_default();
            let mut r = full(StatusCode::PARTIAL_CONTENT, part);
            set(&mut r, "content-range", &format!("bytes {a}-{b}/{total}"));
            r
        }
    };
    set(&mut r, "content-type", "application/octet-stream");
    set(&mut r, "accept-ranges", "bytes");
    set(&mut r, "merge-type", "aww");
    r
}

/// `A-B`, `A-` or `-N` within `total` bytes, inclusive.
fn byte_range(spec: &str, total: usize) -> Option<(usize, usize)> {
    let (a, b) = spec.split_once('-')?;
    let last = total.checked_sub(1)?;
    let (a, b) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: usize = n.parse().ok().filter(|&n| n > 0)?;
            (total.saturating_sub(n), last)
        }
        (a, "") => (a.parse().ok()?, last),
        (a, b) => (a.parse().ok()?, b.parse::<usize>().ok()?.min(last)),
    };
    (a <= b && a <= last).then_some((a, b))
}

/// A body that streams a subscription's updates, with a bare CRLF every
/// heartbeat period while nothing else goes out.
struct Stream {
    updates: mpsc::Receiver<Bytes>,
    beat: Option<tokio::time::Interval>,
}

impl Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.updates.poll_recv(cx) {
            Poll::Ready(Some(b)) => {
                if let Some(beat) = self.beat.as_mut() {
                    beat.reset();
                }
                return Poll::Ready(Some(Ok(Frame::data(b))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match self.beat.as_mut().map(|b| b.poll_tick(cx)) {
            Some(Poll::Ready(_)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"\r\n"))))),
            _ => Poll::Pending,
        }
    }
}

async fn subscribe(sh: &Shared, h: &HeaderMap, target: Target, parents: Option<Vec<String>>, merge: &str) -> Response<Out> {
    let heartbeats = header(h, "heartbeats").map(str::to_owned);
    let period = heartbeats
        .as_deref()
        .and_then(|v| v.trim().trim_end_matches('s').parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| Duration::from_secs_f64(s.min(3600.0)).max(MIN_HEARTBEAT));
    let (reply, answer) = oneshot::channel();
    let msg = Msg::Subscribe { target, peer: peer_of(h), parents, reply };
    if sh.hub.send(msg).await.is_err() {
        return refused(gone());
    }
    let sub = match answer.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return refused(e),
        Err(_) => return refused(gone()),
    };
    let beat = period.map(|p| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + p, p);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut r = with_reason(Response::new(Stream { updates: sub.updates, beat }.boxed()), 209, "Multiresponse");
    set(&mut r, "subscribe", "true");
    set(&mut r, "content-type", "application/http-history");
    set(&mut r, "cache-control", "no-cache, no-transform, no-store");
    set(&mut r, "x-accel-buffering", "no");
    set(&mut r, "merge-type", merge);
    set(&mut r, "current-version", &format_versions(&sub.current));
    if let Some(hb) = heartbeats {
        set(&mut r, "heartbeats", &hb);
    }
    r
}

async fn put(sh: &Shared, req: Request<Incoming>, target: Target) -> Response<Out> {
    if target.path.is_empty() {
        return text(StatusCode::CONFLICT, "the folder itself: PUT a file inside it");
    }
    let (head, body) = req.into_parts();
    let h = &head.headers;
    if let Err(r) = merge_type(h) {
        return r;
    }
    let version = match versions_header(h, "version") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let parents = match versions_header(h, "parents") {
        Ok(p) => p,
        Err(r) => return r,
    };
    let version = match version.as_deref() {
        None | Some([]) => None,
        Some([one]) => Some(one.clone()),
        Some(_) => return text(StatusCode::BAD_REQUEST, "Version: one version per edit"),
    };
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return text(StatusCode::PAYLOAD_TOO_LARGE, &format!("a body of at most {} MiB", MAX_BODY >> 20))
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
    };
    let body = match parse_put(header(h, "content-range"), header(h, "patches"), bytes) {
        Ok(b) => b,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let write = Write { version, parents, body };
    let (reply, answer) = oneshot::channel();
    if sh.hub.send(Msg::Put { target, peer: peer_of(h), write, reply }).await.is_err() {
        return refused(gone());
    }
    match answer.await {
        Ok(Ok(w)) => {
            let mut r = full(StatusCode::OK, Bytes::new());
            set(&mut r, "version", &format_versions(&w.version));
            set(&mut r, "current-version", &format_versions(&w.version));
            r
        }
        Ok(Err(e)) => refused(e),
        Err(_) => refused(gone()),
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_decoded_and_traversal_refused() {
        assert_eq!(segments("/docs/a%20b/c.txt").unwrap(), (vec!["docs".into(), "a b".into(), "c.txt".into()], false));
        assert_eq!(segments("/docs/sub/").unwrap(), (vec!["docs".into(), "sub".into()], true));
        assert_eq!(segments("/").unwrap(), (vec![], true));
        assert_eq!(segments("/d/%C3%A9").unwrap().0, vec!["d".to_owned(), "é".to_owned()]);
        for bad in [
            "/docs/../x",
            "/docs/%2e%2e/x",
            "/docs/a%2Fb",
            "/docs//x",
            "/docs/%00",
            "/docs/%zz",
            "/docs/%ff",
            "/docs/./x",
            "/docs/%",
        ] {
            assert!(segments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("0-9", 100), Some((0, 9)));
        assert_eq!(byte_range("90-", 100), Some((90, 99)));
        assert_eq!(byte_range("-10", 100), Some((90, 99)));
        assert_eq!(byte_range("50-500", 100), Some((50, 99)));
        assert_eq!(byte_range("100-", 100), None);
        assert_eq!(byte_range("5-2", 100), None);
        assert_eq!(byte_range("0-0", 0), None);
        assert_eq!(byte_range("x-1", 100), None);
        assert_eq!(byte_range("-0", 100), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert_eq!(query_token(Some("a=1&token=xyz")), Some("xyz"));
        assert_eq!(query_param(Some("version=ab%3A1"), "version").as_deref(), Some("ab:1"));
    }
}
