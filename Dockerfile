# syntax=docker/dockerfile:1
# Build: docker build -t coupa-changefeed .
# Run:   docker run -v cf-state:/var/lib/coupa-changefeed \
#          -v $PWD/config/example.toml:/etc/coupa-changefeed/config.toml:ro \
#          -p 8080:8080 coupa-changefeed
FROM rust:1-slim-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential perl zlib1g-dev && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY coupa-sim coupa-sim
COPY coupa-model coupa-model
COPY benches benches
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/coupa-changefeed changefeed \
    && mkdir -p /var/lib/coupa-changefeed /etc/coupa-changefeed \
    && chown changefeed /var/lib/coupa-changefeed
COPY --from=build /src/target/release/coupa-changefeed /src/target/release/coupa-sim /usr/local/bin/
USER changefeed
VOLUME /var/lib/coupa-changefeed
ENV COUPA_CHANGEFEED_CONFIG=/etc/coupa-changefeed/config.toml \
    COUPA_CHANGEFEED__STATE__DIR=/var/lib/coupa-changefeed \
    COUPA_CHANGEFEED__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
# No curl in the image: the binary probes its own /healthz.
HEALTHCHECK --interval=30s --timeout=6s --start-period=10s --retries=3 \
    CMD ["coupa-changefeed", "health", "--url", "http://127.0.0.1:8080/healthz"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["coupa-changefeed"]
CMD ["run"]
