# tillstream: every binary in one image; docker-compose.yml and deploy/k8s/ pick the process
# with `command`. Build: docker build -t tillstream:local .
#
# The cache mounts (BuildKit, the default builder) keep the cargo registry and target/
# between builds, so a rebuild after a code change compiles only the workspace crates.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin tillstream \
        --bin tillstream-user \
        --bin tillstream-order \
        --bin tillstream-relay \
        --bin tillstream-projector \
        --bin tillstream-gateway \
 && mkdir -p /out \
 && cp target/release/tillstream \
       target/release/tillstream-user \
       target/release/tillstream-order \
       target/release/tillstream-relay \
       target/release/tillstream-projector \
       target/release/tillstream-gateway \
       /out/

FROM debian:bookworm-slim
# ca-certificates for TLS to outside services; curl for the container health checks
# (GET /readyz on the ops port).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed uid/gid, so volumes and Kubernetes securityContext can name it. /data belongs to
# it: a fresh named volume mounted there takes this ownership.
RUN groupadd --system --gid 10001 tillstream \
 && useradd --system --uid 10001 --gid tillstream --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin tillstream \
 && mkdir -p /data \
 && chown tillstream:tillstream /data
COPY --from=builder /out/ /usr/local/bin/
# MIMALLOC_ALLOW_THP=0: no transparent huge pages, also for what mimalloc maps before
# `main` (each process turns them off itself after that; docs/deployment.md, "Memory").
ENV TILLSTREAM_DATA_DIR=/data \
    RUST_LOG=info \
    MIMALLOC_ALLOW_THP=0
WORKDIR /data
USER 10001:10001
# gRPC user/order, gateway HTTP, ops ports (each process listens on 127.0.0.1 unless its
# *_ADDR variable says 0.0.0.0, as the compose file and the manifests do).
EXPOSE 50051 50052 8080 9101 9102 9103 9104
CMD ["tillstream", "--help"]
