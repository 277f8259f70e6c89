# syntax=docker/dockerfile:1
# The gateway's container image: built on Debian 12, run on Debian 12 slim with only the
# runtime libraries, as a non-root user, on a read-only root filesystem if you like.
#
#   docker build -t gateway:0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#   docker run --rm --read-only -p 8080:8080 -e GATEWAY_UPSTREAM=app.internal:8080 gateway:0.1.0
#   docker run --rm --read-only -p 8080:8080 -v $PWD/my.yaml:/etc/gateway/gateway.yaml:ro gateway:0.1.0
#   docker stop -t 30 ...            # SIGTERM drains for up to timeouts.drain (20s)
#
# Docker cannot run on our build machines: every build and install step below is a
# subcommand of scripts/build-image-steps.sh, which CI runs on the host
# (tests/integration/test_packaging.py); scripts/lint-dockerfile.py lints this file.

# Base images pinned to a Debian 12 point release. For reproducible builds pin the digest
# too: --build-arg DEBIAN_VERSION=12.11@sha256:...
ARG DEBIAN_VERSION=12.11

# ---- build: the same dependency step as `make` (scripts/install-deps.sh), then Release ----
FROM debian:${DEBIAN_VERSION} AS build
WORKDIR /src
COPY scripts/install-deps.sh scripts/install-deps.sh
RUN scripts/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN scripts/build-image-steps.sh build /src/build-image \
 && scripts/build-image-steps.sh install /src/build-image/gateway /stage \
 && scripts/build-image-steps.sh verify /stage

# ---- runtime ----
FROM debian:${DEBIAN_VERSION}-slim AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="gateway" \
      org.opencontainers.image.description="Reverse-proxy security gateway: TLS, rate limits, JWT and API keys, CORS, security headers, metrics" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="docker.io/library/debian:${DEBIAN_VERSION}-slim" \
      org.opencontainers.image.documentation="docs/getting-started.md"

# Only the shared libraries the binary links against (checked with ldd by the verify step)
# and the CA bundle.
COPY deploy/docker/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && sed -e 's/#.*//' /tmp/runtime-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt \
 && groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin gateway

COPY --from=build /stage/ /
# The image's one writable place (an access-log file, if you configure one); the default
# configuration writes nothing: logs go to stdout (access) and stderr (application).
RUN chown gateway:gateway /var/log/gateway \
 && /usr/local/bin/gateway --version
VOLUME ["/var/log/gateway"]

USER 10001:10001
WORKDIR /etc/gateway
# 8080: the proxy listener; 9901: admin (/health/*, /metrics), loopback unless
# GATEWAY_ADMIN_ADDRESS says otherwise. Never publish 9901 to the public.
EXPOSE 8080 9901
STOPSIGNAL SIGTERM
# GET /health/live on the admin listener with bash's /dev/tcp (no curl in a slim image).
ENV GATEWAY_HEALTHCHECK_ADDRESS=127.0.0.1:9901
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/gateway-healthcheck"]
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["-c", "/etc/gateway/gateway.yaml"]
