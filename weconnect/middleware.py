from __future__ import annotations

import io
import json

from django.conf import settings
from django.http import JsonResponse

_READ_CHUNK = 64 * 1024


def _too_large(length: str, limit: int) -> dict:
    return {"detail": f"Request body of {length} bytes exceeds the limit of {limit} bytes."}


def _is_chunked(environ) -> bool:
    encoding = environ.get("HTTP_TRANSFER_ENCODING", "")
    return "chunked" in encoding.lower() and not environ.get("CONTENT_LENGTH")


class ChunkedBodyMiddleware:
    """WSGI middleware: gives Django a chunked request body as an ordinary sized body.

    gunicorn de-chunks a ``Transfer-Encoding: chunked`` body into ``wsgi.input`` but sets no
    CONTENT_LENGTH, and Django reads exactly CONTENT_LENGTH bytes: without this the body would
    be read as empty and the request accepted with its data lost. The body is read here up to
    WECONNECT_MAX_REQUEST_BYTES (a larger one answers 413 without reading the rest), then handed
    on from memory with its real length, so the size limit and every parser see it as usual.
    """

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        if not _is_chunked(environ):
            return self.application(environ, start_response)
        limit = settings.WECONNECT_MAX_REQUEST_BYTES
        stream = environ["wsgi.input"]
        body = bytearray()
        while len(body) <= limit:
            chunk = stream.read(min(_READ_CHUNK, limit + 1 - len(body)))
            if not chunk:
                break
            body += chunk
        if len(body) > limit:
            payload = json.dumps(_too_large(f"more than {limit}", limit)).encode()
            start_response(
                "413 Request Entity Too Large",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(payload))),
                    # The rest of the body was never read: the connection cannot be reused.
                    ("Connection", "close"),
                ],
            )
            return [payload]
        environ = {
            **environ,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(bytes(body)),
        }
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        return self.application(environ, start_response)


class RequestSizeLimitMiddleware:
    """Answers 413 for bodies over WECONNECT_MAX_REQUEST_BYTES before anything reads them."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if _is_chunked(request.META):
            # A chunked body that did not come through ChunkedBodyMiddleware (another server
            # or entry point): Django would read it as empty. Refuse it rather than lose it.
            return JsonResponse(
                {
                    "detail": "Transfer-Encoding: chunked is not supported here; "
                    "send the body with a Content-Length."
                },
                status=411,
            )
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            return JsonResponse({"detail": "Content-Length header is not a number."}, status=400)
        limit = settings.WECONNECT_MAX_REQUEST_BYTES
        if length > limit:
            return JsonResponse(_too_large(str(length), limit), status=413)
        return self.get_response(request)
