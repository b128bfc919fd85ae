# syntax=docker/dockerfile:1
# Tollgate gateway image. Two stages: the build stage resolves the runtime dependencies of
# pyproject.toml with requirements.lock as the constraint file (every version as locked; the
# lock's dev-only packages stay out), the runtime stage copies that virtualenv and runs as an
# unprivileged user. Build: docker build -t tollgate .   Run: see docker-compose.yml.
#
# The base image is pinned by exact tag; pin it by digest as well in your registry mirror
# (python:3.11.11-slim-bookworm@sha256:...) — the digest could not be looked up from the
# machine this file was written on.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 UV_NO_CACHE=1 UV_COMPILE_BYTECODE=1
RUN python -m pip install "uv==0.13.9"
WORKDIR /src
# dependencies first (their layer is reused while only the code changes); torch comes from the
# CPU wheel index, as in the lock (torch==...+cpu): the default wheel would pull CUDA libraries
COPY requirements.lock pyproject.toml README.md ./
RUN python -m uv venv /opt/venv \
 && python -m uv pip install --python /opt/venv/bin/python \
      --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match \
      --constraint requirements.lock --requirement pyproject.toml
COPY gateway ./gateway
COPY policies ./policies
COPY predictors ./predictors
COPY migrations ./migrations
RUN python -m uv pip install --python /opt/venv/bin/python --no-deps .

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 tollgate \
 && useradd --system --uid 10001 --gid tollgate --home-dir /app --shell /usr/sbin/nologin tollgate \
 && mkdir -p /app/var \
 && chown tollgate:tollgate /app/var
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root config.yaml /app/config.yaml
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TOLLGATE_CONFIG=/app/config.yaml \
    TOLLGATE_CACHE_DIR=/app/var/cache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
USER 10001:10001
VOLUME ["/app/var"]
EXPOSE 4000
HEALTHCHECK --interval=10s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:4000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["tollgate"]
CMD ["serve", "--host", "0.0.0.0", "--port", "4000"]
