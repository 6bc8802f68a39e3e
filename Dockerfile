# syntax=docker/dockerfile:1
#
# ghcr.io/sempair/sempair:<version>, the CPU image (`make images`). It serves as
#   * the base image of every Kubeflow pipeline component except train (params.yaml
#     pipeline.base_image). kfp runs `sh -c '... python3 -m kfp.dsl.executor_main ...'` in
#     it with its own command, so the venv's python3 comes first on PATH and there is no
#     ENTRYPOINT;
#   * the TorchServe serving image (k8s/). TorchServe 0.12 has a Java 17 frontend and runs
#     as uid 1000 from /home/model-server (model-store/, tmp/, logs/, and config/, where
#     Kubernetes mounts config.properties).
# Dockerfile.cuda is its twin for the train step. Keep the two in step: tests/test_images.py
# checks what they share.

# ---- builder: /opt/venv with CPU torch and the project ------------------------------------
FROM python:3.11.17-slim-bookworm AS builder

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1

# No compiler and no apt packages here: every compiled dependency ships a cp311 manylinux
# x86_64 wheel (PyAV bundles FFmpeg, faiss-cpu is a wheel). The lock's only sdists,
# antlr4-python3-runtime and kfp-server-api, are pure Python.
ENV PATH=/opt/venv/bin:$PATH

# The venv, a pinned pip, then torch: first, alone and exact, from PyTorch's CPU index.
# PyPI's Linux wheel is the CUDA build, gigabytes of it. The lock has no torch line.
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir pip==26.3 \
 && pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0

WORKDIR /build
COPY pyproject.toml README.md params.yaml ./
COPY requirements/lock.txt requirements/
COPY src/ src/
COPY components/ components/
COPY pipelines/ pipelines/
# Then everything else in one resolve against the lock: sempair, components and pipelines.
# The install is not editable, so /build stays in this stage. params.yaml is copied because
# src/sempair/params.yaml is a symlink to it.
RUN pip install --no-cache-dir -c requirements/lock.txt . \
 && pip check

# ---- runtime: the venv, Java 17 and the model-server user ------------------------------
FROM python:3.11.17-slim-bookworm AS runtime

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Java 17 for TorchServe: Debian bookworm's headless JRE, pinned. When a Debian point release
# replaces this version the build fails; take the new one from
# `apt-cache policy openjdk-17-jre-headless`. Slim images lack man1, and the JRE's postinst
# links into it, so it is created first.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
        openjdk-17-jre-headless=17.0.19+10-1~deb12u2 \
 && rm -rf /var/lib/apt/lists/*

# The user gets a fixed numeric uid/gid so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --gid 1000 model-server \
 && useradd --uid 1000 --gid 1000 --no-log-init --create-home \
        --home-dir /home/model-server --shell /bin/bash model-server \
 && install -d -o 1000 -g 1000 -m 0755 \
        /home/model-server/model-store /home/model-server/tmp \
        /home/model-server/logs /home/model-server/config

# The venv stays root-owned, so it is read-only for the user.
COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/model-server \
    TEMP=/home/model-server/tmp

# These come last so that a new revision does not invalidate the layers above.
ARG SEMPAIR_VERSION=0.1.0
ARG SEMPAIR_GIT_REV=
LABEL org.opencontainers.image.title="sempair" \
      org.opencontainers.image.description="sempair pipeline steps and TorchServe serving, CPU" \
      org.opencontainers.image.source="https://github.com/sempair/sempair" \
      org.opencontainers.image.version="${SEMPAIR_VERSION}" \
      org.opencontainers.image.revision="${SEMPAIR_GIT_REV}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The lineage code (sempair.lineage) reads the code revision from here: images carry no .git.
ENV SEMPAIR_GIT_REV=${SEMPAIR_GIT_REV}

WORKDIR /home/model-server
USER 1000
CMD ["sempair", "--help"]
