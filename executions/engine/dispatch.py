"""Sending node-run messages. Always called after the transaction that queued the runs has
committed; a send that fails (broker down) is only logged: the run stays ``queued`` in the
database and the recovery task sends it again once the broker is back.

Tasks are sent by name (``weconnect.*``), so the engine does not import the task module that
sits on top of it."""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from executions.nodes import get_node_type
from weconnect.celery import app

log = logging.getLogger("weconnect.engine")

# Execution priority -> message priority. On Redis, kombu keeps one list per priority step
# (CELERY_BROKER_TRANSPORT_OPTIONS["priority_steps"], 0 3 6 9) and a worker's BRPOP takes from
# the lowest step first: 0 is the most urgent. Tasks sent by Beat or the web process without a
# priority (recovery, deadline checks) land in step 0 too, ahead of node work.
PRIORITY_VALUES = {"high": 0, "normal": 3, "low": 6}


RUN_NODE = "weconnect.run_node"
CHECK_DEADLINE = "weconnect.check_deadline"
CONCURRENCY_RELEASE = "weconnect.concurrency_release"


@dataclass(frozen=True)
class Dispatch:
    execution_id: str
    node: str
    task_id: str
    timeout_seconds: int
    countdown: float = 0.0
    # The execution's priority. None: the message sending it is a node run's own task, whose
    # priority the new message inherits (CELERY_TASK_INHERIT_PARENT_PRIORITY).
    priority: str | None = None
    # The node's type is pure (NodeType.pure): the task may read the run instead of claiming
    # it and end it in one write. Only a hint: the task checks the type again, and a message
    # without it takes the claim.
    pure: bool = False
    # With the hint, the run's input and its execution's context when they fit
    # (engine/carry.py): the task then need not read them.
    run: dict | None = None


def for_node(execution_id: str, graph, node: str, task_id: str, **fields) -> Dispatch:
    """The message for ``node`` of ``graph``: its time limit and the pure hint from its spec."""
    return Dispatch(
        execution_id,
        node,
        task_id,
        graph.nodes[node].timeout_seconds,
        pure=takes_pure_path(graph, node),
        **fields,
    )


def takes_pure_path(graph, node: str) -> bool:
    """Whether ``node`` may run without a claim: its type declares no side effects, nothing in
    its spec must be decided before it runs (a rate limit is claimed against first), and its
    success ends in one statement (a predecessor of a join, a branching node or one of several
    sinks needs the general path, which starts from a claimed run)."""
    spec = graph.nodes[node]
    node_type = get_node_type(spec.type)
    return bool(
        node_type is not None
        and node_type.pure
        and not spec.rate_limit
        and graph.ends_in_one_statement(node)
    )


def new_task_id() -> str:
    return str(uuid.uuid4())


def time_limits(timeout_seconds: int) -> tuple[int, int]:
    """(soft, hard): the node fails with a timeout at the soft limit; the hard limit a little
    later kills a node that ignores it."""
    soft = max(1, int(timeout_seconds))
    return soft, soft + max(5, soft // 10)


def broker_countdown(seconds: float) -> float | None:
    """The countdown to publish with, or None for at once. RabbitMQ's native delayed delivery
    (quorum queues) counts whole seconds and refuses less than one, so a delay there is
    rounded up: a backoff is never cut short, at the price of under a second."""
    if seconds <= 0:
        return None
    if settings.BROKER_IS_AMQP:
        return float(math.ceil(seconds))
    return seconds


def send(items: list[Dispatch]) -> int:
    """Send now; returns how many were sent."""
    sent = 0
    for item in items:
        soft, hard = time_limits(item.timeout_seconds)
        countdown = min(item.countdown, settings.WECONNECT_MAX_ETA_SECONDS)
        options = {}
        if item.priority is not None:
            options["priority"] = PRIORITY_VALUES[item.priority]
        if item.pure:
            options["kwargs"] = {"pure": True}
            if item.run is not None:
                options["kwargs"]["run"] = item.run
                # Flower and task events show this instead of the run's input.
                options["kwargsrepr"] = repr({"pure": True, "run": f"<node run {item.run['id']}>"})
        try:
            app.send_task(
                RUN_NODE,
                args=[item.execution_id, item.node],
                task_id=item.task_id,
                soft_time_limit=soft,
                time_limit=hard,
                countdown=broker_countdown(countdown),
                **options,
                ignore_result=True,
            )
            sent += 1
        except Exception as exc:  # kombu raises many types when the broker is gone
            log.warning(
                "dispatch failed; recovery will resend",
                extra={"execution_id": item.execution_id, "node": item.node, "error": repr(exc)},
            )
    return sent


def send_on_commit(items: list[Dispatch]) -> None:
    if items:
        transaction.on_commit(lambda: send(items))


def revoke(task_ids: list[str]) -> None:
    """Best effort: revoke is a broadcast kept in worker memory and can be lost; the database
    status is what actually stops a task (it checks before doing anything)."""
    ids = [t for t in task_ids if t]
    if not ids:
        return
    try:
        app.control.revoke(ids)
    except Exception as exc:
        log.warning("revoke failed", extra={"tasks": len(ids), "error": repr(exc)})


def send_deadline_check(execution_id, countdown: float) -> None:
    """Ask for a deadline check of ``execution_id`` in ``countdown`` seconds (best effort:
    the recovery pass times out what a lost check missed)."""
    try:
        app.send_task(
            CHECK_DEADLINE,
            args=[str(execution_id)],
            countdown=broker_countdown(countdown),
            ignore_result=True,
        )
    except Exception as exc:
        log.warning("deadline check not sent", extra={"error": repr(exc)})


def send_concurrency_release(execution_id) -> None:
    """Ask a worker to admit who is next in line behind a finished execution (best effort:
    the recovery pass admits what a lost message missed)."""
    try:
        app.send_task(CONCURRENCY_RELEASE, args=[str(execution_id)], ignore_result=True)
    except Exception as exc:
        log.warning("concurrency release not sent", extra={"error": repr(exc)})
