from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from monitoring.access import monitoring_access, monitoring_privileged
from monitoring.health import DOWN, cached_health_check, fresh_health_check, public_health
from monitoring.metrics import exposition, metrics_document

FORMATS = ("prometheus", "json")


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
    fmt = request.GET.get("format", "prometheus")
    if fmt not in FORMATS:
        return JsonResponse(
            {"format": [f"{fmt!r} is not one of {', '.join(FORMATS)}."]}, status=400
        )
    if fmt == "json":
        return JsonResponse(metrics_document(details=monitoring_privileged(request)))
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
