from __future__ import annotations

from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from executions.errors import http_status


def exception_handler(exc, context):
    code = http_status(exc)
    if code is not None:
        return Response({"detail": str(exc)}, status=code)
    return drf_exception_handler(exc, context)
