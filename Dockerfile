# Likeness service image: `likeness serve trainer|inference|gallery|all` on NVIDIA GPUs (and on CPU for dev).
#
#   docker build -t likeness:0.1.0 .
#   docker run --gpus all -p 50051:50051 -p 9090:9090 -v likeness-data:/var/lib/likeness likeness:0.1.0
#
# The torch wheel carries its own CUDA runtime and cuDNN (the nvidia-* wheels it depends on), so the base image is
# CUDA's small `base` flavour: it adds the NVIDIA container-runtime wiring (NVIDIA_VISIBLE_DEVICES,
# NVIDIA_DRIVER_CAPABILITIES) and CUDA's forward-compatibility libraries without a second copy of cuDNN. Keep its
# CUDA major equal to the one of the torch build (torch 2.13 on the default index: CUDA 13, driver >= 580). For an
# older driver build a cu12x torch instead (see docs/deployment.md):
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 --build-arg TORCH_VERSION=2.13.0+cu128 \
#   --build-arg PIP_EXTRA_INDEX_URL=<PyTorch's cu128 wheel index>
#
# Runtime layout, so the root filesystem can be mounted read-only: everything the services write goes to
#   /var/lib/likeness    shared storage (LIKENESS_STORAGE_URL; a ReadWriteMany volume, or unused with s3://)
#   /var/cache/likeness  caches: materialised models, Hugging Face and torch caches (an emptyDir on Kubernetes)
#   /tmp                 scratch (an emptyDir on Kubernetes)
# and base models are read from /models (a read-only volume).
#
# No HEALTHCHECK: on Kubernetes the kubelet's native gRPC probes query the standard grpc.health.v1 service on
# port 50051 and a Docker HEALTHCHECK is ignored there. For plain Docker, `grpcurl -plaintext localhost:50051
# grpc.health.v1.Health/Check` from the host does the same.

ARG CUDA_IMAGE=nvidia/cuda:13.0.0-base-ubuntu24.04

# ---------------------------------------------------------------------------------------------------------------
# python: the distribution's Python on the CUDA base, shared by the build and runtime stages so the virtual
# environment's interpreter path is the same in both.
FROM ${CUDA_IMAGE} AS python

# Versions are not pinned: the distribution's security updates of Python should be picked up by every rebuild,
# and Ubuntu's archive drops superseded versions, which would break a pinned build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------------------
FROM python AS build

# Unpinned for the same reason as above; only the build stage needs venv support.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# torch first, in its own layer: it is by far the largest download and changes less often than the code.
# PIP_EXTRA_INDEX_URL, when given as a build argument, reaches pip as an environment variable (another CUDA build).
ARG TORCH_VERSION=2.13.0
ARG PIP_EXTRA_INDEX_URL
RUN pip install "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY services ./services
COPY clients/python ./clients/python
# The client package first: it owns the API's generated modules and error classes, and is not on an index.
# s3: object storage; gallery: semantic prompt search. open-clip-torch ships CLIP's BPE vocabulary used by the
# tokenizer; --no-deps because its dependencies would pull torchvision, which Likeness does not use.
RUN pip install -c constraints.txt ./clients/python \
    && pip install -c constraints.txt ".[s3,gallery,studio]" \
    && pip install --no-deps "open-clip-torch>=2.24,<4" \
    && python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------------------------------------------------------
FROM python AS runtime

LABEL org.opencontainers.image.title="likeness" \
      org.opencontainers.image.description="Personalized text-to-image generation (DreamBooth) gRPC services" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed uid/gid that matches runAsUser/fsGroup in deploy/base, so mounted volumes are writable.
RUN groupadd --system --gid 10001 likeness \
    && useradd --system --uid 10001 --gid likeness --home-dir /tmp --no-create-home --shell /usr/sbin/nologin likeness \
    && mkdir -p /var/lib/likeness /var/cache/likeness /models \
    && chown likeness:likeness /var/lib/likeness /var/cache/likeness

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    LIKENESS_STORAGE_URL=/var/lib/likeness \
    LIKENESS_CACHE_DIR=/var/cache/likeness \
    HF_HOME=/var/cache/likeness/huggingface \
    HF_HUB_OFFLINE=1 \
    TORCH_HOME=/var/cache/likeness/torch \
    TRITON_CACHE_DIR=/var/cache/likeness/triton \
    XDG_CACHE_HOME=/var/cache/likeness/xdg \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9090

# The server installs its own SIGTERM handler (drain, then stop), so it runs directly as PID 1.
ENTRYPOINT ["likeness"]
CMD ["serve", "all"]
