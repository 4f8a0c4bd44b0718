# syntax=docker/dockerfile:1
# The modellens model service (and, with another command, its load generator).
#
#   docker compose build model           # what `docker compose up --build` does
#   docker build --build-arg PYTHON_IMAGE=python:3.12-slim-trixie -t modellens/model:local .
#
# Two stages: `build` installs the package into a virtualenv and trains the default model; the runtime stage copies
# only the virtualenv and the model onto a fresh slim Python, and runs as an unprivileged user. The base image is
# pinned in .env (PYTHON_IMAGE) and passed in by docker-compose.yml; the default below is the same pin.

ARG PYTHON_IMAGE=python:3.12-slim-trixie

# --- build: dependencies, package, model ----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml alone (with empty packages so the project metadata resolves): this layer
# is rebuilt only when the dependencies change, not on every source edit. The `postgresql` extra (psycopg with its
# own libpq) lets the same image write a PostgreSQL prediction log shared by replicas.
COPY pyproject.toml ./
RUN mkdir service otel \
    && touch service/__init__.py otel/__init__.py \
    && pip install '.[postgresql]' \
    && pip uninstall --yes modellens

# The package itself (no dependency resolution: they are all installed above). `README.m[d]` copies the README
# that pyproject.toml names when it exists, without failing the build when it does not (pyproject.toml always
# matches, so the instruction never has zero sources).
COPY pyproject.toml README.m[d] ./
COPY service ./service
COPY otel ./otel
RUN pip install --no-deps .

# The default model, trained now so the container starts serving at once and every replica serves the same
# version (the model card's content hash). scikit-learn bundles the dataset: no download.
RUN modellens train --if-missing --output /opt/modellens/models/diabetes
# A challenger (another split seed) for shadow mode in the compose stack (MODELLENS_SHADOW_MODEL_DIR).
RUN modellens train --if-missing --seed 1 --name diabetes --output /opt/modellens/models/diabetes-challenger

# --- runtime --------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# An unprivileged user, and the directory for the prediction log (a named volume in docker-compose.yml).
RUN groupadd --system --gid 10001 modellens \
    && useradd --system --uid 10001 --gid modellens --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin modellens \
    && install --directory --owner=modellens --group=modellens --mode=0750 /var/lib/modellens

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/modellens/models /opt/modellens/models

# The settings the service reads (see service/settings.py); compose overrides the tunable ones from .env.
# MODELLENS_HOST is 0.0.0.0 so the port is reachable from other containers; nothing is published unless compose
# says so.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELLENS_MODEL_DIR=/opt/modellens/models/diabetes \
    MODELLENS_HOST=0.0.0.0 \
    MODELLENS_PORT=8000 \
    MODELLENS_PREDICTION_LOG=/var/lib/modellens/predictions.sqlite3

USER 10001:10001
WORKDIR /opt/modellens
EXPOSE 8000

# Ready once the model is loaded (GET /readyz). Python, not curl: the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"]

# `modellens serve` runs gunicorn (gthread workers, settings from MODELLENS_* variables). The same image runs the
# load generator with `modellens loadgen ...` as its command.
ENTRYPOINT ["modellens"]
CMD ["serve"]
