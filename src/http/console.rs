//! The web console's static shell: `GET /` (the page) and `GET /console/{file}` (its ES
//! modules and style sheet), embedded in the binary from `console/` at build time, so the
//! console works offline and a node needs no files beside its binary.
//!
//! Invariants:
//! - These routes hold no data and are the only ones served without the API token (see
//!   [`is_public`]); everything the page shows comes from the authenticated API.
//! - Every file under `console/` is in [`ASSETS`] (a test checks it), and nothing else is served
//!   from here: the name is looked up in the table, never joined to a path.

use super::AppState;
use super::error::ApiError;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::OnceLock;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../../console/", $name)),
        }
    };
}

/// The console's files; `index.html` is served at `/`, the others at `/console/<name>`.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("api.js", JS),
    asset!("app.js", JS),
    asset!("charts.js", JS),
    asset!("cluster.js", JS),
    asset!("ingest.js", JS),
    asset!("counts.js", JS),
    asset!("tail.js", JS),
    asset!("search.js", JS),
    asset!("files.js", JS),
    asset!("counters.js", JS),
    asset!("work.js", JS),
    asset!("storage.js", JS),
];

/// Paths served without the API token: the shell, which holds no data (like a login page).
pub fn is_public(path: &str) -> bool {
    path == "/" || path.starts_with("/console/")
}

/// A strong validator per asset, fixed for the life of the binary.
fn etag(index: usize) -> &'static HeaderValue {
    static ETAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    &ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let mut hasher = DefaultHasher::new();
                asset.body.hash(&mut hasher);
                HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish()))
                    .expect("hex is a valid header value")
            })
            .collect()
    })[index]
}

fn serve(index: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = etag(index);
    // `no-cache` means "revalidate": a new binary's files are picked up at once, and an
    // unchanged file costs a 304 without a body.
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag.clone()),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; img-src 'self' blob: data:"),
        ),
    ];
    if headers.get(header::IF_NONE_MATCH) == Some(etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

/// The web console; or, to a client that asks for JSON (an Elasticsearch client checking what
/// it talks to), Elasticsearch's version document.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "The console's page, or the version document an Elasticsearch client asks for", content(
        (String = "text/html"), (Object = "application/json")
    ))))]
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if super::elastic::wants_info(&headers) {
        // Served without the token, like the page: a node behind one does not say its name.
        let name = match state.inner.api_token {
            Some(_) => "logmesh",
            None => state.inner.node_name.as_str(),
        };
        return super::elastic::info(name);
    }
    serve(0, &headers)
}

/// A file of the web console.
#[utoipa::path(get, path = "/console/{file}", tag = "operations",
    params(("file" = String, Path, description = "A file of the console, e.g. app.js")),
    responses((status = 200, description = "The file", content(
        (String = "text/javascript"), (String = "text/css"), (String = "text/html"), (String = "image/svg+xml")
    ))))]
pub async fn file(
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = name.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match ASSETS.iter().position(|asset| asset.name == name) {
        Some(index) => Ok(serve(index, &headers)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the console has no file `{name}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes embedded in the binary for the console.
    fn embedded_bytes() -> usize {
        ASSETS.iter().map(|asset| asset.body.len()).sum()
    }

    #[test]
    fn every_file_of_the_console_folder_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .expect("console/ exists")
            .map(|entry| entry.expect("entry").file_name().into_string().unwrap())
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.name.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_embedded_console_stays_small() {
        // The page is plain modules and hand-written SVG charts; past this, something heavy
        // crept in (see docs/console.md).
        assert!(embedded_bytes() < 96 * 1024, "{} bytes", embedded_bytes());
    }

    #[test]
    fn only_the_shell_is_public() {
        assert!(is_public("/"));
        assert!(is_public("/console/app.js"));
        assert!(!is_public("/api/v1/cluster"));
        assert!(!is_public("/metrics"));
        assert!(!is_public("/consolex"));
    }
}
