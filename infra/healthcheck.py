#!/usr/bin/env python
"""orc-healthcheck: the container health check. Exit 0 when every target answers, else 1.

    orc-healthcheck api                 GET http://127.0.0.1:$ORC_API_PORT/health is 200
    orc-healthcheck broker database     TCP to the hosts of $ORC_BROKER_URL, $ORC_DATABASE_URL

`broker` and `database` only show that the component's dependencies are reachable, not
that the process itself is well: the observability work gives every component `/healthz`
and `/readyz` on `ORC_METRICS_PORT`, and the probes move there. The image installs this
file as `orc-healthcheck` (infra/Dockerfile); it reads the same settings as the engine.
"""

from __future__ import annotations

import socket
import sys
import urllib.request
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from common.settings import Settings

TIMEOUT_SECONDS = 3.0
DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "postgresql": 5432, "postgres": 5432}


def check_api(settings: Settings) -> None:
    host = settings.api_host
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: ask over loopback
        host = "127.0.0.1"
    url = f"http://{f'[{host}]' if ':' in host else host}:{settings.api_port}/health"
    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        if response.status != 200:
            raise OSError(f"{url} answered {response.status}")


def check_reachable(url: str) -> None:
    """Open and close a TCP connection to the URL's host; file databases need none."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    if scheme == "sqlite":
        return
    if not parts.hostname:
        raise OSError(f"no host in a {scheme} URL")
    port = parts.port or DEFAULT_PORTS.get(scheme)
    if port is None:
        raise OSError(f"no port in a {scheme} URL")
    socket.create_connection((parts.hostname, port), timeout=TIMEOUT_SECONDS).close()


CHECKS: dict[str, Callable[[Settings], None]] = {
    "api": check_api,
    "broker": lambda s: check_reachable(s.broker_url),
    "database": lambda s: check_reachable(s.database_url),
}


def main(argv: Sequence[str]) -> int:
    unknown = [t for t in argv if t not in CHECKS]
    if not argv or unknown:
        print(f"usage: orc-healthcheck {{{','.join(CHECKS)}}}...", file=sys.stderr)
        return 2
    settings = Settings()
    failed = False
    for target in argv:
        try:
            CHECKS[target](settings)
        except OSError as exc:  # urllib's errors are OSErrors too
            # Never print the settings' URLs: they hold passwords.
            print(f"{target}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
