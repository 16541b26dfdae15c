"""``GET /metrics``: this process's figures in Prometheus' text format (editor/metrics.py).

Prometheus scrapes every `manage.py serve` process directly, so each answers for itself. Who
may read them: clients on loopback or a private network, by their address (REMOTE_ADDR, which
daphne takes from X-Forwarded-For when PROXY_HEADERS is on: behind nginx, the real client, so
outsiders stay outside; nginx also denies /metrics), or anyone presenting
``Authorization: Bearer <METRICS_TOKEN>`` when that setting is set. Everyone else gets 403.
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

# Defines (registers) every collab metric, so a process answers with all of them from the start.
import editor.metrics  # noqa: F401


def from_inside(address: str) -> bool:
    """Whether a client address is loopback or on a private network."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone is no part of it
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_private


def has_token(request: HttpRequest) -> bool:
    """Whether the request carries ``Authorization: Bearer <METRICS_TOKEN>`` (compared in
    constant time); never when no token is set."""
    token = settings.METRICS_TOKEN
    if not token:
        return False
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """This process's metrics, to the internal network or to a holder of the token."""
    if not (from_inside(request.META.get("REMOTE_ADDR", "")) or has_token(request)):
        return HttpResponseForbidden(
            "Metrics are served to the internal network, or with METRICS_TOKEN.\n",
            content_type="text/plain",
        )
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
