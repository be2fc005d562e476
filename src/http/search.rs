//! `GET /api/v1/logs/search`: stored events, newest first, a page at a time, through
//! [`Store::search`](crate::store::Store::search).
//!
//! Invariants: every parameter is checked here and a bad one (or an unknown one) is a 400 that
//! names it; the answer's `next_cursor` is the store's opaque cursor, handed back unchanged.

use super::AppState;
use super::error::ApiError;
use crate::event::{Severity, parse_timestamp_text};
use crate::store::{
    Cursor, DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT, SearchQuery, StoredEventJson,
    check_attribute_name,
};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The parameters of a search. Besides these, `attr.<name>=<value>` (up to
/// [`MAX_ATTRIBUTE_FILTERS`](crate::store::MAX_ATTRIBUTE_FILTERS)) finds events whose attribute `<name>` is exactly `<value>`; any
/// other parameter is refused.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words every event found must hold as whole words, any case.
    #[param(max_length = 1024)]
    q: Option<String>,
    #[param(min_length = 1)]
    service: Option<String>,
    /// A minimum: warn also finds error and fatal.
    #[param(value_type = Option<crate::http::openapi::SeverityName>, inline)]
    severity: Option<String>,
    /// RFC 3339 or epoch milliseconds, inclusive.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339 or epoch milliseconds, exclusive.
    #[param(format = DateTime)]
    until: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// `attr.<name>` filters, and anything else (refused).
    #[serde(flatten)]
    #[param(ignore)]
    other: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct SearchAnswer {
    events: Vec<StoredEventJson>,
    next_cursor: Option<String>,
}

/// A 400 naming the parameter.
fn bad(parameter: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("query parameter `{parameter}`: {problem}"))
}

/// The query the parameters describe, or a 400 naming the first bad one.
pub fn search_query(params: SearchParams) -> Result<SearchQuery, ApiError> {
    let time = |name: &str, value: Option<String>| {
        value
            .map(|text| parse_timestamp_text(&text).map_err(|e| bad(name, e)))
            .transpose()
    };
    let limit = match params.limit {
        None => DEFAULT_SEARCH_LIMIT,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_SEARCH_LIMIT).contains(n))
            .ok_or_else(|| {
                bad(
                    "limit",
                    format!("`{text}` is not a whole number from 1 to {MAX_SEARCH_LIMIT}"),
                )
            })?,
    };
    let severity = params
        .severity
        .map(|text| {
            Severity::from_name(&text).ok_or_else(|| {
                bad(
                    "severity",
                    format!(
                        "unknown severity `{text}` (expected trace, debug, info, warn, error or \
                         fatal, an alias such as warning, or a syslog number 0-7); it is a \
                         minimum: warn also finds error and fatal"
                    ),
                )
            })
        })
        .transpose()?;
    let service = match params.service {
        Some(service) if service.is_empty() => return Err(bad("service", "must not be empty")),
        other => other,
    };
    let q = params.q.filter(|q| !q.trim().is_empty());
    let cursor = params
        .cursor
        .map(|text| Cursor::decode(&text).map_err(|e| bad("cursor", format!("`{text}` {e}"))))
        .transpose()?;
    let mut attributes = Vec::new();
    for (parameter, value) in params.other {
        let Some(name) = parameter.strip_prefix("attr.") else {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter `{parameter}` (known: q, service, severity, since, \
                 until, limit, cursor, attr.<name>)"
            )));
        };
        check_attribute_name(name).map_err(|e| bad(&parameter, e))?;
        attributes.push((name.to_owned(), value));
    }
    let query = SearchQuery {
        q,
        service,
        severity,
        since: time("since", params.since)?,
        until: time("until", params.until)?,
        limit,
        cursor,
        attributes,
    };
    query.check()?;
    Ok(query)
}

/// Stored events, newest first, a page at a time.
#[utoipa::path(get, path = "/api/v1/logs/search", tag = "query", params(SearchParams),
    responses((status = 200, description = "A page", body = crate::http::openapi::SearchAnswer)))]
#[tracing::instrument(skip_all)]
pub async fn search(
    State(state): State<AppState>,
    params: Result<Query<SearchParams>, QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SearchAnswer>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // A map keeps the last of a repeated `attr.` parameter; a repeat is a mistake to say.
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if name.starts_with("attr.") && !seen.insert(name.clone()) {
            return Err(bad(&name, "is given twice; an attribute has one value"));
        }
    }
    let query = search_query(params)?;
    let page = state.inner.store.search(&query).await?;
    Ok(Json(SearchAnswer {
        events: page.events.into_iter().map(StoredEventJson::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
