"""``http_request``: one HTTP call with httpx.

Every outgoing request is built by :func:`build_client` and sent by :func:`send`; those two
functions are the single place where egress rules and credentials apply. The client connects
only to addresses the egress policy allows, checked after resolution and on every redirect hop
(executions.egress); ``credential`` names a credential of the workflow's owner whose header
(Authorization: Bearer / Basic, or its own header) is added to the request and never follows a
redirect to another origin (executions.credentials).

Outcomes:
- 2xx/3xx, and any code listed in ``allowed_status``: the output ``{"statusCode", "headers",
  "body"}`` (the body parsed when the response is JSON), a success (a listed 404 included).
- other 4xx: the same output, returned and not retried. Its ``statusCode`` >= 400 makes it
  an error output, so the node ends ``failed`` and an error connection takes it.
- 5xx and 429: a retryable error that honours ``Retry-After`` (seconds or an HTTP date).
- network errors and timeouts: retryable errors.
- a body longer than ``max_response_bytes``: a non-retryable error (reading stops there).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from executions import egress
from executions.credentials.services import credential_resolve
from executions.nodes.base import Context, NodeError, NonRetryableError, Result, register
from executions.nodes.templating import Scope, TemplatedNodeType

DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 30.0
# A server asking for more than a day is treated as asking for a day.
MAX_RETRY_AFTER_SECONDS = 86400.0
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504}) | frozenset(range(505, 600))

_scalar = {"type": ["string", "number", "boolean"]}


def build_client(
    *, timeout: float, follow_redirects: bool, ctx: Context | None = None
) -> httpx.Client:
    """The client every request of this node type goes through: the egress client, which
    checks each connection's resolved address and ignores proxy variables of the worker's
    environment. Redirects are followed by :func:`send`, one checked hop at a time."""
    client = egress.build_client(timeout=httpx.Timeout(timeout))
    client.follow_redirects = follow_redirects  # read by send()
    return client


def send(
    client: httpx.Client,
    request: httpx.Request,
    *,
    max_response_bytes: int,
    deadline: float,
    ctx: Context | None = None,
    origin_bound_headers: tuple[str, ...] = (),
) -> tuple[httpx.Response, bytes]:
    """Send ``request`` and read the body, at most ``max_response_bytes`` of it and no later
    than ``deadline`` (a ``time.monotonic()`` value: httpx's timeouts are per read, so a
    server trickling bytes could otherwise hold the node forever)."""
    response = egress.send(
        client,
        request,
        stream=True,
        follow_redirects=client.follow_redirects,
        origin_bound_headers=origin_bound_headers,
    )
    try:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_response_bytes:
            raise _too_large(max_response_bytes, int(declared))
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_response_bytes:
                raise _too_large(max_response_bytes)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(
                    "response body not read within the timeout", request=request
                )
        return response, b"".join(chunks)
    finally:
        response.close()


def _too_large(limit: int, declared: int | None = None) -> NonRetryableError:
    size = f" ({declared} bytes declared)" if declared is not None else ""
    return NonRetryableError(
        f"response body exceeds max_response_bytes ({limit}){size}",
        error_type="ResponseTooLarge",
        details={"max_response_bytes": limit},
    )


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP date; None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _body(response: httpx.Response, raw: bytes) -> Any:
    if not raw:
        return None
    if _is_json(response.headers.get("content-type", "")):
        try:
            parsed = json.loads(raw, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            pass  # a server that labels text (or JSON we cannot store) as JSON: hand back the text
        else:
            return _without_nul(parsed) if b"\\u0000" in raw else parsed
    encoding = response.charset_encoding or "utf-8"
    try:
        text = raw.decode(encoding, errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    return _without_nul(text)


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON, and PostgreSQL's jsonb would refuse the output.
    raise ValueError(f"{name} is not JSON")


def _without_nul(value: Any) -> Any:
    """PostgreSQL's jsonb cannot store U+0000: it becomes U+FFFD, as undecodable bytes do."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def _headers(response: httpx.Response) -> dict[str, str]:
    # multi_items keeps repeated headers apart; they are joined as one value, as RFC 9110 allows.
    merged: dict[str, str] = {}
    for name, value in response.headers.multi_items():
        name = name.lower()
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


