# syntax=docker/dockerfile:1
#
# The leafcache image: one static-enough binary on debian:bookworm-slim, run as
# an unprivileged user, `leafcache serve` by default.
#
#   docker build -t leafcache .
#   docker run --rm -p 8080:8080 \
#     -e LEAFCACHE_UPSTREAM=http://backend:8000 -e REDIS_URL=redis://redis:6379 leafcache
#
# Configuration (SPEC section 1; flags override the environment, which
# overrides the file):
# - File: mount a proxy.toml, e.g. at /etc/leafcache/proxy.toml, and pass
#   `serve --config /etc/leafcache/proxy.toml` (k8s/ and the Cloud Run service
#   do). Without --config, ./proxy.toml in the working directory
#   (/var/lib/leafcache) is used if present, else the built-in defaults (the
#   repository's proxy.toml).
# - Environment: REDIS_URL, LEAFCACHE_UPSTREAM, LEAFCACHE_LISTEN, PORT (Cloud
#   Run's: listen on 0.0.0.0:$PORT), LEAFCACHE_ADMIN_TOKEN, RUST_LOG. Logs are
#   JSON lines on stderr when stderr is not a terminal.
# - The spool (events waiting while Redis is unreachable) must be writable by
#   the user: /var/lib/leafcache/spool is, and is where the built-in defaults
#   put it. A mounted config keeps its spool_dir there (or on a volume), never
#   next to a read-only mounted config. A spool dir that cannot be created
#   stops `serve` at startup.
# - Ports: 8080 clients, 9091 the admin listener (/healthz, /readyz, /metrics,
#   /v1). The admin listener binds 127.0.0.1 unless the config says otherwise;
#   for probes from outside the container it must bind 0.0.0.0, which requires
#   admin_token (or LEAFCACHE_ADMIN_TOKEN).
#
# The entrypoint is the binary and the default command `serve`, so the same
# image runs the batch commands: `docker run leafcache export --from ...`,
# `docker run leafcache check-config /etc/leafcache/proxy.toml`. The runtime
# image keeps /bin/sh and GNU date on purpose: the daily export job computes
# "yesterday" with them (k8s/cronjob-export.yaml); a distroless image has no
# shell for that.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src

# Dependencies first: a stub crate with the real manifest and lock file builds
# every dependency into a layer that is rebuilt only when Cargo.toml or
# Cargo.lock change, not on every source edit. The registry cache mount keeps
# downloaded crates across builds that do rebuild it.
COPY Cargo.toml Cargo.lock ./
RUN --mount=type=cache,id=leafcache-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    mkdir -p src bench \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > bench/event_writer.rs \
    && cargo build --release --locked --bin leafcache

# The real sources. The stubs were written after these files' checkout time,
# so they are touched: cargo compares modification times and would otherwise
# keep the stub build.
COPY src ./src
RUN --mount=type=cache,id=leafcache-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin leafcache \
    && install -D -m 0755 target/release/leafcache /out/leafcache \
    && /out/leafcache --version

FROM debian:${DEBIAN_RELEASE}-slim AS runtime

LABEL org.opencontainers.image.title="leafcache" \
      org.opencontainers.image.description="A caching, logging sidecar for search APIs"

# ca-certificates: rediss:// without [redis] tls_ca_file, and an https://
# backend (beside [upstream] ca_file), trust the system roots (/etc/ssl/certs). Versions are not pinned: the Debian release is, and
# security updates should flow in on rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify the user and
# a fsGroup can match it.
RUN groupadd --system --gid 10001 leafcache \
    && useradd --system --uid 10001 --gid leafcache --no-create-home \
        --home-dir /var/lib/leafcache --shell /usr/sbin/nologin leafcache \
    && install -d -o leafcache -g leafcache -m 0750 /var/lib/leafcache /var/lib/leafcache/spool \
    && install -d -m 0755 /etc/leafcache

COPY --from=build /out/leafcache /usr/local/bin/leafcache

USER 10001:10001
WORKDIR /var/lib/leafcache
EXPOSE 8080 9091

# mimalloc returns freed pages at once rather than after its default 1 s: while the
# search log spills to the spool and replays it (Redis stalled or slow), its
# multi-megabyte record buffers otherwise stay in RSS (with Redis paused 8 s
# under load: VmHWM 316 MiB by default, 204 MiB with this, against a pod
# limit of 384 MiB). It costs CPU where the search log allocates and frees
# those buffers: ~10% more CPU per logged request (bench/ab.sh log), nothing
# measurable on hits and misses without logging. docs/sizing.md.
ENV MIMALLOC_PURGE_DELAY=0

# leafcache handles SIGTERM itself (stop accepting, finish requests in flight
# for up to 10 s, flush the event queue to Redis or the spool, exit 0), so it
# runs as PID 1 without an init shim.
ENTRYPOINT ["leafcache"]
CMD ["serve"]
