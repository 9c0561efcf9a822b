# kms-cluster container image: `kmsd` (entrypoint) and `kmsctl`, on Debian bookworm-slim.
#
#   docker build -t kms-cluster:<version> .          # default target `runtime`: builds from source
#   ./docker/build-local.sh                          # no registry: see that script
#
# A container listens on 0.0.0.0 (KMS 1688, admin API and /metrics 9688, Raft/gRPC 9689),
# keeps its state in the volume /var/lib/kmsd and runs as the unprivileged user kmsd
# (uid/gid 10001). Every kmsd setting is a KMSD_* environment variable or a flag after the
# image name (README, "Configuration reference"); see docker-compose.yml for a 3-node cluster.
#
# Stages (the order matters for the classic builder, which builds every stage up to the
# target, used ones or not):
#   runtime-base      Debian slim, ca-certificates, user, volume, ports, healthcheck
#   runtime-prebuilt  runtime-base + binaries built on the host (target/docker-prebuilt/,
#                     docker/build-local.sh); needs no Rust image
#   build             cargo build --release -p kmsd -p kmsctl in the Rust image
#   runtime           runtime-base + the binaries of `build` (default target)

ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.89-bookworm

FROM ${BASE_IMAGE} AS runtime-base
# ca-certificates for TLS exporters (OTLP over https); installed only if the base lacks it.
RUN set -eu; \
    if ! dpkg-query -W -f '${Status}' ca-certificates 2>/dev/null | grep -q 'ok installed'; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    groupadd --system --gid 10001 kmsd; \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/kmsd --no-create-home \
        --shell /usr/sbin/nologin kmsd; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/kmsd
ENV KMSD_LISTEN=0.0.0.0:1688 \
    KMSD_ADMIN_LISTEN=0.0.0.0:9688 \
    KMSD_CLUSTER_LISTEN=0.0.0.0:9689 \
    KMSD_DATA_DIR=/var/lib/kmsd
VOLUME ["/var/lib/kmsd"]
WORKDIR /var/lib/kmsd
EXPOSE 1688 9688 9689
USER 10001:10001
# Healthy = ready: GET /readyz answers 200 (docker/kms-healthcheck; the slim image has no
# curl, the script uses bash's /dev/tcp).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["bash", "/usr/local/bin/kms-healthcheck"]
ENTRYPOINT ["/usr/local/bin/kmsd"]

FROM runtime-base AS runtime-prebuilt
# The [t] globs match nothing when there are no prebuilt binaries, which the classic
# builder accepts in a COPY with another source: so it passes this stage on its way to the
# default target. docker/build-local.sh makes sure the binaries are there.
COPY docker/kms-healthcheck target/docker-prebuil[t]/kmsd target/docker-prebuil[t]/kmsctl \
    /usr/local/bin/

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY services services
COPY tests tests
RUN cargo build --release --locked -p kmsd -p kmsctl \
    && install -D -m 0755 target/release/kmsd target/release/kmsctl -t /out/

FROM runtime-base AS runtime
COPY docker/kms-healthcheck /usr/local/bin/
COPY --from=build /out/kmsd /out/kmsctl /usr/local/bin/