@register
class HttpRequest(TemplatedNodeType):
    type = "http_request"
    description = (
        "Makes one HTTP request. Output {statusCode, headers, body} (body parsed when JSON). "
        "5xx, 429, timeouts and network errors are retryable and honour Retry-After; a 4xx is an "
        "error output and is not retried."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "method": {"enum": list(METHODS), "default": "GET"},
            "url": {"type": "string", "minLength": 1, "maxLength": 8192},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "query": {
                "type": "object",
                "additionalProperties": {"anyOf": [_scalar, {"type": "array", "items": _scalar}]},
            },
            "json": {"description": "A JSON request body (any JSON value)."},
            "form": {"type": "object", "additionalProperties": _scalar},
            "body": {"type": "string", "description": "A raw text request body."},
            "timeout": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1800,
                "default": DEFAULT_TIMEOUT,
            },
            "allowed_status": {
                "type": "array",
                "items": {"type": "integer", "minimum": 100, "maximum": 599},
                "description": "Codes that count as success: returned as output, never retried "
                "and not an error (e.g. [404] when 'not found' is an answer, not a failure).",
            },
            "follow_redirects": {"type": "boolean", "default": True},
            "credential": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "description": "Name of a credential of the workflow's owner (/api/credentials/): "
                "bearer and basic set Authorization, header sets its header; a generic one is "
                "only read by templates ({{ credentials.<name>.<field> }}).",
            },
            "max_response_bytes": {
                "type": "integer",
                "minimum": 1,
                "maximum": 64 * 1024 * 1024,
                "default": DEFAULT_MAX_RESPONSE_BYTES,
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        errors = super().check_config(config)
        bodies = [k for k in ("json", "form", "body") if k in config]
        if len(bodies) > 1:
            errors.append(f"config: give at most one request body, not {' and '.join(bodies)}")
        url = config.get("url", "")
        if (
            isinstance(url, str)
            and "{" not in url
            and not url.lower().startswith(("http://", "https://"))
        ):
            errors.append("config['url']: must start with http:// or https://")
        return errors

    def execute(self, ctx: Context, config: dict[str, Any], scope: Scope) -> Any:
        url = config["url"]
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise NonRetryableError(
                f"config['url']: {url!r} is not an http(s) URL", error_type="InvalidConfig"
            )
        method = config.get("method", "GET")
        timeout = float(config.get("timeout", DEFAULT_TIMEOUT))
        max_bytes = int(config.get("max_response_bytes", DEFAULT_MAX_RESPONSE_BYTES))
        allowed = set(config.get("allowed_status") or ())
        headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
        origin_bound: tuple[str, ...] = ()
        if config.get("credential"):
            applied = credential_resolve(
                owner_id=ctx.owner_id, name=str(config["credential"])
            ).headers()
            # The credential's header replaces one of the same name given in config.
            headers = {
                k: v for k, v in headers.items() if k.lower() not in {h.lower() for h in applied}
            }
            headers.update(applied)
            origin_bound = tuple(applied)
        query = {
            k: [_query_value(i) for i in v] if isinstance(v, list) else _query_value(v)
            for k, v in (config.get("query") or {}).items()
        }
        body: dict[str, Any] = {}
        if "json" in config:
            body["json"] = config["json"]
        elif "form" in config:
            body["data"] = {k: _query_value(v) for k, v in config["form"].items()}
        elif "body" in config:
            body["content"] = str(config["body"]).encode()

        deadline = time.monotonic() + timeout
        try:
            with build_client(
                timeout=timeout, follow_redirects=config.get("follow_redirects", True), ctx=ctx
            ) as client:
                # httpx 0.28 replaces a URL's own query string with params=; merge instead.
                target = httpx.URL(url).copy_merge_params(query) if query else url
                request = client.build_request(method, target, headers=headers, **body)
                response, raw = send(
                    client,
                    request,
                    max_response_bytes=max_bytes,
                    deadline=deadline,
                    ctx=ctx,
                    origin_bound_headers=origin_bound,
                )
        except NodeError:
            raise
        except httpx.TimeoutException as exc:
            raise NodeError(
                f"{method} {url} timed out after {timeout:g}s ({type(exc).__name__})",
                error_type="Timeout",
            ) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.TooManyRedirects) as exc:
            raise NonRetryableError(
                f"{method} {url}: {exc}", error_type=type(exc).__name__
            ) from None
        except httpx.TransportError as exc:
            raise NodeError(
                f"{method} {url}: {type(exc).__name__}: {exc}", error_type="ConnectionError"
            ) from None

        output = {
            "statusCode": response.status_code,
            "headers": _headers(response),
            "body": _body(response, raw),
        }
        if response.status_code in RETRYABLE_STATUS and response.status_code not in allowed:
            raise NodeError(
                f"{method} {url} answered {response.status_code}",
                error_type="HttpError",
                retry_after=retry_after_seconds(response.headers.get("retry-after")),
                details={"statusCode": response.status_code, "body": _short(output["body"])},
            )
        return Result(
            output, failed=response.status_code >= 400 and response.status_code not in allowed
        )


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _short(body: Any, limit: int = 2000) -> Any:
    """An error document keeps only the start of a large body."""
    if isinstance(body, str) and len(body) > limit:
        return body[:limit] + "..."
    if not isinstance(body, str) and len(json.dumps(body)) > limit:
        return json.dumps(body)[:limit] + "..."
    return body
