# syntax=docker/dockerfile:1
# lookout-ingester image: build with the Rust toolchain, run on a slim Debian.
#   docker build -t lookout-ingester .
#   docker run --rm -e DATABASE_URL=... -e PULSAR_URL=... -p 9002:9002 lookout-ingester run
# (docker-compose.yml at the repo root wires it to Postgres and Pulsar.)

# ---- build ----
# rust:1 on bookworm, so the binary links against the same glibc as the runtime stage.
FROM rust:1-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lookout-ingester \
 && install -m 0755 target/release/lookout-ingester /usr/local/bin/lookout-ingester

# ---- runtime ----
FROM debian:bookworm-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin ingester
COPY --from=build /usr/local/bin/lookout-ingester /usr/local/bin/lookout-ingester
USER ingester
# /metrics, /healthz, /readyz
EXPOSE 9002
ENTRYPOINT ["/usr/local/bin/lookout-ingester"]
CMD ["run"]
