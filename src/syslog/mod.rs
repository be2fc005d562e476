//! Syslog listeners, off by default: `--syslog-listen tcp://127.0.0.1:5514`, `udp://…`,
//! `tls://…` (RFC 5425, with `--syslog-tls-cert` and `--syslog-tls-key`) or `relp://…`
//! (repeatable), so that every host's syslog daemon and network gear can ship to a node, and
//! rsyslog can ship with RELP, losing nothing.
//!
//! Invariants:
//! - Nothing received is dropped silently: a message that does not parse is kept as raw text
//!   with service `syslog` and counted (`unparsed`); a UDP datagram the queue cannot take is
//!   counted (`dropped`) in `logmesh_syslog`.
//! - TCP never drops: a connection's messages are appended in batches (one in flight while the
//!   next is read, each at most 1,000 messages or 4 MiB), and while the queue is full the
//!   connection is not read (TCP back-pressure reaches the sender). What a connection could
//!   not queue (larger than the whole queue, or the queue closing) is counted `lost`.
//! - RELP answers `rsp 200` for a message only once it is durable, and never refuses one the
//!   sender should retry: while the node cannot take messages it holds the answers (the
//!   sender's window fills and it waits), and if it must give up it closes the connection
//!   unanswered, so that the sender sends the messages again. The one error answer is for a
//!   message larger than the whole queue can ever take, which sent again would block the
//!   sender for good.
//! - Same rules as the HTTP listener: a non-loopback listener needs `--api-token` or
//!   `--insecure`; with a token (syslog has none), it also needs `--syslog-allow`, the
//!   networks whose peers it serves.

mod listener;
pub mod parse;
pub(crate) mod relp;
mod tls;

use crate::intake::Intake;
use ipnet::IpNet;
pub use parse::ServiceFrom;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
pub use tls::TlsFiles;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The transports a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// RFC 6587: octet counting or newline (or NUL) framing, detected per connection.
    Tcp,
    /// One message per datagram.
    Udp,
    /// rsyslog's Reliable Event Logging Protocol (librelp): each message acknowledged once
    /// durable.
    Relp,
    /// RFC 5425: TCP's framing inside TLS.
    Tls,
}

/// One `--syslog-listen` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyslogListen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl SyslogListen {
    /// `tcp://IP:PORT`, `udp://IP:PORT`, `tls://IP:PORT` or `relp://IP:PORT` (port 0 picks a
    /// free one).
    pub fn parse(text: &str) -> Result<SyslogListen, String> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("`{text}` is not tcp://IP:PORT, udp://IP:PORT, tls://IP:PORT or relp://IP:PORT")
        })?;
        let transport = match scheme {
            "tcp" => Transport::Tcp,
            "udp" => Transport::Udp,
            "relp" => Transport::Relp,
            "tls" => Transport::Tls,
            other => {
                return Err(format!(
                    "`{text}`: unknown transport `{other}` (tcp, udp, tls or relp)"
                ));
            }
        };
        let addr = rest.parse::<SocketAddr>().map_err(|_| {
            format!("`{text}`: `{rest}` is not IP:PORT (an address, not a host name: 127.0.0.1:5514, [::1]:5514)")
        })?;
        Ok(SyslogListen { transport, addr })
    }
}

impl fmt::Display for SyslogListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Relp => "relp",
            Transport::Tls => "tls",
        };
        write!(f, "{scheme}://{}", self.addr)
    }
}

/// The syslog settings of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyslogSettings {
    pub listen: Vec<SyslogListen>,
    /// Networks whose peers non-loopback listeners serve; empty: any (only without a token).
    pub allow: Vec<IpNet>,
    /// Which part of a message names its service.
    pub service: ServiceFrom,
    /// The certificate and key of `tls://` listeners.
    pub tls: TlsFiles,
}

/// Who may send: loopback peers always; others when the allow list is empty or holds them.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    allow: Vec<IpNet>,
}

impl Access {
    pub(crate) fn admits(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        peer.is_loopback()
            || self.allow.is_empty()
            || self.allow.iter().any(|net| net.contains(&peer))
    }
}

