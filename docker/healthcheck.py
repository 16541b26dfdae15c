"""The container's health check: exits 0 when GET /healthz answers 200, 1 otherwise.

Standard library only (the runtime image has no curl). The URL defaults to the process in the
same container; COLLAB_HEALTHCHECK_URL overrides it (tests/deploy runs this against live
servers).
"""

import os
import sys
import urllib.error
import urllib.request

URL = os.environ.get("COLLAB_HEALTHCHECK_URL", "http://127.0.0.1:8000/healthz")


def main() -> int:
    try:
        with urllib.request.urlopen(URL, timeout=3) as response:
            healthy = response.status == 200
    except urllib.error.HTTPError as exc:  # 503 names what failed
        print(f"{URL}: {exc.code} {exc.read(500).decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{URL}: {exc}", file=sys.stderr)
        return 1
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
