from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.exposition import (
    CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE,
)

from monitoring.access import monitoring_access, monitoring_privileged
from monitoring.health import DOWN, cached_health_check, fresh_health_check, public_health
from monitoring.metrics import exposition, metrics_document

FORMATS = ("prometheus", "openmetrics", "json")
# What each format is called in an Accept header.
MEDIA_TYPES = {
    "application/openmetrics-text": "openmetrics",
    "text/plain": "prometheus",
    "application/json": "json",
}


def negotiated_format(accept: str) -> str:
    """The format an Accept header asks for: the named type with the highest q (the first on
    a tie) among the exposition formats and JSON. Prometheus names
    ``application/openmetrics-text`` and ``text/plain``; curl (``*/*``), browsers
    (``text/html, ..., */*``) and anything naming none of them get JSON."""
    best, best_q = "json", -1.0
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        fmt = MEDIA_TYPES.get(media.lower())
        if fmt is None:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0 and q > best_q:
            best, best_q = fmt, q
    return best


def live(request):
    """Liveness: the web process answers. Touches nothing else."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """Readiness and dependency health; 503 when down. Privileged callers get fresh probes and
    the workers' names; everyone else the shared result of the last second or two, without
    names, and only the status when a monitoring token is configured."""
    if monitoring_privileged(request):
        doc = fresh_health_check()
        return JsonResponse(doc, status=503 if doc["status"] == DOWN else 200)
    doc = cached_health_check()
    code = 503 if doc["status"] == DOWN else 200
    if not monitoring_access(request):
        return JsonResponse({"status": doc["status"]}, status=code)
    return JsonResponse(public_health(doc), status=code)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not monitoring_access(request):
        response = JsonResponse({"detail": "A valid monitoring token is required."}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="monitoring"'
        return response
    fmt = request.GET.get("format") or negotiated_format(request.headers.get("Accept", ""))
    if fmt not in FORMATS:
        return JsonResponse(
            {"format": [f"{fmt!r} is not one of {', '.join(FORMATS)}."]}, status=400
        )
    details = monitoring_privileged(request)
    if fmt == "json":
        response = JsonResponse(metrics_document(details=details))
    elif fmt == "openmetrics":
        body = exposition(openmetrics=True, details=details)
        response = HttpResponse(body, content_type=OPENMETRICS_CONTENT_TYPE)
    else:
        response = HttpResponse(exposition(details=details), content_type=CONTENT_TYPE_LATEST)
    # Caches between a scraper and a browser must keep the two answers apart.
    response["Vary"] = "Accept"
    return response
