"""What PostgreSQL's jsonb cannot store, found before anything is written.

jsonb refuses the NUL character (``\\u0000``), lone UTF-16 surrogates (``"\\ud800"``: not
Unicode text at all, they cannot even be encoded as UTF-8) and non-finite numbers (``1e400``
parses as Infinity, which JSON cannot express). Deeply nested documents make the parsers and
encoders on the way (Python's json, PostgreSQL's) recurse until they fail. The walk here is
iterative, so checking a document never recurses itself. Pure: no ORM, no settings.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# How deep a request body may nest (objects and arrays); deeper answers 400 before any
# serializer, validator or template walks it recursively.
MAX_REQUEST_DEPTH = 64
# Node outputs may nest deeper than requests; one json.dumps cannot even encode (it gives up
# near 1,000 levels) is reported as nested deeper than this.
MAX_OUTPUT_DEPTH = 512

_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")


class Unstorable(ValueError):
    """A JSON document (or a value on its way to jsonb) that cannot be stored as it is."""

    def __init__(self, path: str, reason: str):
        if len(path) > 120:  # a path 60 levels deep says nothing more than its end
            path = "..." + path[-117:]
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}" if path else reason)


def _describe_char(text: str) -> str:
    char = _BAD_CHAR.search(text).group()
    if char == "\x00":
        return "contains the NUL character (\\u0000), which cannot be stored"
    return f"contains a lone surrogate (\\u{ord(char):04x}), which is not valid Unicode text"


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def check(value: Any, *, max_depth: int, root: str = "") -> None:
    """Raise Unstorable naming the first place (a dotted path) where ``value`` holds something
    jsonb cannot store, or where it nests deeper than ``max_depth``."""
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if _BAD_CHAR.search(item):
                raise Unstorable(path, _describe_char(item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise Unstorable(path, f"is {item}, not a finite number")
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise Unstorable(path, f"is nested too deeply (more than {max_depth} levels)")
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str) and _BAD_CHAR.search(key):
                        safe = _BAD_CHAR.sub("?", key)
                        raise Unstorable(_child(path, safe), "key " + _describe_char(key))
                    stack.append((child, _child(path, _BAD_CHAR.sub("?", str(key))), depth + 1))
            else:
                for i, child in enumerate(item):
                    stack.append((child, _child(path, i), depth + 1))


def scrub(value: Any, *, max_depth: int = MAX_OUTPUT_DEPTH) -> Any:
    """A copy of ``value`` that jsonb can store: NUL characters and lone surrogates become
    U+FFFD, non-finite numbers their names as strings, anything nested deeper than
    ``max_depth`` the string "...". For diagnostics (error documents), which must be recorded
    whatever they quote; outputs are checked and refused instead."""
    return _scrub(value, max_depth)


def _scrub(value: Any, depth_left: int) -> Any:
    if isinstance(value, str):
        return _BAD_CHAR.sub("\ufffd", value) if _BAD_CHAR.search(value) else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict | list | tuple):
        if depth_left <= 0:
            return "..."
        if isinstance(value, dict):
            return {
                _scrub(str(k) if not isinstance(k, str) else k, 1): _scrub(v, depth_left - 1)
                for k, v in value.items()
            }
        return [_scrub(v, depth_left - 1) for v in value]
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large (it would be Infinity)")
    return value


# Only escapes can put a NUL or a surrogate into parsed JSON text (strict parsing refuses raw
# control characters, strict UTF-8 decoding raw surrogates).
_BAD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR = re.compile(r"\[\]|\{\}")


def _deeper_than(text: str, limit: int) -> bool:
    """Whether valid JSON ``text`` nests deeper than ``limit``, at C speed: strip strings and
    everything but brackets, then remove innermost pairs one level a pass."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if len(brackets) <= 2 * limit:
        return False
    for _ in range(limit):
        brackets = _EMPTY_PAIR.sub("", brackets)
        if not brackets:
            return False
    return True


def loads(text: str | bytes, *, max_depth: int = MAX_REQUEST_DEPTH) -> Any:
    """Parse JSON text from a request and check it. Raises Unstorable (a ValueError) with a
    message fit for a 400: invalid JSON or UTF-8, NaN/Infinity, numbers too large for a float,
    nesting deeper than ``max_depth``, NUL characters and lone surrogates (with their path)."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")  # strict: encoded surrogates are refused here
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise Unstorable("", f"is nested too deeply (more than {max_depth} levels)") from None
    except UnicodeDecodeError as exc:
        raise Unstorable("", f"is not valid JSON (not UTF-8 text): {exc}") from None
    except ValueError as exc:
        raise Unstorable("", f"is not valid JSON: {exc}") from None
    # The walk names the place of a problem but costs ~10x the parse on a large body: it runs
    # only when the text shows one.
    if _BAD_ESCAPE.search(text) or _deeper_than(text, max_depth):
        check(value, max_depth=max_depth)
    return value
