//! Which requests a browser may make on a user's behalf: the `Host` check against DNS
//! rebinding and the `Origin` check against cross-site requests.
//!
//! A node on the default loopback bind without a token is reachable from any web page the
//! user visits: a page on `evil.example` whose name re-resolves to 127.0.0.1 reads `/logs`
//! (its requests carry `Host: evil.example`), and any page can POST a form to
//! `http://127.0.0.1:5555/event`. So:
//! - On a loopback bind only loopback host names are served (`localhost`, `*.localhost`,
//!   `127.0.0.0/8`, `[::1]`), plus `--allowed-hosts`; on another bind any host is, unless
//!   `--allowed-hosts` lists them.
//! - A state-changing request (not GET, HEAD or OPTIONS) whose `Origin` is another site, or
//!   that a browser marks `Sec-Fetch-Site: cross-site`, is refused; the console's own origin
//!   (same host and port) works, and clients that send no `Origin` (curl, shippers) are not
//!   affected.

use super::error::ApiError;
use axum::http::{HeaderMap, Method, StatusCode, header};

/// The host names a node answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPolicy {
    /// Whether the node listens on a loopback address only.
    loopback_bind: bool,
    /// `--allowed-hosts`: exact names, `.example.com` for a domain and its subdomains, or `*`.
    allowed: Vec<String>,
}

impl HostPolicy {
    pub fn new(loopback_bind: bool, allowed: &[String]) -> HostPolicy {
        HostPolicy {
            loopback_bind,
            allowed: allowed
                .iter()
                .map(|host| host.to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether a request for `host` (a `Host` header or an `Origin`'s host, port removed) is
    /// served.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        if is_loopback_name(&host) {
            return true;
        }
        if self.allowed.is_empty() {
            return !self.loopback_bind;
        }
        self.allowed.iter().any(|allowed| {
            allowed == "*"
                || *allowed == host
                || allowed
                    .strip_prefix('.')
                    .is_some_and(|domain| host == domain || host.ends_with(&format!(".{domain}")))
        })
    }

    /// Refuses a request this policy does not serve, or a browser's cross-site request that
    /// would change state.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers
            .get(header::HOST)
            .map(|value| value.to_str().unwrap_or("\u{fffd}"));
        if let Some(host) = host
            && !self.allows(host_name(host))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "this node does not answer to the host name `{}`; {}",
                    host.escape_debug(),
                    if self.loopback_bind {
                        "on a loopback address it answers only to localhost and loopback \
                         addresses (a guard against DNS rebinding); add the name to \
                         --allowed-hosts if it is yours"
                    } else {
                        "add it to --allowed-hosts"
                    }
                ),
            ));
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        let cross_site = headers
            .get("sec-fetch-site")
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"cross-site"));
        let foreign_origin = headers.get(header::ORIGIN).is_some_and(|origin| {
            let origin = origin.to_str().unwrap_or("null");
            match origin.split_once("://") {
                Some((_, authority)) => Some(authority) != host && !self.allowed_origin(authority),
                None => true,
            }
        });
        if cross_site || foreign_origin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_site_request",
                "a web page of another site may not send this request (its Origin is not this \
                 node); send it from the console, or from a client that is not a browser",
            ));
        }
        Ok(())
    }

    /// An origin's `host[:port]` named in `--allowed-hosts` (e.g. a proxy's public name); `*`
    /// names no origin, or any site could post.
    fn allowed_origin(&self, authority: &str) -> bool {
        let host = host_name(authority).to_ascii_lowercase();
        !is_loopback_name(&host)
            && self.allowed.iter().any(|allowed| {
                *allowed == host
                    || allowed.strip_prefix('.').is_some_and(|domain| {
                        host == domain || host.ends_with(&format!(".{domain}"))
                    })
            })
    }
}

/// `name:port`, `[v6]:port` or `name` → the name (for IPv6, without brackets).
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

fn is_loopback_name(host: &str) -> bool {
    let host = host.trim_end_matches('.');
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn a_loopback_node_answers_only_to_loopback_names() {
        let policy = HostPolicy::new(true, &[]);
        for host in [
            "localhost:5555",
            "127.0.0.1:5555",
            "127.1.2.3",
            "[::1]:5555",
            "LOCALHOST",
            "app.localhost:80",
        ] {
            assert!(
                policy
                    .check(&Method::GET, &headers(&[("host", host)]))
                    .is_ok(),
                "{host}"
            );
        }
        for host in [
            "evil.example",
            "evil.example:5555",
            "10.0.0.1:5555",
            "localhost.evil.example",
        ] {
            let error = policy
                .check(&Method::GET, &headers(&[("host", host)]))
                .unwrap_err();
            assert_eq!(error.code, "host_not_allowed", "{host}");
            assert!(error.message.contains("--allowed-hosts"));
        }
        // HTTP/1.0 clients may send no Host at all.
        assert!(policy.check(&Method::GET, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn allowed_hosts_add_names_domains_or_everything() {
        let policy = HostPolicy::new(true, &["logs.example.com".into(), ".corp.example".into()]);
        assert!(policy.allows("logs.example.com"));
        assert!(policy.allows("corp.example"));
        assert!(policy.allows("a.b.corp.example"));
        assert!(policy.allows("localhost"));
        assert!(!policy.allows("example.com"));
        assert!(!policy.allows("evilcorp.example"));
        assert!(HostPolicy::new(true, &["*".into()]).allows("anything"));
        // On a public bind, any name unless a list is given.
        assert!(HostPolicy::new(false, &[]).allows("node-3.internal"));
        assert!(!HostPolicy::new(false, &["a.example".into()]).allows("b.example"));
    }

    #[test]
    fn cross_site_state_changes_are_refused_and_same_origin_ones_served() {
        let policy = HostPolicy::new(true, &[]);
        let host = ("host", "127.0.0.1:5555");
        let ok = |pairs: &[(&'static str, &str)]| policy.check(&Method::POST, &headers(pairs));
        assert!(ok(&[host]).is_ok(), "no Origin: not a browser");
        assert!(ok(&[host, ("origin", "http://127.0.0.1:5555")]).is_ok());
        assert!(ok(&[host, ("sec-fetch-site", "same-origin")]).is_ok());
        for bad in [
            ("origin", "http://evil.example"),
            ("origin", "http://127.0.0.1:8080"),
            ("origin", "null"),
            ("sec-fetch-site", "cross-site"),
        ] {
            assert_eq!(
                ok(&[host, bad]).unwrap_err().code,
                "cross_site_request",
                "{bad:?}"
            );
        }
        // Reads are not state changes.
        assert!(
            policy
                .check(
                    &Method::GET,
                    &headers(&[host, ("origin", "http://evil.example")])
                )
                .is_ok()
        );
        // A proxy's public name in --allowed-hosts may be the origin.
        // `*` answers to any host name, but lets no other site's page post.
        let any = HostPolicy::new(true, &["*".into()]);
        assert_eq!(
            any.check(
                &Method::POST,
                &headers(&[
                    ("host", "logs.example.com"),
                    ("origin", "https://evil.example")
                ])
            )
            .unwrap_err()
            .code,
            "cross_site_request"
        );
        let proxied = HostPolicy::new(true, &["logs.example.com".into()]);
        assert!(
            proxied
                .check(
                    &Method::POST,
                    &headers(&[host, ("origin", "https://logs.example.com")])
                )
                .is_ok()
        );
    }
}
