# syntax=docker/dockerfile:1
# Multi-stage build: compile with the Rust toolchain, ship only the binary on a slim
# Debian with a non-root user.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them all.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY src ./src
COPY migrations ./migrations
# touch: make cargo notice the real sources are newer than the stub's build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/messaging-exporter \
       --create-home --shell /usr/sbin/nologin exporter
COPY --from=builder /src/target/release/messaging-exporter /usr/local/bin/messaging-exporter
USER exporter
# The default SQLite database (when DATABASE_URL is not set) is created here.
WORKDIR /var/lib/messaging-exporter
ENV LISTEN_ADDR=0.0.0.0:9469
EXPOSE 9469
ENTRYPOINT ["/usr/local/bin/messaging-exporter"]
