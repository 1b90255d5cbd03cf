# Multi-stage build of one service: `--build-arg SERVICE=command-service` or
# `query-service`. The runtime image holds only the binary and runs as a
# non-root user.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev libsasl2-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG SERVICE
RUN cargo build --release --locked -p ${SERVICE} && cp target/release/${SERVICE} /service

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl libcurl4 libsasl2-2 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 hammer
COPY --from=build /service /usr/local/bin/service
USER hammer
ENV LISTEN_ADDR=0.0.0.0:8080
ENTRYPOINT ["/usr/local/bin/service"]
