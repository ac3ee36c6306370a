"""Event triggers of workflows: the ``events`` setting, checked and indexed.

A workflow's ``events`` is a list of event names, each a string (``"order.created"``) or an
object with a JMESPath ``filter`` over the event (``{"name": "order.created", "filter":
"data.total > `100`"}``). The rows of EventTrigger mirror the current setting, rewritten
whenever the workflow is saved, so POST /api/events/ finds the workflows an event starts with
one indexed query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jmespath
import jmespath.exceptions

from executions.events.models import EventTrigger

MAX_EVENT_TRIGGERS = 50


def event_trigger_items(events: Any) -> list[tuple[str, str]]:
    """(name, filter) for each entry of a checked ``events`` setting."""
    items = []
    for entry in events or []:
        if isinstance(entry, str):
            items.append((entry, ""))
        else:
            items.append((entry["name"], entry.get("filter") or ""))
    return items


def events_setting_errors(events: Any) -> list[str]:
    """Every reason ``events`` is not a valid setting, naming the entry."""
    if events is None:
        return []
    if not isinstance(events, list):
        return ["must be a list of event names or {name, filter} objects"]
    if len(events) > MAX_EVENT_TRIGGERS:
        return [f"at most {MAX_EVENT_TRIGGERS} entries"]
    errors = []
    for i, entry in enumerate(events):
        where = f"events[{i}]"
        if isinstance(entry, Mapping):
            extra = set(entry) - {"name", "filter"}
            if extra:
                errors.append(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
            name, flt = entry.get("name"), entry.get("filter")
            if flt is not None:
                if not isinstance(flt, str) or not flt.strip() or len(flt) > 2000:
                    errors.append(f"{where}.filter: must be a JMESPath expression (1-2000 chars)")
                else:
                    try:
                        jmespath.compile(flt)
                    except jmespath.exceptions.JMESPathError as exc:
                        errors.append(f"{where}.filter: does not compile: {exc}")
        else:
            name = entry
        if not isinstance(name, str) or not (1 <= len(name.strip()) <= 200):
            errors.append(f"{where}: the event name must be a string of 1-200 characters")
    return errors


def event_triggers_sync(*, workflow) -> None:
    """Rewrite the workflow's EventTrigger rows from its ``events`` setting (in the caller's
    transaction, with the workflow save)."""
    EventTrigger.objects.filter(workflow=workflow).delete()
    EventTrigger.objects.bulk_create(
        EventTrigger(workflow=workflow, owner_id=workflow.owner_id, name=name, filter=flt)
        for name, flt in event_trigger_items(workflow.events)
    )


def event_filter_matches(expression: str, event_doc: Mapping[str, Any]) -> bool:
    """Whether a trigger's filter lets ``event_doc`` start the workflow (no filter: yes). A
    filter that fails to evaluate does not match."""
    if not expression:
        return True
    try:
        return bool(jmespath.search(expression, dict(event_doc)))
    except jmespath.exceptions.JMESPathError:
        return False
