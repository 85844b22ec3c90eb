//! Validation of where traffic comes in and goes out: listeners (with TLS),
//! upstreams, socket addresses and URLs.

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use http::Uri;

use super::model::*;
use super::raw::*;
use super::validate::{item, nonzero, unique_name, Diags};
use super::value::Dur;

pub(super) fn socket_addr(d: &mut Diags, key: impl Display, text: &str) -> Option<SocketAddr> {
    let parsed = text.trim().parse();
    if parsed.is_err() {
        d.error(
            key,
            format_args!("expected an IP address and port like 127.0.0.1:8000, got {text:?}"),
        );
    }
    parsed.ok()
}

pub(super) fn listeners(d: &mut Diags, raw: Option<&[RawListener]>) -> Vec<Option<Listener>> {
    let raw = raw.unwrap_or(&[]);
    if raw.is_empty() {
        d.error("listeners", "at least one listener is needed");
    }
    let mut names: Vec<(String, String)> = Vec::new();
    let mut out = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let key = item("listeners", i, l.name.as_deref());
        let name = l.name.clone().unwrap_or_else(|| format!("listener-{i}"));
        unique_name(d, &key, "listener", &name, &mut names);
        let listen = socket_addr(d, format_args!("{key}.listen"), &l.listen);
        let timeout = |d: &mut Diags, field: &str, value: Option<_>, default: u64| match value {
            Some(Dur(v)) => nonzero(d, format_args!("{key}.{field}"), v),
            None => Duration::from_secs(default),
        };
        let header_timeout = timeout(d, "header_timeout", l.header_timeout, 10);
        let body_timeout = timeout(d, "body_timeout", l.body_timeout, 30);
        let tls = l
            .tls
            .as_ref()
            .map(|t| listener_tls(d, &format!("{key}.tls"), t));
        out.push(listen.map(|listen| Listener {
            name,
            listen,
            header_timeout,
            body_timeout,
            tls,
        }));
    }
    out
}

pub(super) fn unique_addresses(
    d: &mut Diags,
    admin: Option<SocketAddr>,
    raw: &[RawListener],
    listeners: &[Option<Listener>],
    cluster: Option<&ClusterSpec>,
) {
    let mut all: Vec<(String, SocketAddr)> = Vec::new();
    all.extend(admin.map(|a| ("admin.listen".to_owned(), a)));
    for (i, (r, l)) in raw.iter().zip(listeners).enumerate() {
        if let Some(l) = l {
            all.push((
                format!("{}.listen", item("listeners", i, r.name.as_deref())),
                l.listen,
            ));
        }
    }
    all.extend(
        cluster
            .and_then(|c| c.listen)
            .map(|a| ("cluster.listen".to_owned(), a)),
    );
    for (n, (key, addr)) in all.iter().enumerate() {
        // Port 0 asks the OS for a fresh port each time, so it never clashes.
        let first = all[..n].iter().find(|(_, a)| a == addr && addr.port() != 0);
        if let Some((first, _)) = first {
            d.error(
                key,
                format_args!("address {addr} is already used by {first}"),
            );
        }
    }
}

pub(super) fn upstreams(d: &mut Diags, raw: &[(String, RawUpstream)]) -> Vec<Option<Upstream>> {
    let mut out = Vec::new();
    for (name, u) in raw {
        let key = format!("upstreams.{name}");
        if name.trim().is_empty() {
            d.error(&key, "an upstream name must not be empty");
        }
        let url = origin_url(d, &format!("{key}.url"), &u.url);
        let connect_timeout = match u.connect_timeout {
            Some(t) => nonzero(d, format_args!("{key}.connect_timeout"), t.0),
            None => Duration::from_secs(1),
        };
        let tls = u.tls.as_ref().map(|t| UpstreamTls {
            ca: t.ca.as_deref().map(|p| d.path(p)),
            server_name: t.server_name.clone(),
            cert: t.cert.as_deref().map(|p| d.path(p)),
            key: t.key.as_deref().map(|p| d.path(p)),
        });
        if let Some(t) = &tls {
            if t.cert.is_some() != t.key.is_some() {
                d.error(
                    format_args!("{key}.tls"),
                    "a client certificate needs both `cert` and `key`",
                );
            }
        }
        if let Some(sni) = tls.as_ref().and_then(|t| t.server_name.as_deref()) {
            if sni.trim().is_empty() {
                d.error(format_args!("{key}.tls.server_name"), "must not be empty");
            }
        }
        out.push(url.map(|url| Upstream {
            name: name.clone(),
            url,
            protocol: u.protocol.unwrap_or(Protocol::Http1),
            connect_timeout,
            max_idle_per_host: u.max_idle_per_host.unwrap_or(64),
            tls,
        }));
    }
    out
}

