# syntax=docker/dockerfile:1
# One image for the operator and the runtime: `hda operator`, `hda ingest`, `hda worker`,
# `hda output`. Build: `make image` (or `docker build -t hyperdrive-accelerator:0.1.0 .`).
#
# Runs as a non-root numeric user (so kubelet can verify runAsNonRoot) and works with a
# read-only root filesystem: bytecode is compiled at build time, nothing is written outside
# /tmp (an emptyDir in the chart) at run time.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/hda
WORKDIR /src
# Metadata first, so the dependency layer is reused when only the code changes.
COPY pyproject.toml README.md ./
COPY operator/ ./operator/
RUN /opt/hda/bin/pip install --upgrade pip \
 && /opt/hda/bin/pip install . \
 && /opt/hda/bin/python -m compileall -q /opt/hda/lib \
 && /opt/hda/bin/hda --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="HyperDrive Accelerator" \
      org.opencontainers.image.description="HDA operator and runtime (ingest, worker, output)" \
      org.opencontainers.image.licenses="Apache-2.0"
# The chart's podSecurityContext runs as the same user and group.
RUN groupadd --system --gid 10001 hda \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin hda
COPY --from=build /opt/hda /opt/hda
ENV PATH=/opt/hda/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    HDA_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["hda"]
CMD ["--help"]
