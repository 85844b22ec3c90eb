# syntax=docker/dockerfile:1
#
# breakwater container image.
#
#   docker build -t breakwater .
#   docker run --rm -p 8000:8000 -p 9901:9901 \
#       -v "$PWD/my-breakwater.yaml:/etc/breakwater/breakwater.yaml:ro" breakwater
#
# NOTE: the bundled default config (config/breakwater.yaml) listens on
# 127.0.0.1, which is unreachable through published ports from outside the
# container. In a container, mount your own config over
# /etc/breakwater/breakwater.yaml whose listeners bind 0.0.0.0 (or [::]), or
# run the proxy in the same network namespace as the service it fronts (e.g. a
# Kubernetes sidecar, where 127.0.0.1 is shared with the application).

############################################################################
# Build stage
############################################################################
FROM rust:1.95-slim-bookworm AS builder

WORKDIR /build

# 1. Dependency layer: build every dependency against stub targets so that this
#    layer is reused until Cargo.toml or Cargo.lock changes. The stubs mirror
#    the crate's targets (lib, bin and the `hot_path` bench, which Cargo needs
#    to exist to parse the manifest). Afterwards only breakwater's own
#    artifacts are removed, so the real build below cannot mistake the stub
#    output for up to date, whatever the mtimes of the copied sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked \
    && cargo clean --release --locked --package breakwater \
    && rm -rf src benches

# 2. The crate itself. config/ is needed at compile time:
#    src/config/mod.rs does include_str!("../../config/breakwater.yaml").
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin breakwater \
    && install -D -m 0755 target/release/breakwater /out/breakwater

############################################################################
# Runtime stage
############################################################################
FROM debian:bookworm-slim AS runtime

# Nothing is installed with apt: the binary needs only glibc and libgcc_s,
# which the base image has. CA roots (for TLS to upstreams) come from the
# builder image's ca-certificates bundle.
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

RUN groupadd --system --gid 10001 breakwater \
    && useradd --system --uid 10001 --gid breakwater --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin breakwater

COPY --from=builder /out/breakwater /usr/local/bin/breakwater
COPY config/breakwater.yaml /etc/breakwater/breakwater.yaml

USER 10001:10001

# 8000: proxy listener; 9901: admin listener (/metrics, health).
EXPOSE 8000 9901

ENTRYPOINT ["/usr/local/bin/breakwater"]
CMD ["run", "-c", "/etc/breakwater/breakwater.yaml"]
