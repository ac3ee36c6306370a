"""Size caps for what the template sandbox may build.

Jinja's sandbox stops unsafe attributes, not allocation: ``'x'|center(10**8)``,
``'%100000000s'|format(1)``, ``s|indent(10**6)`` or ``s|wordwrap(1, wrapstring=big)`` build
strings of hundreds of megabytes before the node's output size check ever sees them. Every
filter, and every call of a string method, is therefore checked twice: before it runs, an
estimate of its result from its arguments (a width, a count, a format's field widths), and
after, the length of what it returned. The bound is the largest output a node may store
(WECONNECT_MAX_OUTPUT_BYTES): a longer string could never be stored anyway.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sized
from typing import Any

from django.conf import settings
from jinja2.sandbox import SecurityError

# Field widths and precisions of a printf-style format ("%-20.5f", "%(name)8s").
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\d*)(?:\.(\d*))?")
# Widths and precisions in str.format fields ("{:>20}", "{0:.100f}").
_BRACE_FIELD = re.compile(r"\{[^{}]*?:[^{}\d]*(\d*)(?:\.(\d*))?[^{}]*\}")


def limit() -> int:
    return settings.WECONNECT_MAX_OUTPUT_BYTES


def _refuse(what: str, size: int) -> None:
    raise SecurityError(f"{what} would build about {size} characters (limit {limit()})")


def _length(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


def _field_widths(pattern: re.Pattern, text: str) -> int:
    return sum(int(w or 0) + int(p or 0) for w, p in pattern.findall(text))


def _estimate_format(value, *args, **kwargs) -> int:
    text = str(value)
    extra = sum(_length(a) for a in args) + sum(_length(v) for v in kwargs.values())
    return len(text) + extra + _field_widths(_PERCENT_FIELD, text)


def _estimate_str_format(value, *args, **kwargs) -> int:
    text = str(value)
    extra = sum(_length(a) for a in args) + sum(_length(v) for v in kwargs.values())
    return len(text) + extra + _field_widths(_BRACE_FIELD, text)


def _estimate_indent(value, width=4, first=False, blank=False) -> int:
    text = str(value)
    pad = width if isinstance(width, int) else len(str(width))
    return len(text) + pad * (text.count("\n") + 1)


def _estimate_wordwrap(value, width=79, break_long_words=True, wrapstring=None, *_a, **_k) -> int:
    text = str(value)
    breaks = len(text) // max(int(width), 1) + text.count(" ") + text.count("\n") + 1
    return len(text) + len(wrapstring if wrapstring is not None else "\n") * breaks


def _estimate_replace(value, old, new, count=None, *_a) -> int:
    text, old, new = str(value), str(old), str(new)
    hits = len(text) + 1 if not old else text.count(old)
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(0, len(new) - len(old))


def _estimate_center(value, width=80, *_a) -> int:
    return max(_length(value), int(width))


def _estimate_expandtabs(value, tabsize=8) -> int:
    text = str(value)
    return len(text) + text.count("\t") * max(int(tabsize), 0)


# Filters (and string methods) whose result can be much larger than their input.
_FILTER_ESTIMATES: dict[str, Callable[..., int]] = {
    "center": _estimate_center,
    "format": _estimate_format,
    "indent": _estimate_indent,
    "wordwrap": _estimate_wordwrap,
    "replace": _estimate_replace,
}
_METHOD_ESTIMATES: dict[str, Callable[..., int]] = {
    "center": _estimate_center,
    "ljust": _estimate_center,
    "rjust": _estimate_center,
    "zfill": _estimate_center,
    "expandtabs": _estimate_expandtabs,
    "replace": _estimate_replace,
    "format": _estimate_str_format,
    "format_map": lambda value, mapping: _estimate_str_format(value, **dict(mapping)),
}


def _check_numbers(what: str, args: Iterable[Any]) -> None:
    # A width, count, line count or number of slices larger than the limit (batch, slice,
    # tojson's indent, ...) can only ask for more than may be built.
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and arg > limit():
            _refuse(what, arg)


def check_result(what: str, result: Any) -> Any:
    if isinstance(result, str | bytes | list | tuple) and len(result) > limit():
        _refuse(what, len(result))
    return result


def _check_join(what: str, value: Any, separator: Any) -> list:
    items = list(value)
    size = sum(_length(i) for i in items) + _length(separator) * max(len(items) - 1, 0)
    if size > limit():
        _refuse(what, size)
    return items


def guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a Jinja filter) checked before and after it runs."""
    estimate = _FILTER_ESTIMATES.get(name)
    what = f"filter {name!r}"

    @functools.wraps(func)
    def guarded(*args, **kwargs):
        _check_numbers(what, [*args, *kwargs.values()])
        # Filters get the environment, eval context or context first when they ask for it.
        data = [a for a in args if not _is_jinja_internal(a)]
        if name == "join" and data:
            separator = data[1] if len(data) > 1 else kwargs.get("d", "")
            items = _check_join(what, data[0], separator)
            args = tuple(items if a is data[0] else a for a in args)
        elif estimate is not None and data:
            try:
                size = estimate(*data, **kwargs)
            except (TypeError, ValueError):
                size = 0  # bad arguments: the filter itself reports them
            if size > limit():
                _refuse(what, size)
        return check_result(what, func(*args, **kwargs))

    return guarded


def _is_jinja_internal(arg: Any) -> bool:
    module = type(arg).__module__ or ""
    return module.startswith("jinja2.") and not isinstance(arg, str | Sized)


def check_method_call(obj: Any, args: tuple, kwargs: dict) -> tuple[str | None, tuple]:
    """Before a call in a template: refuse a string method asked to build too much. Returns a
    description for the check of the result (None when the call is not a string method) and
    the arguments to call with (an iterable given to str.join is read once, here)."""
    # The sandbox hands out str.format and format_map wrapped (functools.update_wrapper).
    method = getattr(obj, "__wrapped__", obj)
    owner = getattr(method, "__self__", None)
    name = getattr(method, "__name__", "")
    if not isinstance(owner, str):
        return None, args
    what = f"str.{name}"
    _check_numbers(what, [*args, *kwargs.values()])
    if name == "join" and args:
        args = (_check_join(what, args[0], owner), *args[1:])
    estimate = _METHOD_ESTIMATES.get(name)
    if estimate is not None:
        try:
            size = estimate(owner, *args, **kwargs)
        except (TypeError, ValueError):
            size = 0
        if size > limit():
            _refuse(what, size)
    return what, args


def check_percent(left: Any, right: Any) -> None:
    """``'%100000000s' % x``: the printf operator with a huge field width."""
    if isinstance(left, str):
        args = right if isinstance(right, tuple) else (right,)
        size = _estimate_format(left, *args)
        if size > limit():
            _refuse("the % operator", size)
