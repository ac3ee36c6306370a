"""``delay``: wait a number of seconds or until a time, without holding a worker.

The first run computes the wake-up time and returns a :class:`Wait`; the engine parks the run
(``queued`` with ``next_attempt_at``) and frees the worker. Short waits come back as a Celery
countdown, long ones through the recovery pass. On resume the wake-up time is read from the
run's state (never recomputed, so a redelivered message cannot extend the wait), and the node
passes its input on once that time has come.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.utils import timezone

from executions.nodes.base import Context, NodeType, NonRetryableError, Wait, register
from executions.nodes.templating import Scope, is_template, render_config, template_errors

MAX_DELAY_SECONDS = 30 * 86400


def parse_until(value: Any, where: str) -> datetime:
    """An ISO 8601 timestamp; one without an offset is taken as UTC."""
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected an ISO 8601 timestamp, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not an ISO 8601 timestamp") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@register
class Delay(NodeType):
    type = "delay"
    description = (
        "Waits `seconds` or `until` an ISO 8601 time (templates allowed), then passes its input "
        "on. No worker is held while it waits."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "seconds": {"type": "number", "minimum": 0, "maximum": MAX_DELAY_SECONDS},
            "until": {"type": "string", "minLength": 1, "maxLength": 200},
        },
        "oneOf": [{"required": ["seconds"]}, {"required": ["until"]}],
        "additionalProperties": False,
    }
    detects_error_output = False

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        errors = template_errors(config)
        until = config.get("until")
        if isinstance(until, str) and not is_template(until):
            try:
                parse_until(until, "config['until']")
            except ValueError as exc:
                errors.append(str(exc))
        return errors

    def run(self, ctx: Context) -> Any:
        now = timezone.now()
        state = ctx.state or {}
        if "until" in state:
            # Resumed: the wake-up time was fixed by the first run.
            until = parse_until(state["until"], "state['until']")
        else:
            scope = Scope(ctx)
            until = self._until(ctx, scope, now)
        if until <= now:
            return ctx.input
        return Wait(until=until, state={"until": until.isoformat()})

    def _until(self, ctx: Context, scope: Scope, now: datetime) -> datetime:
        config = render_config(ctx, scope=scope)
        if "seconds" in config:
            return now + timedelta(seconds=float(config["seconds"]))
        try:
            return parse_until(config["until"], "config['until']")
        except ValueError as exc:
            raise NonRetryableError(str(exc), error_type="InvalidConfig") from None
