"""``stop_and_error``: fail on purpose, never retried."""

from __future__ import annotations

from typing import Any

from executions.nodes.base import Context, NonRetryableError, register
from executions.nodes.templating import Scope, TemplatedNodeType


@register
class StopAndError(TemplatedNodeType):
    type = "stop_and_error"
    description = (
        "Fails with the configured message (a template), without retrying: an error connection "
        "takes it, or the execution fails."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "message": {"type": "string", "minLength": 1, "maxLength": 10000},
            "error_type": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "default": "StopAndError",
            },
            "details": {"type": "object", "description": "Extra fields for the error document."},
        },
        "required": ["message"],
        "additionalProperties": False,
    }

    def execute(self, ctx: Context, config: dict[str, Any], scope: Scope) -> Any:
        details = config.get("details") or {}
        # The error document's own keys win over details of the same name.
        details = {
            k: v for k, v in details.items() if k not in {"error", "message", "type", "attempts"}
        }
        raise NonRetryableError(
            str(config["message"]),
            error_type=config.get("error_type", "StopAndError"),
            details=details,
        )
