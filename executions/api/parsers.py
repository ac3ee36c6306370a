"""The API's only request parser: JSON, checked for what the database cannot store."""

from __future__ import annotations

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from executions import jsonsafe


def body_problem(exc: jsonsafe.Unstorable) -> str:
    """What is wrong with a request body, and where (a dotted path into it)."""
    return f"at {exc.path}: {exc.reason}" if exc.path else exc.reason


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing with a 400 what would otherwise be a 500 further on: NUL
    characters and lone surrogates (jsonb cannot store them), numbers too large for a float
    (``1e400`` would become Infinity), NaN, and nesting deeper than 64 levels (the parser and
    every recursive validator would run out of stack on ~1,000)."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read()
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - body is not {encoding} text: {exc}") from None
        try:
            return jsonsafe.loads(text)
        except jsonsafe.Unstorable as exc:
            raise ParseError(f"JSON parse error - body {body_problem(exc)}") from None
