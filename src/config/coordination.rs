//! Validation of single-writer leases and of what their backends need: the
//! `cluster` section (this node and its peers) and the `etcd` section.

use std::time::Duration;

use http::Uri;

use super::endpoints::{host_port, origin_url, socket_addr, url};
use super::model::*;
use super::raw::*;
use super::validate::{item, nonzero, percent, Diags};

pub(super) fn leases(d: &mut Diags, raw: &[(String, RawLease)]) -> Vec<Option<LeaseSpec>> {
    raw.iter()
        .map(|(name, l)| lease(d, &format!("leases.{name}"), name, l))
        .collect()
}

fn lease(d: &mut Diags, key: &str, name: &str, raw: &RawLease) -> Option<LeaseSpec> {
    let ttl = raw.ttl.map_or(Duration::from_secs(10), |t| {
        nonzero(d, format_args!("{key}.ttl"), t.0)
    });
    let renew_every = raw.renew_every.map_or(ttl / 3, |t| {
        nonzero(d, format_args!("{key}.renew_every"), t.0)
    });
    if renew_every >= ttl && !ttl.is_zero() {
        d.error(
            format_args!("{key}.renew_every"),
            "must be shorter than ttl, or the lease lapses between renewals",
        );
    }
    let max_drift = raw
        .max_drift
        .map_or(1.0, |p| percent(d, format_args!("{key}.max_drift"), p));
    if max_drift >= 50.0 {
        d.error(
            format_args!("{key}.max_drift"),
            "must be below 50%: no safe margin exists beyond that",
        );
    }
    let require_healthy = match &raw.require_healthy {
        Some(h) => Some(HealthCheck {
            url: {
                let key = format!("{key}.require_healthy.url");
                let checked = url(d, &key, &h.url)?;
                if checked.scheme_str() == Some("https") {
                    // The check talks to the local app, in plain HTTP.
                    d.error(&key, "must be an http:// URL of the local app");
                }
                checked
            },
            every: h.every.map_or(Duration::from_secs(2), |t| {
                nonzero(d, format_args!("{key}.require_healthy.every"), t.0)
            }),
        }),
        None => None,
    };
    Some(LeaseSpec {
        name: name.to_owned(),
        backend: raw.backend.unwrap_or(LeaseBackend::Local),
        ttl,
        renew_every,
        max_drift,
        on_follower: raw.on_follower.unwrap_or(OnFollower::Forward),
        wait: raw.wait.map_or(Duration::ZERO, |t| t.0),
        require_healthy,
    })
}

pub(super) fn cluster(d: &mut Diags, raw: &RawCluster) -> ClusterSpec {
    if raw.node_id.trim().is_empty() {
        d.error("cluster.node_id", "must not be empty");
    }
    let forward_url = raw
        .forward_url
        .as_deref()
        .map(|u| origin_url(d, "cluster.forward_url", u));
    let public_url = raw
        .public_url
        .as_deref()
        .map(|u| origin_url(d, "cluster.public_url", u));
    let listen = raw
        .listen
        .as_deref()
        .map(|a| socket_addr(d, "cluster.listen", a));
    if let Some(a) = &raw.advertise {
        host_port(d, "cluster.advertise", a);
    }
    let mut ids = vec![raw.node_id.as_str()];
    for (i, p) in raw.peers.iter().flatten().enumerate() {
        let key = item("cluster.peers", i, Some(&p.id));
        if ids.contains(&p.id.as_str()) {
            d.error(
                format_args!("{key}.id"),
                format_args!("{:?} is used twice (node_id counts too)", p.id),
            );
        }
        ids.push(&p.id);
        host_port(d, &format!("{key}.address"), &p.address);
    }
    ClusterSpec {
        node_id: raw.node_id.clone(),
        // An invalid value was recorded, and no Config is built then.
        forward_url: forward_url.flatten(),
        listen: listen.flatten(),
        advertise: raw.advertise.clone(),
        public_url: public_url.flatten(),
        state_dir: raw.state_dir.as_deref().map(|p| d.path(p)),
        peers: raw
            .peers
            .iter()
            .flatten()
            .map(|p| Peer {
                id: p.id.clone(),
                address: p.address.clone(),
            })
            .collect(),
        tls: raw.tls.as_ref().map(|t| PeerTls {
            cert: d.path(&t.cert),
            key: d.path(&t.key),
            ca: d.path(&t.ca),
        }),
        allow_even_members: raw.allow_even_members.unwrap_or(false),
    }
}

