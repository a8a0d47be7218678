"""`python -m stellwerk.ops.probe [livez|readyz|startupz]`: a container's health check.

Asks the process listening on `STELLWERK_HOST`/`STELLWERK_PORT` (as `stellwerk serve` reads
them) for one of its probes and exits 0 when it answers 200, 1 otherwise, with the reason on
stderr. The image has no curl; this needs nothing beyond the standard library, so it starts
quickly and costs the health check no imports of the server's dependencies.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Final

PROBES: Final = ("livez", "readyz", "startupz")
# An address to listen on everywhere is reached on the loopback interface.
_ANY: Final = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 (compared with, never bound)


def probe_url(probe: str, environ: Mapping[str, str]) -> str:
    host = environ.get("STELLWERK_HOST", "127.0.0.1").strip()
    host = "127.0.0.1" if host in _ANY else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    port = environ.get("STELLWERK_PORT", "8080").strip() or "8080"
    return f"http://{host}:{port}/{probe}"


def main(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    probe = argv[0] if argv else "readyz"
    if probe not in PROBES:
        print(f"probe: {probe!r} is not one of {', '.join(PROBES)}", file=sys.stderr)
        return 2
    url = probe_url(probe, environ)
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 (http to ourselves)
            status: int = answer.status
    except urllib.error.HTTPError as exc:
        print(f"probe: {url} answered {exc.code}: {exc.read(200)!r}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"probe: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.environ))
