# syntax=docker/dockerfile:1
# Trygg's production image. Built by `docker compose build` (docker-compose.yml)
# or `docker build -t trygg .`; see docs/operators.md.
#
# Two stages: `build` resolves the locked dependencies with uv into /app/.venv;
# the final image holds only that virtual environment, no uv, no compiler, no
# source tree, and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build

# uv from PyPI, pinned so that a rebuild resolves the same way.
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"

# Use the image's Python (never download one), copy files out of uv's cache
# instead of hard-linking (the cache is a build mount), precompile bytecode
# so the first start is not slower.
ENV UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/app/.venv

WORKDIR /src

# Dependencies first, from the lock file only: this layer is reused until
# pyproject.toml or uv.lock change.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, installed as a wheel (not editable), so the
# virtual environment does not need /src at run time. .dockerignore keeps
# secrets, local data and tests out of the build context.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable


FROM ${PYTHON_IMAGE}

# An unprivileged user with a fixed uid, and its data folder (TRYGG_DATA_DIR:
# the local spool). A named volume mounted on /data starts with this owner.
RUN groupadd --system --gid 10001 trygg \
    && useradd --system --uid 10001 --gid trygg --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin trygg \
    && install -d -o trygg -g trygg -m 0750 /data

COPY --from=build /app/.venv /app/.venv

ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TRYGG_DATA_DIR=/data \
    TRYGG_HTTP_HOST=0.0.0.0 \
    TRYGG_HTTP_PORT=8000 \
    TRYGG_LOG_FORMAT=json

WORKDIR /app
USER trygg
EXPOSE 8000

# Liveness from inside the container: GET /healthz. The slim image has no
# curl, so Python does it; urlopen fails on a refused connection, a timeout
# and any HTTP status >= 400.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TRYGG_HTTP_PORT', '8000'), timeout=4)"]

CMD ["trygg", "up"]