pub(super) fn etcd(d: &mut Diags, raw: &RawEtcd) -> Option<EtcdSpec> {
    if raw.endpoints.is_empty() {
        d.error("etcd.endpoints", "at least one endpoint is needed");
    }
    let endpoints: Vec<Option<Uri>> = raw
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let key = format!("etcd.endpoints[{i}]");
            let url = origin_url(d, &key, e)?;
            if url.scheme_str() == Some("https") {
                // The etcd backend speaks to etcd's HTTP gateway in plain HTTP.
                d.error(&key, "https:// endpoints are not supported; use http:// (etcd on loopback or a private network)");
                return None;
            }
            Some(url)
        })
        .collect();
    Some(EtcdSpec {
        endpoints: endpoints.into_iter().collect::<Option<_>>()?,
        prefix: raw
            .prefix
            .clone()
            .unwrap_or_else(|| "/breakwater/leases/".to_owned()),
        username: raw.username.clone(),
        password: raw.password.clone(),
    })
}

/// What each lease's backend and follower policy require of `cluster`/`etcd`.
pub(super) fn lease_needs(
    d: &mut Diags,
    leases: &[Option<LeaseSpec>],
    cluster_set: bool,
    cluster: &Option<ClusterSpec>,
    etcd_set: bool,
) {
    let uses_peers = leases
        .iter()
        .flatten()
        .any(|l| l.backend == LeaseBackend::Peers);
    if let (true, Some(c)) = (uses_peers, cluster) {
        peer_members(d, c);
    }
    for lease in leases.iter().flatten() {
        let key = format!("leases.{}", lease.name);
        let peers = match lease.backend {
            LeaseBackend::Local => continue,
            LeaseBackend::Peers => true,
            LeaseBackend::Etcd => false,
        };
        if !peers && !etcd_set {
            d.error(
                format_args!("{key}.backend"),
                "`backend: etcd` needs an `etcd` section",
            );
        }
        if !cluster_set {
            d.error(
                format_args!("{key}.backend"),
                "a shared lease needs a `cluster` section naming this node",
            );
        }
        let Some(c) = cluster else { continue };
        let follower = lease.on_follower;
        let needs = [
            (peers && c.listen.is_none(), "cluster.listen"),
            (peers && c.advertise.is_none(), "cluster.advertise"),
            (peers && c.tls.is_none(), "cluster.tls"),
            (peers && c.state_dir.is_none(), "cluster.state_dir"),
            (peers && c.peers.is_empty(), "cluster.peers"),
            (
                follower == OnFollower::Forward && c.forward_url.is_none(),
                "cluster.forward_url",
            ),
            (
                follower == OnFollower::Redirect && c.public_url.is_none(),
                "cluster.public_url",
            ),
        ];
        for (_, needed) in needs.iter().filter(|(missing, _)| *missing) {
            d.error(
                &key,
                format_args!("needs `{needed}` for its backend and on_follower settings"),
            );
        }
    }
}

/// What the `peers` backend needs of the member list: ids a certificate can
/// name (the transport identifies peers by DNS SAN), distinct even ignoring
/// case (so is a DNS name), and an odd count unless allowed.
fn peer_members(d: &mut Diags, c: &ClusterSpec) {
    let mut keyed = vec![("cluster.node_id".to_owned(), c.node_id.as_str())];
    for (i, p) in c.peers.iter().enumerate() {
        let key = item("cluster.peers", i, Some(&p.id));
        keyed.push((format!("{key}.id"), p.id.as_str()));
    }
    for (i, (key, id)) in keyed.iter().enumerate() {
        if let Err(why) = dns_id(id) {
            d.error(
                key,
                format_args!(
                    "{id:?} cannot be a peer id: {why}; peers identify each other by a DNS \
                     name in their certificates, so use letters, digits, `-` and `.`"
                ),
            );
            continue;
        }
        let twin = keyed[..i]
            .iter()
            .find(|(_, other)| *other != *id && other.eq_ignore_ascii_case(id));
        if let Some((other_key, other)) = twin {
            d.error(
                key,
                format_args!(
                    "{id:?} differs from {other:?} ({other_key}) only in case; \
                     certificates name hosts without case"
                ),
            );
        }
    }
    let members = keyed.len();
    if members % 2 == 0 && !c.allow_even_members {
        d.error(
            "cluster.peers",
            format_args!(
                "{members} members (node_id and {} peers): an even count tolerates no more \
                 failures than {} members and splits into halves where no side has a \
                 majority; add or remove a peer, or set `cluster.allow_even_members: true`",
                members - 1,
                members - 1
            ),
        );
    }
}

/// Whether `id` is DNS-name-like: dot-separated labels of ASCII letters,
/// digits and `-`, each 1..=63 long and not starting or ending with `-`;
/// at most 253 bytes in all.
fn dns_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("it is empty");
    }
    if id.len() > 253 {
        return Err("it is longer than 253 bytes");
    }
    for label in id.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (a leading, trailing or double `.`)");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("it holds a character other than a letter, digit, `-` or `.`");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with `-`");
        }
    }
    Ok(())
}
