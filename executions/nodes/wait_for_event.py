"""``wait_for_event``: wait for an approval, a callback or an event, without holding a worker.

The first run opens the wait (executions/events/waits.py): the event name, the correlation key
rendered from ``match``, the give-up time. An event that arrived before it (still retained)
resumes it at once; otherwise the run parks (``queued``, ``next_attempt_at`` = the give-up
time) and no message exists for it while it waits. A resume (API, resume link, event, admin)
stores the payload and makes the run due; the next run outputs the payload. A run claimed at
the give-up time closes the wait as timed out, unless a resume won that race, and takes its
``timeout`` connections or fails with ``EventTimeout``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.utils import timezone
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from executions.events.models import EventWait
from executions.events.waits import wait_open, wait_time_out
from executions.graph import TIMEOUT_BRANCH
from executions.models import Execution
from executions.nodes.base import Context, NodeType, NonRetryableError, Result, Wait, register
from executions.nodes.templating import Scope, render_value, template_errors

MAX_WAIT_SECONDS = 365 * 86400


@register
class WaitForEvent(NodeType):
    type = "wait_for_event"
    description = (
        "Waits, without holding a worker, until it is resumed: by an event named `event` whose "
        "key equals `match` (a template over the input), by POST /api/executions/{id}/resume/, "
        "by the run's resume link ({{ execution.resume_url }}) or by the admin's Approve/Reject "
        "buttons. Outputs the payload (checked against `schema`). After `timeout_seconds` it "
        "takes its `timeout` connections, or fails with EventTimeout when it has none."
    )
    config_schema = {
        "type": "object",
        "properties": {
            "event": {"type": "string", "minLength": 1, "maxLength": 200},
            "match": {
                "type": ["string", "number"],
                "description": "The correlation key the event's `key` must equal (templates "
                "allowed, e.g. {{ input.order_id }}). Without it any key matches.",
            },
            "schema": {"type": "object", "description": "JSON Schema the payload must fit."},
            "timeout_seconds": {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_WAIT_SECONDS,
            },
        },
        "required": ["event"],
        "additionalProperties": False,
    }
    # The payload is the outside world's data, passed on as it is: a payload saying
    # {"status": "failed"} is something to route on, not a failure of this node.
    detects_error_output = False

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        errors = template_errors({"match": config["match"]} if "match" in config else {})
        schema = config.get("schema")
        if isinstance(schema, Mapping):
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                errors.append(f"config['schema']: not a valid JSON Schema: {exc.message}")
        return errors

    def run(self, ctx: Context) -> Any:
        now = timezone.now()
        wait = EventWait.objects.filter(node_run_id=ctx.node_run_id).first()
        if wait is None:
            wait = self._open(ctx, now)
        if wait.outcome is None and wait.until <= now:
            wait = wait_time_out(wait=wait, now=now)
        if wait.outcome == EventWait.Outcome.RESUMED:
            return wait.payload
        if wait.outcome == EventWait.Outcome.TIMED_OUT:
            return self._timed_out(ctx, wait)
        state = {"event": wait.name, "key": wait.key, "until": wait.until.isoformat()}
        return Wait(until=wait.until, state=state)

    def _open(self, ctx: Context, now) -> EventWait:
        config = ctx.config
        key = None
        if "match" in config:
            value = render_value(config["match"], Scope(ctx), "config['match']")
            if value is None or isinstance(value, dict | list):
                raise NonRetryableError(
                    f"config['match'] rendered to {value!r}; the key must be a string or number",
                    error_type="InvalidConfig",
                )
            key = _key_text(value)
        deadline = Execution.objects.values_list("deadline_at", flat=True).get(id=ctx.execution_id)
        until = deadline
        if "timeout_seconds" in config:
            # The workflow's deadline still applies: past it the execution times out.
            until = min(deadline, now + timedelta(seconds=float(config["timeout_seconds"])))
        return wait_open(
            node_run_id=ctx.node_run_id,
            execution_id=ctx.execution_id,
            owner_id=ctx.owner_id,
            node=ctx.node.key,
            name=config["event"],
            key=key,
            schema=config.get("schema"),
            until=until,
            now=now,
        )

    def _timed_out(self, ctx: Context, wait: EventWait) -> Any:
        seconds = round((wait.until - wait.created_at).total_seconds(), 3)
        described = f"{wait.name!r}" + (f" with key {wait.key!r}" if wait.key is not None else "")
        # Read from the execution's snapshot (only on a time-out, so no cache is needed).
        doc = Execution.objects.values_list("snapshot__graph", flat=True).get(id=ctx.execution_id)
        if any(
            c["source"] == ctx.node.key and c.get("branch") == TIMEOUT_BRANCH
            for c in doc.get("connections", [])
        ):
            output = {"timed_out": True, "event": wait.name, "key": wait.key, "waited": seconds}
            return Result(output, branch=TIMEOUT_BRANCH)
        raise NonRetryableError(
            f"no event {described} arrived within {seconds}s (no `timeout` connection)",
            error_type="EventTimeout",
            details={"event": wait.name, "key": wait.key},
        )


def _key_text(value: Any) -> str:
    """Keys compare as text: 42, 42.0 and "42" are the same key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
