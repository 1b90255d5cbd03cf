# syntax=docker/dockerfile:1
# Both services from one build stage; pick the runtime image with --target:
#
#   docker build -f docker/service.Dockerfile --target command-service -t api-hammer-command-service .
#   docker build -f docker/service.Dockerfile --target query-service   -t api-hammer-query-service .
#
# docker-compose.yml builds both targets; BuildKit runs the shared build stage
# once. The runtime images hold one binary and a healthcheck script on
# debian:bookworm-slim and run as an unprivileged user (uid 10001). No engine
# runs on the project's machines: docker/validate.sh lints this file in CI.

# The toolchain the workspace is built and tested with; the runtime stage is
# the same Debian release, so the binaries find the glibc they were linked to.
FROM rust:1.95-bookworm AS build

# rdkafka builds librdkafka from source with its default features only (no
# cmake, TLS, SASL or curl; see rdkafka-sys' build.rs): make and a C/C++
# compiler, already in this image, and zlib found through pkg-config.
# Versions are not pinned: Debian replaces them with security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

# Release profile as in Cargo.toml, minus what only helps a developer's
# machine: no incremental cache, no debug info in the shipped binaries (their
# symbols stay, so panics still name functions).
ENV CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    CARGO_TERM_COLOR=never

WORKDIR /src
# .dockerignore lets in only the workspace's sources, manifests and migrations.
COPY . .
# The registry and target/ are cache mounts: a rebuild after a source change
# recompiles the workspace's crates, not every dependency.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bins -p command-service -p query-service \
    && mkdir -p /out \
    && cp target/release/command-service target/release/query-service /out/

# ---------------------------------------------------------------------------
# Runtime: the binaries need glibc, libgcc and zlib only, all in the slim
# image, so nothing is installed. bash (also in it) runs the healthcheck.
FROM debian:bookworm-slim AS runtime
RUN groupadd --system --gid 10001 hammer \
    && useradd --system --uid 10001 --gid hammer --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin hammer
# Root-owned and not writable by the service user, like the binaries below.
COPY --chmod=0755 docker/healthcheck.sh /usr/local/bin/healthcheck
USER 10001:10001
# Settings come from the environment only (`<service> --help` lists them);
# inside a container the service must listen on every interface.
# mimalloc (both services) commits memory as it needs it rather than whole
# arenas at once: query-service's peak RSS under 1,700 connections 130 ->
# 100 MB, idle 22 -> 13 MB, lookups unchanged.
ENV RUST_LOG=info \
    MIMALLOC_ARENA_EAGER_COMMIT=0

FROM runtime AS command-service
COPY --from=build /out/command-service /usr/local/bin/command-service
ENV LISTEN_ADDR=0.0.0.0:8091
EXPOSE 8091
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["/usr/local/bin/healthcheck"]
ENTRYPOINT ["/usr/local/bin/command-service"]

# Last stage: also what a build without --target produces.
FROM runtime AS query-service
COPY --from=build /out/query-service /usr/local/bin/query-service
ENV LISTEN_ADDR=0.0.0.0:8092
EXPOSE 8092
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 CMD ["/usr/local/bin/healthcheck"]
# `docker compose exec query-service query-service verify` runs the admin commands.
ENTRYPOINT ["/usr/local/bin/query-service"]
