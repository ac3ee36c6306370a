"""Debounce: triggers of a workflow with the same key within a window become one execution.

A workflow's ``debounce`` is ``{"key": "<template over the input>", "seconds": N, "mode":
"trailing" | "leading"}``. The key is rendered over the trigger's input (``input``, also as
``execution_input``); a key that is not a template is the same for every trigger.

- **trailing**: the first trigger creates a *deferred* execution (no node runs yet) that
  starts ``seconds`` after the latest trigger, with the latest input. Each later trigger with
  the key replaces the input and pushes the start back, under the execution's row lock; the
  start takes the same lock and closes the window, so a trigger either made it into the input
  or opens a new window, never in between. A countdown task starts it when the window ends
  (sending itself again while the window keeps moving); the recovery pass starts it should
  the countdown be lost.
- **leading**: the first trigger starts an execution at once; triggers with the key in the
  ``seconds`` after it join that execution and their input is dropped.

Concurrent first triggers race on the partial unique constraint over (workflow, key) of open
windows: one INSERT wins, the others fail, find the winner under its row lock and join it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from executions.models import Execution, Workflow
from executions.nodes.base import NonRetryableError
from executions.nodes.templating import TemplateProblem, compile_template, is_template, to_json
from executions.services.executions import (
    Conflict,
    execution_create,
    execution_start_deferred,
)
from executions.states import ExecutionStatus

log = logging.getLogger("weconnect.triggers")

TASK_NAME = "weconnect.start_deferred"
MAX_KEY_LENGTH = 255
# A concurrent first trigger that lost the INSERT race tries again this often.
_ATTEMPTS = 5


class DebounceKeyError(ValueError):
    """The key template cannot be rendered over this input (answered as 400)."""


@dataclass
class Triggered:
    execution: Execution
    created: bool
    # None: not debounced; "joined": the input replaced the window's (trailing);
    # "dropped": a leading window's execution was already running, the input is dropped.
    debounced: str | None = None

    @property
    def accepted(self) -> bool:
        """Whether this trigger's input will run (202) rather than nothing new (200)."""
        return self.created or self.debounced == "joined"


def debounce_key(spec: dict[str, Any], input: Any) -> str:
    source = spec["key"]
    if is_template(source):
        try:
            compiled = compile_template(source)
            value = to_json(
                compiled.evaluate({"input": input, "execution_input": input}), "debounce.key"
            )
        except (TemplateProblem, NonRetryableError) as exc:
            raise DebounceKeyError(str(exc)) from None
        except Exception as exc:  # Jinja raises many kinds on a bad input
            raise DebounceKeyError(f"{type(exc).__name__}: {exc}") from None
    else:
        value = source
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) > MAX_KEY_LENGTH:
        text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def trigger_execution(
    *,
    workflow: Workflow,
    input: Any,
    trigger: str,
    idempotency_key: str | None = None,
    priority: str | None = None,
) -> Triggered:
    """Start an execution of ``workflow`` for a trigger with ``input``, collapsing it into an
    open debounce window when the workflow has one. Raises DebounceKeyError, or Conflict when
    the workflow is inactive (no window is joined either)."""
    if not workflow.is_active:
        raise Conflict("workflow is inactive")
    spec = workflow.debounce
    if not spec:
        execution, created = execution_create(
            workflow=workflow,
            input=input,
            trigger=trigger,
            idempotency_key=idempotency_key,
            priority=priority,
        )
        return Triggered(execution, created)
    key = debounce_key(spec, input)
    if idempotency_key:
        existing = Execution.objects.filter(
            workflow=workflow, idempotency_key=idempotency_key
        ).first()
        if existing:
            return Triggered(existing, False)
    seconds = int(spec["seconds"])
    trailing = spec.get("mode", "trailing") == "trailing"
    for _ in range(_ATTEMPTS):
        try:
            with transaction.atomic():
                result = _join_or_open(
                    workflow, key, seconds, trailing, input, trigger, idempotency_key, priority
                )
        except IntegrityError:
            continue  # a concurrent trigger opened the window first: join it
        if result.created and trailing:
            _send_window_end(result.execution.id, seconds)
        return result
    raise RuntimeError(f"debounce window {key!r} could not be opened or joined")


def _join_or_open(
    workflow: Workflow,
    key: str,
    seconds: int,
    trailing: bool,
    input: Any,
    trigger: str,
    idempotency_key: str | None,
    priority: str | None,
) -> Triggered:
    now = timezone.now()
    until = now + timedelta(seconds=seconds)
    # The row lock a window's start also takes: the input is replaced before the start reads
    # it, or the start has closed the window and this trigger opens the next one.
    window = (
        Execution.objects.select_for_update()
        .filter(workflow=workflow, debounce_key=key, debounce_open=True)
        .first()
    )
    if window is not None:
        if trailing and window.deferred and window.status == ExecutionStatus.PENDING:
            if window.not_before is not None and window.not_before > now:
                timeout = int(window.deadline_at.timestamp() - window.not_before.timestamp())
                Execution.objects.filter(id=window.id).update(
                    input=input,
                    not_before=until,
                    debounce_until=until,
                    debounce_triggers=F("debounce_triggers") + 1,
                    deadline_at=until + timedelta(seconds=max(timeout, 0)),
                )
                window.refresh_from_db()
                return Triggered(window, False, "joined")
        elif not trailing and window.debounce_until and window.debounce_until > now:
            Execution.objects.filter(id=window.id).update(
                debounce_triggers=F("debounce_triggers") + 1
            )
            window.refresh_from_db()
            return Triggered(window, False, "dropped")
        # The window is over (its start is due or done): it no longer collects.
        Execution.objects.filter(id=window.id).update(debounce_open=False)
    execution, created = execution_create(
        workflow=workflow,
        input=input,
        trigger=trigger,
        idempotency_key=idempotency_key,
        priority=priority,
        deferred=trailing,
        not_before=until if trailing else None,
        debounce={
            "debounce_key": key,
            "debounce_until": until,
            "debounce_open": True,
            "debounce_triggers": 1,
        },
    )
    return Triggered(execution, created)


def _send_window_end(execution_id, delay: float) -> None:
    """A countdown to the end of the window, after commit; longer waits than a countdown may
    carry arrive in steps (each step sends the next), and recovery covers a lost one."""
    countdown = min(max(delay, 0.0), settings.WECONNECT_MAX_ETA_SECONDS) + 0.05

    def send() -> None:
        try:
            start_deferred.apply_async(args=[str(execution_id)], countdown=countdown)
        except Exception as exc:
            log.warning(
                "debounce countdown not sent; recovery will start it",
                extra={"execution_id": str(execution_id), "error": repr(exc)},
            )

    transaction.on_commit(send)


def debounce_window_end(*, execution_id) -> str:
    """Start the execution when its window has ended, or wait for the window's new end."""
    outcome = execution_start_deferred(execution_id=execution_id)
    if outcome == "waiting":
        not_before = (
            Execution.objects.filter(id=execution_id).values_list("not_before", flat=True).first()
        )
        if not_before is not None:
            _send_window_end(execution_id, (not_before - timezone.now()).total_seconds())
    return outcome


@shared_task(name=TASK_NAME, ignore_result=True, acks_late=True)
def start_deferred(execution_id: str) -> str:
    return debounce_window_end(execution_id=execution_id)
