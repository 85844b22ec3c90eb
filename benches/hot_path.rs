//! The per-request hot path without sockets: route matching over a realistic
//! table and the header rewrite applied to every forwarded request.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::header::{HeaderValue, CONNECTION, HOST, TE};
use http::{HeaderMap, Method};

use breakwater::config::{HostMatch, Match, PathMatch};
use breakwater::proxy::router::{first_match, request_host, RequestView};
use breakwater::proxy::upstream::{add_forwarded, strip_hop_by_hop, Forwarded};

fn table() -> Vec<Match> {
    let mut routes = Vec::new();
    for i in 0..20 {
        routes.push(Match {
            host: Some(HostMatch::Suffix(format!(".svc{i}.example.com"))),
            path: Some(PathMatch::Prefix(format!("/api/v{i}"))),
            methods: vec![Method::POST, Method::PUT],
            headers: Vec::new(),
        });
    }
    routes.push(Match {
        path: Some(PathMatch::Prefix("/".into())),
        ..Match::default()
    });
    routes
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(HOST, HeaderValue::from_static("api.svc7.example.com"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    h.insert(TE, HeaderValue::from_static("trailers"));
    h.insert("x-forwarded-for", HeaderValue::from_static("10.1.2.3"));
    h
}

fn bench(c: &mut Criterion) {
    let routes = table();
    let headers = request_headers();
    let uri: http::Uri = "/api/v7/orders/42".parse().expect("uri");
    c.bench_function("route_match_21_routes_last_wins", |b| {
        b.iter(|| {
            let view = RequestView {
                host: request_host(&uri, &headers),
                path: uri.path(),
                method: &Method::GET,
                headers: &headers,
            };
            black_box(first_match(black_box(&routes), &view))
        })
    });
    let client: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    c.bench_function("header_rewrite", |b| {
        b.iter_batched_ref(
            request_headers,
            |h| {
                let host = h.get(HOST).cloned();
                strip_hop_by_hop(h, false);
                add_forwarded(
                    h,
                    &Forwarded {
                        client_ip: client,
                        proto: "http",
                        host: host.as_ref(),
                    },
                );
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
