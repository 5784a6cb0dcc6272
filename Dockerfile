# semcache as a container: the caching proxy, its models prepared at build time so that the
# container starts without network. CPU image by default; a CUDA image with
#   docker build --build-arg DEVICE=cuda -t semcache:cuda .
# The bundled backend (torch, SmolLM2) is in the image by default; for an external upstream
# (OpenAI, vLLM, ...) leave it out, which leaves out torch too:
#   docker build --build-arg BACKEND=0 -t semcache:proxy .
#   docker run -e SEMCACHE__UPSTREAM__BASE_URL=https://api.openai.com/v1 ... semcache:proxy
# Configuration by environment: SEMCACHE__SECTION__KEY (e.g. SEMCACHE__REDIS__URL).
#
# The build runs scripts/prepare, the script `make install` / `make serve` run, so the image
# is set up exactly as the tested development set-up is.

ARG DEVICE=cpu
ARG BACKEND=1

# ---- bases: the same for the build and the runtime stage of each kind -------------------
# Debian's redis-server for redis.url = "embedded", so that nothing builds one from source.
FROM python:3.12.8-slim-bookworm AS base-cpu
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*
# torch, where the backend is in the image, is the CPU build from PyTorch's CPU index.
ENV SEMCACHE_DEVICE=cpu

# One CUDA major throughout: this base's CUDA 12, and scripts/prepare's CUDA 12 builds of
# torch (PyTorch's cu126 index), onnxruntime-gpu (1.19-1.23 on PyPI) and faiss-gpu (CUDA 12).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-cuda
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
       python3 python3-venv ca-certificates redis-server \
    && rm -rf /var/lib/apt/lists/*
ENV SEMCACHE_DEVICE=cuda \
    SEMCACHE_CUDA=12

# ---- build: venv, dependencies and models through scripts/prepare -----------------------
# Every dependency is a wheel (redis-server comes from the base), so no compiler is needed.
# hadolint ignore=DL3006
FROM base-${DEVICE} AS build
ARG BACKEND
WORKDIR /opt/semcache
COPY pyproject.toml README.md Makefile ./
COPY scripts/ scripts/
COPY proxy/ proxy/
COPY embeddings/ embeddings/
COPY index/ index/
COPY backend/ backend/
COPY loadtest/ loadtest/
# Runtime dependencies only (no test extra); models into the image's data directory: the
# encoder always, the backend's weights with BACKEND=1 (the GGUF is dropped once converted).
RUN PYTHON=python3 VENV=/opt/semcache/.venv SEMCACHE_EXTRAS="" SEMCACHE_EDITABLE=0 \
    SEMCACHE_BACKEND=${BACKEND} SEMCACHE_DATA_DIR=/var/lib/semcache scripts/prepare \
    && rm -f /var/lib/semcache/backend/*.gguf \
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
