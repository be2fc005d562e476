//! Files on hosts: `GET /logs` streams the last matching lines of a file on this node, on
//! another member (the request is forwarded and its body streamed through) or on every member
//! (`hostname=*`, lines merged and prefixed with the host); `GET /logs/files` lists what a
//! node serves.
//!
//! Invariants:
//! - Files are read only by [`crate::files`] on the blocking pool; handlers only move bytes
//!   through bounded channels, so a slow disk or a slow client stalls nothing else, and a full
//!   channel pauses the scan (or the upstream read) instead of buffering.
//! - Bad parameters are JSON errors before any line is sent; a failure after that ends the
//!   stream with one final line `logmesh-error: <message>`.
//! - A forwarded request carries [`FORWARDED_HEADER`] and is never forwarded again.

use super::AppState;
use super::error::ApiError;
use super::server::Shutdown;
use crate::cluster::Member;
use crate::files::scan::{Matcher, ScanOptions};
use crate::files::{self, ERROR_LINE_PREFIX, FOLLOW_POLL, FilesError, Order, Sink, TailRequest};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The largest `n`.
pub const MAX_N: usize = 100_000;
/// `n` when the request gives none.
pub const DEFAULT_N: usize = 10;
/// The longest `keyword` or `regex`, in bytes.
pub const MAX_PATTERN_BYTES: usize = 4096;
/// Marks a request one node forwarded to another.
pub const FORWARDED_HEADER: &str = "x-logmesh-forwarded";
/// Batches of output in flight between a producer and the response body.
const CHANNEL_BATCHES: usize = 8;

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsParams {
    /// The member whose file it is (default: this node; `*`: every member).
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    /// Relative to a log root, or `root-name/relative`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(required = true, min_length = 1, max_length = 4096)]
    filename: Option<String>,
    /// Lines holding it (default: every line).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(max_length = 4096)]
    keyword: Option<String>,
    /// 1 to 100000 (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    n: Option<String>,
    /// Lines matching it (the `regex` crate's syntax), instead of `keyword`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(max_length = 4096)]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<crate::http::openapi::Flag>, inline)]
    ignore_case: Option<String>,
    /// desc (newest first, default) or asc.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<crate::http::openapi::Order>, inline)]
    order: Option<String>,
    /// true: keep streaming new lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<crate::http::openapi::Flag>, inline)]
    follow: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The member whose files to list (default: this node; `*`: every member).
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
}

/// What the parameters ask for, checked.
struct Checked {
    filename: String,
    matcher: Matcher,
    n: usize,
    order: Order,
    follow: bool,
}

fn check(params: &LogsParams) -> Result<Checked, ApiError> {
    let filename = params
        .filename
        .clone()
        .filter(|f| !f.is_empty())
        .ok_or_else(|| ApiError::bad_request("`filename` is required"))?;
    let n = match params.n.as_deref() {
        None => DEFAULT_N,
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_N).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "`n` must be a whole number from 1 to {MAX_N}, not `{value}`"
                ))
            })?,
    };
    let ignore_case = flag(params.ignore_case.as_deref(), "ignore_case")?;
    let follow = flag(params.follow.as_deref(), "follow")?;
    let order = match params.order.as_deref() {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`order` must be `asc` or `desc`, not `{other}`"
            )));
        }
    };
    for (name, value) in [("keyword", &params.keyword), ("regex", &params.regex)] {
        if let Some(value) = value
            && value.len() > MAX_PATTERN_BYTES
        {
            return Err(ApiError::bad_request(format!(
                "`{name}` is {} bytes; at most {MAX_PATTERN_BYTES} are allowed",
                value.len()
            )));
        }
    }
    let matcher = match (&params.keyword, &params.regex) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "give either `keyword` or `regex`, not both",
            ));
        }
        (_, Some(pattern)) => Matcher::regex(pattern, ignore_case).map_err(|e| {
            ApiError::bad_request(format!(
                "`regex` is not a valid regular expression: {}",
                e.to_string().replace('\n', " ")
            ))
        })?,
        (keyword, None) => Matcher::keyword(keyword.as_deref().unwrap_or(""), ignore_case),
    };
    Ok(Checked {
        filename,
        matcher,
        n,
        order,
        follow,
    })
}

fn flag(value: Option<&str>, name: &str) -> Result<bool, ApiError> {
    match value {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "`{name}` must be `true` or `false`, not `{other}`"
        ))),
    }
}

/// Where a request is served.
enum Target {
    Here,
    Member(Member),
    Everyone(Vec<Member>),
}

