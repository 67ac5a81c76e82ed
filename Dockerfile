# syntax=docker/dockerfile:1
# One image for every retrainer process: `retrainer init`, the API, the workers, beat and Flower are
# all started from it with a different command (docker-compose.yml, deploy/k8s/).
#
#   docker build -t retrainer .
#   docker run --rm retrainer                     # retrainer --help
#   docker run --rm retrainer retrainer demo      # the embedded loop, no servers
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libgomp1: XGBoost's Linux wheel links the system OpenMP runtime. Not pinned: the base image's
# Debian release fixes it, and security updates should come in with a rebuild.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, read from pyproject.toml, so a code change does not reinstall them.
COPY pyproject.toml /tmp/src/pyproject.toml
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# Then the project itself (flat layout: four import packages at the root).
COPY README.md /tmp/src/README.md
COPY retrainer /tmp/src/retrainer
COPY models /tmp/src/models
COPY services /tmp/src/services
COPY tasks /tmp/src/tasks
RUN pip install --no-deps /tmp/src \
 && rm -rf /tmp/src

# A non-root user that owns /data: the shared volume (artifacts, var) mounts there and starts out
# with this ownership when it is first created from the image.
RUN groupadd --system --gid 10001 retrainer \
 && useradd --system --uid 10001 --gid retrainer --create-home --home-dir /home/retrainer retrainer \
 && mkdir -p /data/var /data/artifacts /etc/retrainer \
 && chown -R retrainer:retrainer /data

# The documented defaults as the baked-in configuration; compose and k8s mount their own file here.
COPY retrainer.example.yaml /etc/retrainer/retrainer.yaml
COPY --chmod=0755 deploy/docker/wait-for-services.sh /usr/local/bin/wait-for-services.sh

ENV RETRAINER_CONFIG=/etc/retrainer/retrainer.yaml \
    RETRAINER_VAR_DIR=/data/var \
    RETRAINER_ARTIFACT_DIR=/data/artifacts

WORKDIR /data
USER 10001:10001

ENTRYPOINT ["/usr/local/bin/wait-for-services.sh"]
CMD ["retrainer", "--help"]