/// Checks the listeners against the node's access rules (see the module's invariants), and
/// that `tls://` ones have a certificate and key.
pub fn check_access(
    settings: &SyslogSettings,
    api_token: bool,
    insecure: bool,
) -> Result<(), String> {
    for listen in &settings.listen {
        if listen.transport == Transport::Tls && !settings.tls.given() {
            return Err(format!(
                "--syslog-listen {listen}: a TLS listener needs --syslog-tls-cert and \
                 --syslog-tls-key (PEM files)"
            ));
        }
        if listen.addr.ip().is_loopback() {
            continue;
        }
        if api_token && settings.allow.is_empty() {
            return Err(format!(
                "--syslog-listen {listen}: syslog carries no token, so with --api-token a \
                 non-loopback listener needs --syslog-allow, the networks it serves \
                 (e.g. --syslog-allow 10.0.0.0/8)"
            ));
        }
        if !api_token && !insecure {
            return Err(format!(
                "--syslog-listen {listen}: a non-loopback listener needs --api-token with \
                 --syslog-allow, or --insecure to serve anyone"
            ));
        }
    }
    Ok(())
}

/// The running listeners.
pub struct Listeners {
    pub bound: Vec<SyslogListen>,
    tasks: Vec<JoinHandle<()>>,
}

impl Listeners {
    /// Waits for every listener and its connections to end (after `stop`).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds and starts every listener; each ends when `stop` turns true.
pub async fn start(
    settings: &SyslogSettings,
    intake: Arc<Intake>,
    node_name: &str,
    stop: watch::Receiver<bool>,
) -> Result<Listeners, String> {
    let access = Access {
        allow: settings.allow.clone(),
    };
    let acceptor = if settings
        .listen
        .iter()
        .any(|listen| listen.transport == Transport::Tls)
    {
        Some(tls::acceptor(&settings.tls)?)
    } else {
        None
    };
    let mut bound = Vec::new();
    let mut tasks = Vec::new();
    for listen in &settings.listen {
        let context = listener::Context {
            intake: intake.clone(),
            node: Arc::from(node_name),
            access: access.clone(),
            stop: stop.clone(),
            name: Arc::from(""),
            service: Arc::new(settings.service.clone()),
        };
        let (actual, task) = match listen.transport {
            Transport::Tcp | Transport::Relp => {
                listener::start_stream(listen.addr, listen.transport, None, context).await
            }
            Transport::Tls => {
                listener::start_stream(listen.addr, listen.transport, acceptor.clone(), context)
                    .await
            }
            Transport::Udp => listener::start_udp(listen.addr, context).await,
        }
        .map_err(|e| format!("--syslog-listen {listen}: {e}"))?;
        let actual = SyslogListen {
            transport: listen.transport,
            addr: actual,
        };
        tracing::info!(listener = %actual, "Syslog listener is serving.");
        bound.push(actual);
        tasks.push(task);
    }
    Ok(Listeners { bound, tasks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_or_say_why_not() {
        assert_eq!(
            SyslogListen::parse("udp://[::1]:514").unwrap().to_string(),
            "udp://[::1]:514"
        );
        assert_eq!(
            SyslogListen::parse("relp://127.0.0.1:2514")
                .unwrap()
                .transport,
            Transport::Relp
        );
        for (text, says) in [
            ("127.0.0.1:514", "not tcp://"),
            ("http://127.0.0.1:514", "unknown transport"),
            ("tcp://localhost:514", "not IP:PORT"),
            ("ftp://127.0.0.1:6514", "unknown transport"),
        ] {
            let error = SyslogListen::parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn non_loopback_listeners_follow_the_http_rules() {
        let settings = |listen: &str, allow: &[&str]| SyslogSettings {
            listen: vec![SyslogListen::parse(listen).unwrap()],
            allow: allow.iter().map(|net| net.parse().unwrap()).collect(),
            service: ServiceFrom::default(),
            tls: TlsFiles::default(),
        };
        assert!(check_access(&settings("tcp://127.0.0.1:0", &[]), true, false).is_ok());
        assert!(check_access(&settings("tcp://0.0.0.0:0", &[]), false, false).is_err());
        assert!(check_access(&settings("tcp://0.0.0.0:0", &[]), false, true).is_ok());
        let error = check_access(&settings("tcp://0.0.0.0:0", &[]), true, false).unwrap_err();
        assert!(error.contains("--syslog-allow"), "{error}");
        assert!(check_access(&settings("tcp://0.0.0.0:0", &["10.0.0.0/8"]), true, false).is_ok());
        let error = check_access(&settings("tls://127.0.0.1:0", &[]), false, false).unwrap_err();
        assert!(error.contains("--syslog-tls-cert"), "{error}");
        let access = Access {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
        };
        assert!(access.admits("10.1.2.3".parse().unwrap()));
        assert!(access.admits("::ffff:10.1.2.3".parse().unwrap()));
        assert!(access.admits("127.0.0.1".parse().unwrap()));
        assert!(!access.admits("192.168.1.1".parse().unwrap()));
    }
}
