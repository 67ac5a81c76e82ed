#!/usr/bin/env bash
# Container entrypoint for every retrainer process (init, workers, beat, Flower).
#
# Waits until the servers the configuration names accept TCP connections, then replaces itself
# with the command (`exec "$@"`), so the retrainer process is the one that receives SIGTERM.
# Like cookiecutter-django's start scripts: a worker that starts before Redis is up exits, and
# `retrainer init` run before PostgreSQL listens fails.
#
# Which servers: the hosts in broker_url, result_backend and database_url, read the way the
# application reads them (RETRAINER_* variables over the YAML file in RETRAINER_CONFIG). The
# embedded defaults (filesystem://, sqlite) name no server, so nothing is waited for.
# URLs are never printed (they can carry passwords); only host:port is.
#
#   WAIT_FOR_SERVICES=0        run the command at once
#   WAIT_TIMEOUT_SECONDS=60    give up with exit status 1 after this long
#   PYTHON=python              the interpreter that has retrainer installed
set -euo pipefail

if [[ $# -eq 0 ]]; then
  set -- retrainer --help
fi

if [[ "${WAIT_FOR_SERVICES:-1}" != "0" ]]; then
  "${PYTHON:-python}" - <<'PY'
import os
import socket
import sys
import time
from urllib.parse import urlsplit

DEFAULT_PORTS = {
    "redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432,
    "mysql": 3306, "mariadb": 3306, "amqp": 5672, "pyamqp": 5672, "amqps": 5671,
}
ENV_KEYS = ("RETRAINER_BROKER_URL", "RETRAINER_RESULT_BACKEND", "RETRAINER_DATABASE_URL")


def configured_urls():
    try:
        from retrainer.config import ConfigError, load_settings
    except ImportError:  # not installed in this interpreter: the variables are all there is
        return [os.environ.get(key, "") for key in ENV_KEYS]
    try:
        settings = load_settings()
    except ConfigError as exc:  # the message names the key, never a secret value
        print(f"wait-for-services: {exc}", file=sys.stderr)
        sys.exit(2)
    return [settings.broker_url, settings.result_backend, settings.database_url]


def target(url):
    if not url:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None  # let the application report the malformed URL
    scheme = parts.scheme.lower().split("+")
    name = scheme[1] if scheme[0] == "db" and len(scheme) > 1 else scheme[0]  # db+postgresql://
    if name not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.hostname, port or DEFAULT_PORTS[name]


targets = []
for url in configured_urls():
    t = target(url)
    if t and t not in targets:
        targets.append(t)

timeout = float(os.environ.get("WAIT_TIMEOUT_SECONDS", "60"))
deadline = time.monotonic() + timeout
for host, port in targets:
    announced = False
    while True:
        try:
            with socket.create_connection((host, port), timeout=2):
                break
        except OSError as exc:
            if time.monotonic() >= deadline:
                print(f"wait-for-services: {host}:{port} not reachable after {timeout:g}s ({exc})",
                      file=sys.stderr)
                sys.exit(1)
            if not announced:
                print(f"wait-for-services: waiting for {host}:{port} ...", file=sys.stderr)
                announced = True
            time.sleep(1)
    print(f"wait-for-services: {host}:{port} is up", file=sys.stderr)
PY
fi

exec "$@"
