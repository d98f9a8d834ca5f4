# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain, ship only the binary on a slim
# Debian with a non-root user. tests/image.rs assembles what the COPY lines below copy
# (less .dockerignore) and runs cargo on it, so a file the build needs cannot be left out.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them all. Cargo reads the
# whole workspace's manifest, so the loadgen member and the bench need stand-in targets.
COPY Cargo.toml Cargo.lock ./
COPY third_party ./third_party
COPY loadgen/Cargo.toml ./loadgen/
RUN mkdir -p src benches loadgen/src \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > benches/exposition.rs \
    && echo 'fn main() {}' > loadgen/src/main.rs && touch loadgen/src/lib.rs \
    && cargo build --release --locked --bin messaging-exporter \
    && rm -rf src benches loadgen/src
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
COPY loadgen ./loadgen
# touch: make cargo notice the real sources are newer than the stand-ins' build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin messaging-exporter

FROM debian:bookworm-slim
# ca-certificates: the bundle that DATABASE_URL's sslrootcert=system names.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/messaging-exporter \
       --create-home --shell /usr/sbin/nologin exporter
COPY --from=builder /src/target/release/messaging-exporter /usr/local/bin/messaging-exporter
# Numeric, so that Kubernetes' runAsNonRoot can tell that the user is not root.
USER 10001:10001
# The default SQLite database (when DATABASE_URL is not set) is created here.
WORKDIR /var/lib/messaging-exporter
ENV LISTEN_ADDR=0.0.0.0:9469
EXPOSE 9469
ENTRYPOINT ["/usr/local/bin/messaging-exporter"]