pub(super) fn listener_tls(d: &mut Diags, key: &str, raw: &RawListenerTls) -> ListenerTls {
    let certificates: Vec<CertificatePaths> = raw
        .certificates
        .iter()
        .flatten()
        .map(|c| CertificatePaths {
            cert: d.path(&c.cert),
            key: d.path(&c.key),
        })
        .collect();
    if certificates.is_empty() {
        d.error(
            format_args!("{key}.certificates"),
            "at least one certificate is needed",
        );
    }
    let handshake_timeout = match raw.handshake_timeout {
        Some(t) => nonzero(d, format_args!("{key}.handshake_timeout"), t.0),
        None => Duration::from_secs(10),
    };
    ListenerTls {
        certificates,
        client_ca: raw.client_ca.as_deref().map(|p| d.path(p)),
        handshake_timeout,
        forward_client_cert: raw.forward_client_cert.unwrap_or(false),
    }
}

/// An `http://host:port` or `https://host:port` URL without path or query;
/// a missing port is made explicit (80 or 443) so callers can dial it.
pub(super) fn origin_url(d: &mut Diags, key: &str, raw: &str) -> Option<Uri> {
    let uri = url(d, key, raw)?;
    if !matches!(uri.path(), "" | "/") {
        d.error(
            key,
            format_args!(
                "must not have a path (requests keep their own), got {:?}",
                uri.path()
            ),
        );
        return None;
    }
    let authority = uri.authority()?;
    let port = match (authority.port_u16(), uri.scheme_str()) {
        (Some(port), _) => port,
        (None, Some("https")) => 443,
        (None, _) => 80,
    };
    let scheme = uri.scheme_str().unwrap_or("http");
    let normal = format!("{scheme}://{}:{port}/", authority.host());
    let parsed = normal.parse().ok();
    if parsed.is_none() {
        d.error(key, format_args!("{raw:?} is not a valid URL"));
    }
    parsed
}

/// Any absolute `http://` or `https://` URL without query or credentials.
pub(super) fn url(d: &mut Diags, key: &str, raw: &str) -> Option<Uri> {
    let problem = match raw.trim().parse::<Uri>() {
        Err(e) => format!("{raw:?} is not a valid URL: {e}"),
        Ok(uri) if !matches!(uri.scheme_str(), Some("http" | "https")) => {
            format!("must start with http:// or https://, got {raw:?}")
        }
        Ok(uri) if !uri.authority().is_some_and(|a| !a.host().is_empty()) => {
            format!("{raw:?} has no host")
        }
        Ok(uri) if uri.authority().is_some_and(|a| a.as_str().contains('@')) => {
            "must not carry credentials".to_owned()
        }
        Ok(uri) if uri.query().is_some() => format!("must not have a query, got {raw:?}"),
        Ok(uri) => return Some(uri),
    };
    d.error(key, problem);
    None
}

/// `host:port`, where host is a name or an address.
pub(super) fn host_port(d: &mut Diags, key: &str, raw: &str) {
    let ok = raw
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !ok {
        d.error(
            key,
            format_args!("expected host:port like 10.0.0.5:7946, got {raw:?}"),
        );
    }
}
