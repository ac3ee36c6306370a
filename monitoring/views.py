from django.http import JsonResponse


def live(request):
    """Liveness: the web process answers. Touches nothing else."""
    return JsonResponse({"status": "ok"})