async fn target(
    state: &AppState,
    hostname: Option<&str>,
    headers: &HeaderMap,
) -> Result<Target, ApiError> {
    let me = &state.inner.node_name;
    let hostname = match hostname {
        None | Some("") => return Ok(Target::Here),
        Some(name) if name == me => return Ok(Target::Here),
        Some(name) => name,
    };
    if headers.contains_key(FORWARDED_HEADER) {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!("a forwarded request for `{hostname}` reached {me}: the membership is stale"),
        ));
    }
    let members = state.inner.membership.members().await?;
    if hostname == "*" {
        return Ok(Target::Everyone(members));
    }
    match members.iter().find(|m| m.name == hostname) {
        Some(member) => Ok(Target::Member(member.clone())),
        None => {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_host",
                format!(
                    "no cluster member is named `{hostname}`; members: {}",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// The last `n` matching lines of a file on any member, streamed; an error after the first
/// line ends the stream with a `logmesh-error: ` line.
#[utoipa::path(get, path = "/logs", tag = "files", params(LogsParams),
    responses((status = 200, description = "Lines", content_type = "text/plain", body = String)))]
pub async fn logs(
    State(state): State<AppState>,
    params: Result<Query<LogsParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let checked = check(&params)?;
    let shutdown = state.inner.shutdown.clone();
    match target(&state, params.hostname.as_deref(), &headers).await? {
        Target::Here => serve_here(&state, checked).await,
        Target::Member(member) => {
            let upstream = forward(&state, &member, "/logs", &params, &headers).await?;
            if !upstream.status().is_success() {
                return Ok(pass_error(&state, upstream).await);
            }
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            tokio::spawn(relay(member.name, upstream, None, shutdown, tx));
            Ok(text_stream(rx))
        }
        Target::Everyone(members) => {
            // Every member at once, each within the peer timeout: a slow or dead member
            // delays nothing and is named in the stream's final line.
            let requests = members.iter().map(|member| {
                let mut params = params.clone();
                params.hostname = Some(member.name.clone());
                let state = &state;
                let headers = &headers;
                async move { forward(state, member, "/logs", &params, headers).await }
            });
            let answers = futures_util::future::join_all(requests).await;
            let mut upstreams = Vec::new();
            let mut failures = Vec::new();
            for (member, answer) in members.into_iter().zip(answers) {
                match answer {
                    Ok(upstream) if upstream.status().is_success() => {
                        upstreams.push((member.name, upstream));
                    }
                    // A bad request is bad on every member: say so as the member said it.
                    Ok(upstream) if upstream.status() == reqwest::StatusCode::BAD_REQUEST => {
                        return Ok(pass_error(&state, upstream).await);
                    }
                    Ok(upstream) => {
                        let status = upstream.status();
                        let body = pass_error(&state, upstream).await;
                        let text = axum::body::to_bytes(body.into_body(), 64 * 1024)
                            .await
                            .unwrap_or_default();
                        failures.push(format!(
                            "{}: answered {status}: {}",
                            member.name,
                            String::from_utf8_lossy(&text)
                        ));
                    }
                    Err(error) => failures.push(error.message),
                }
            }
            if upstreams.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "bad_gateway",
                    format!("no member could serve the file: {}", failures.join("; ")),
                ));
            }
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            let mut relays = Vec::new();
            for (name, upstream) in upstreams {
                let prefix = format!("{name}: ");
                relays.push(tokio::spawn(relay(
                    name,
                    upstream,
                    Some(prefix),
                    shutdown.clone(),
                    tx.clone(),
                )));
            }
            tokio::spawn(async move {
                for relay in relays {
                    let _ = relay.await;
                }
                if !failures.is_empty() {
                    let message = format!("some members were left out: {}", failures.join("; "));
                    let _ = tx.send(Chunk::Last(error_line(&message))).await;
                }
            });
            Ok(text_stream(rx))
        }
    }
}

async fn serve_here(state: &AppState, checked: Checked) -> Result<Response, ApiError> {
    let permit = state
        .inner
        .file_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::overloaded(format!(
                "this node already serves {} file streams (--max-file-streams); retry later",
                state.inner.limits.max_file_streams
            ))
        })?;
    let roots = state.inner.log_roots.clone();
    let filename = checked.filename.clone();
    let path = tokio::task::spawn_blocking(move || roots.resolve(&filename))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    let request = TailRequest {
        path,
        roots: state.inner.log_roots.paths(),
        matcher: checked.matcher,
        n: checked.n,
        order: checked.order,
        follow: checked.follow,
        scan: ScanOptions::default(),
    };
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let shutdown = state.inner.shutdown.clone();
    tokio::spawn(async move {
        // Held until the stream ends, follow included.
        let _permit = permit;
        let path = request.path.clone();
        let sink_tx = tx.clone();
        let tailed = tokio::task::spawn_blocking(move || {
            let mut sink = ChannelSink { tx: sink_tx };
            files::tail(&request, &mut sink)
        })
        .await;
        let failed = |error: String| {
            tracing::warn!(file = %path.display(), %error, "A file stream failed.");
            error_line(&error)
        };
        let follower = match tailed {
            Ok(Ok(follower)) => follower,
            Ok(Err(error)) => {
                let _ = tx.send(Chunk::Last(failed(error.to_string()))).await;
                return;
            }
            Err(error) => {
                let _ = tx.send(Chunk::Last(failed(error.to_string()))).await;
                return;
            }
        };
        if let Some(follower) = follower {
            follow(follower, tx, shutdown).await;
        }
    });
    Ok(text_stream(rx))
}

