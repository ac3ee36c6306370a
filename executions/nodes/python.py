"""``python``: call a function from the WECONNECT_PYTHON_NODES allow-list.

The API only ever names a function; the code is whatever the deployment put on that list.
A name not on the list is refused when the workflow is saved, and again at run time (the
list may have changed since)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from django.conf import settings

from executions.nodes.base import Context, NodeType, NonRetryableError, Result, Wait, register
from executions.nodes.templating import to_json


def allowed_functions() -> list[str]:
    return list(settings.WECONNECT_PYTHON_NODES)


def load_function(path: str) -> Callable[..., Any]:
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path")
    function = getattr(importlib.import_module(module_name), attr)
    if not callable(function):
        raise TypeError(f"{path!r} is not callable")
    return function


@register
class Python(NodeType):
    type = "python"
    description = (
        "Calls a Python function named in the WECONNECT_PYTHON_NODES allow-list with the node "
        'context (`pass: "context"`, the default) or its input (`pass: "input"`); the return '
        "value is the output."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "function": {"type": "string", "minLength": 1, "maxLength": 300},
            "pass": {"enum": ["context", "input"], "default": "context"},
        },
        "required": ["function"],
        "additionalProperties": False,
    }

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        allowed = allowed_functions()
        if config["function"] not in allowed:
            listed = ", ".join(allowed) if allowed else "none are allowed"
            return [
                f"config['function']: {config['function']!r} is not in WECONNECT_PYTHON_NODES ({listed})"
            ]
        return []

    def run(self, ctx: Context) -> Any:
        name = ctx.config["function"]
        if name not in allowed_functions():
            raise NonRetryableError(
                f"{name!r} is not in WECONNECT_PYTHON_NODES", error_type="FunctionNotAllowed"
            )
        try:
            function = load_function(name)
        except (ImportError, AttributeError, TypeError) as exc:
            raise NonRetryableError(
                f"cannot load {name!r}: {exc}", error_type="FunctionNotFound"
            ) from None
        argument = ctx.input if ctx.config.get("pass", "context") == "input" else ctx
        value = function(argument)
        if isinstance(value, Wait):
            return value
        # Checked here so that a bad value fails the node with a clear message instead of the
        # database refusing to store it.
        where = f"{name} returned"
        if isinstance(value, Result):
            return Result(to_json(value.output, where, "InvalidOutput"), value.branch)
        return to_json(value, where, "InvalidOutput")
