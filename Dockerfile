# syntax=docker/dockerfile:1
# healthimaging-exporter: a Prometheus exporter for AWS HealthImaging.
#
#   docker build -t healthimaging-exporter .
#   podman build --format docker -t healthimaging-exporter .   (keeps the HEALTHCHECK)
#   docker run -v ./config.yaml:/etc/healthimaging-exporter/config.yaml:ro -p 9890:9890 \
#       -v hie-state:/var/lib/healthimaging-exporter healthimaging-exporter
#
# Needs BuildKit (the default builder of Docker >= 23) for the bind mount of the install step.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- builder: the project's wheel and the wheels of its dependencies -----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
# Every dependency ships binary wheels for this platform, so no compiler is installed anywhere.
RUN python -m pip wheel --wheel-dir /wheels . \
    && ls /wheels/healthimaging_exporter-*.whl

# --- runtime: the installed wheels, a non-root user, nothing to build with -----------------------
FROM ${PYTHON_IMAGE}
ARG APP_UID=10001
LABEL org.opencontainers.image.title="healthimaging-exporter" \
      org.opencontainers.image.description="Prometheus exporter for AWS HealthImaging image set versions" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HEALTHCHECK_URL=http://127.0.0.1:9890/-/healthy

RUN groupadd --system --gid "${APP_UID}" exporter \
    && useradd --system --uid "${APP_UID}" --gid exporter --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin exporter \
    && mkdir -p /var/lib/healthimaging-exporter /etc/healthimaging-exporter \
    && chown "${APP_UID}:${APP_UID}" /var/lib/healthimaging-exporter

# Only the wheels built above, never an index: the image gets exactly what the builder resolved.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-index --find-links=/wheels /wheels/healthimaging_exporter-*.whl \
    && healthimaging-exporter --version

USER ${APP_UID}:${APP_UID}
WORKDIR /var/lib/healthimaging-exporter
# The state (SQLite) lives here; the config is mounted read-only at
# /etc/healthimaging-exporter/config.yaml (state.path: /var/lib/healthimaging-exporter/state.db).
VOLUME ["/var/lib/healthimaging-exporter"]
EXPOSE 9890

# buildah/podman: build with `--format docker`; their default OCI format has no HEALTHCHECK and
# drops this one (docs/deployment.md). No curl in slim images: probe with Python. Set
# HEALTHCHECK_URL when the listen address changes or the web config enables TLS (an https URL) or
# basic auth covers /-/healthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r; sys.exit(r.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4).status != 200)"]

ENTRYPOINT ["healthimaging-exporter"]
CMD ["--config", "/etc/healthimaging-exporter/config.yaml"]