/// Drives a [`files::Follower`]: one brief step on the blocking pool whenever the file may have
/// grown, a timer in between, so an idle follow stream holds no thread. Ends when the client
/// goes, the node stops (with an error line saying so) or a step fails.
async fn follow(mut follower: files::Follower, tx: mpsc::Sender<Chunk>, shutdown: Shutdown) {
    let mut wait = false;
    loop {
        if wait {
            tokio::select! {
                () = tx.closed() => return,
                () = shutdown.wait() => {
                    let line = error_line("the node is stopping; reconnect to follow on");
                    let _ = tx.send(Chunk::Last(line)).await;
                    return;
                }
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
        let stepped = tokio::task::spawn_blocking(move || {
            let result = follower.step();
            (follower, result)
        })
        .await;
        let (returned, result) = match stepped {
            Ok(stepped) => stepped,
            Err(error) => {
                let _ = tx.send(Chunk::Last(error_line(&error.to_string()))).await;
                return;
            }
        };
        follower = returned;
        match result {
            Ok((bytes, more)) => {
                wait = !more;
                if !bytes.is_empty() && tx.send(Chunk::Data(Bytes::from(bytes))).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                let _ = tx.send(Chunk::Last(error_line(&error.to_string()))).await;
                return;
            }
        }
    }
}

/// A piece of a streamed body; `Last` ends it (the error line).
enum Chunk {
    Data(Bytes),
    Last(Bytes),
}

fn error_line(message: &str) -> Bytes {
    Bytes::from(format!(
        "{ERROR_LINE_PREFIX}{}\n",
        message.replace(['\n', '\r'], " ")
    ))
}

struct ChannelSink {
    tx: mpsc::Sender<Chunk>,
}

impl Sink for ChannelSink {
    fn send(&mut self, bytes: Vec<u8>) -> bool {
        self.tx
            .blocking_send(Chunk::Data(Bytes::from(bytes)))
            .is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A chunked `text/plain` response fed by `rx`; it ends after a `Last` chunk or when every
/// sender is gone.
fn text_stream(rx: mpsc::Receiver<Chunk>) -> Response {
    let stream = futures_util::stream::unfold(Some(rx), |rx| async move {
        let mut rx = rx?;
        match rx.recv().await? {
            Chunk::Data(bytes) => Some((Ok::<_, std::io::Error>(bytes), Some(rx))),
            Chunk::Last(bytes) => Some((Ok(bytes), None)),
        }
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Sends the request to `member`, as that member's own (`hostname` = its name), with the
/// client's Authorization header.
pub(super) async fn forward<P: Serialize>(
    state: &AppState,
    member: &Member,
    path: &str,
    params: &P,
    headers: &HeaderMap,
) -> Result<reqwest::Response, ApiError> {
    let mut params = serde_json::to_value(params).unwrap_or(Value::Null);
    params["hostname"] = Value::String(member.name.clone());
    let mut request = state
        .inner
        .peers
        .get(format!("{}{path}", member.address))
        .query(&params)
        .header(FORWARDED_HEADER, "1");
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let timeout = state.inner.limits.peer_timeout;
    match tokio::time::timeout(timeout, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "bad_gateway",
            format!(
                "cluster member {} at {} is unreachable: {}",
                member.name,
                member.address,
                error_chain(&error)
            ),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            format!(
                "cluster member {} at {} did not answer within {} (--peer-timeout)",
                member.name,
                member.address,
                humantime::format_duration(timeout)
            ),
        )),
    }
}

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

/// The member's error answer, status and JSON body as they came (a body that does not come
/// within the peer timeout is left out).
async fn pass_error(state: &AppState, upstream: reqwest::Response) -> Response {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = tokio::time::timeout(state.inner.limits.peer_timeout, upstream.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Moves a member's streamed body into `tx`: as it comes, or with `prefix` before every line.
/// A failure ends the whole response with the error line. The upstream request is dropped as
/// soon as the client goes or the node stops, so a forwarded follow stream that has nothing to
/// say does not hold the member's file stream for a client that left.
async fn relay(
    name: String,
    upstream: reqwest::Response,
    prefix: Option<String>,
    shutdown: Shutdown,
    tx: mpsc::Sender<Chunk>,
) {
    let mut body = upstream.bytes_stream();
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let piece = tokio::select! {
            piece = body.next() => piece,
            () = tx.closed() => return,
            () = shutdown.wait() => {
                let line = error_line(&format!("{name}: the node is stopping"));
                let _ = tx.send(Chunk::Last(line)).await;
                return;
            }
        };
        let Some(piece) = piece else {
            break;
        };
        let bytes = match piece {
            Ok(bytes) => bytes,
            Err(error) => {
                let message = format!("{name}: the stream broke: {}", error_chain(&error));
                let _ = tx.send(Chunk::Last(error_line(&message))).await;
                return;
            }
        };
        let Some(prefix) = &prefix else {
            if tx.send(Chunk::Data(bytes)).await.is_err() {
                return;
            }
            continue;
        };
        partial.extend_from_slice(&bytes);
        let Some(end) = memchr::memrchr(b'\n', &partial) else {
            continue;
        };
        let mut out = Vec::with_capacity(end + 64);
        for line in partial[..=end].split_inclusive(|b| *b == b'\n') {
            if let Some(message) = line.strip_prefix(ERROR_LINE_PREFIX.as_bytes()) {
                let message = String::from_utf8_lossy(message);
                if !out.is_empty() {
                    let _ = tx.send(Chunk::Data(Bytes::from(out))).await;
                }
                let _ = tx
                    .send(Chunk::Last(error_line(&format!(
                        "{name}: {}",
                        message.trim_end()
                    ))))
                    .await;
                return;
            }
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(line);
        }
        partial.drain(..=end);
        if tx.send(Chunk::Data(Bytes::from(out))).await.is_err() {
            return;
        }
    }
    if let Some(prefix) = &prefix
        && !partial.is_empty()
    {
        let mut out = prefix.as_bytes().to_vec();
        out.extend_from_slice(&partial);
        out.push(b'\n');
        let _ = tx.send(Chunk::Data(Bytes::from(out))).await;
    }
}

/// The files a member may serve, with size and mtime.
#[utoipa::path(get, path = "/logs/files", tag = "files", params(ListParams),
    responses((status = 200, description = "Files", body = crate::http::openapi::FileList)))]
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match target(&state, params.hostname.as_deref(), &headers).await? {
        Target::Here => Ok(Json(list_here(&state).await?).into_response()),
        Target::Member(member) => {
            let upstream = forward(&state, &member, "/logs/files", &params, &headers).await?;
            Ok(pass_error(&state, upstream).await)
        }
        Target::Everyone(members) => {
            let asks = members.iter().map(|member| {
                let state = &state;
                let params = &params;
                let headers = &headers;
                async move {
                    let failed = |error: String| json!({"node": member.name, "error": error});
                    let upstream =
                        match forward(state, member, "/logs/files", params, headers).await {
                            Ok(upstream) => upstream,
                            Err(error) => return failed(error.message),
                        };
                    let status = upstream.status();
                    let body = tokio::time::timeout(
                        state.inner.limits.peer_timeout,
                        upstream.json::<Value>(),
                    )
                    .await;
                    match body {
                        Ok(Ok(body)) if status.is_success() => body,
                        Ok(Ok(body)) => failed(format!("answered {status}: {body}")),
                        Ok(Err(error)) => failed(format!("answered {status}: {error}")),
                        Err(_) => failed(format!(
                            "did not send its list within {} (--peer-timeout)",
                            humantime::format_duration(state.inner.limits.peer_timeout)
                        )),
                    }
                }
            });
            let nodes = futures_util::future::join_all(asks).await;
            Ok(Json(json!({"nodes": nodes})).into_response())
        }
    }
}

async fn list_here(state: &AppState) -> Result<Value, ApiError> {
    let roots = state.inner.log_roots.clone();
    let files = tokio::task::spawn_blocking(move || roots.list())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let roots: Vec<String> = state
        .inner
        .log_roots
        .paths()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Ok(json!({"node": state.inner.node_name, "roots": roots, "files": files}))
}

impl From<FilesError> for ApiError {
    fn from(error: FilesError) -> Self {
        match error {
            FilesError::BadName(message) => ApiError::bad_request(message),
            FilesError::Forbidden(message) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            FilesError::NotFound(message) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            FilesError::Io(message) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "io_error", message)
            }
        }
    }
}
