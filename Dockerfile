# One image for the operator and the runtime: `hda operator`, `hda ingest`, `hda worker`,
# `hda output`. Build: `make image` (BuildKit, no Docker daemon: `hda cluster images`), or with
# Docker: `make image-docker` (`docker build -t hyperdrive-accelerator:0.1.0 .`).
#
# Runs as a non-root numeric user (so kubelet can verify runAsNonRoot) and works with a
# read-only root filesystem: bytecode is compiled at build time, nothing is written outside
# /tmp (an emptyDir in the chart) at run time.
#
# No `# syntax=` line: it would make BuildKit fetch a frontend image from Docker Hub; the
# Dockerfile frontend built into BuildKit (and Docker) reads everything used here.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# A wheelhouse, if the build is given one as the named context `wheels`
# (`docker buildx build --build-context wheels=DIR .`, or buildctl's
# `--opt context:wheels=local:wheels --local wheels=DIR`): pip then installs from it only,
# with --no-index. Without it this stage is empty and pip uses its index.
FROM scratch AS wheels

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/hda
WORKDIR /src
# Dependencies first, from pyproject.toml alone: this layer is reused when only the code changes.
COPY pyproject.toml README.md ./
RUN --mount=type=bind,from=wheels,target=/wheels \
    if [ -n "$(ls -A /wheels)" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
 && /opt/hda/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
 && /opt/hda/bin/pip install -r /tmp/requirements.txt
COPY operator/ ./operator/
RUN --mount=type=bind,from=wheels,target=/wheels \
    if [ -n "$(ls -A /wheels)" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheels; fi \
 && /opt/hda/bin/pip install --no-deps . \
 && /opt/hda/bin/pip check \
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
