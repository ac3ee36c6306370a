"""The body of the node task: claim the run, run the node type, hand the outcome on.

The message only says "look at node X of execution E" (a pure node's may also carry its input
and its execution's context, see engine/carry.py); the database decides whether there is
anything to do. A claim is a compare-and-set from ``queued`` (or a due ``retrying``) to
``running`` that also requires the execution to be active and within its deadline, so a
duplicate, late or revoked-but-delivered message changes nothing.

A pure node type (no side effects) skips the claim: its run is read, the type runs, and the
statement that records the end is itself the compare-and-set (only from ``queued``, in the
attempt that was read). A hop is then one write instead of two; a duplicate message at worst
computes the same function again, and one result is kept.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from executions import counters, jsonsafe, store
from executions.credentials import redaction
from executions.engine import carry, dispatch, heartbeat
from executions.engine.completion import children_canceller, execution_time_out_if_due
from executions.engine.outcome import park, record_failure, result_not_stored, wait_for_rate_limit
from executions.engine.routing import Finish, node_run_finish
from executions.engine.snapshots import graph_for
from executions.engine.start import child_starter
from executions.errors import NodeError, NodeTimeout
from executions.graph import Outcome, edge_fires, is_error_output
from executions.models import NodeRun
from executions.nodes import Context, Result, Wait, get_node_type
from executions.states import ExecutionStatus, NodeRunStatus
from weconnect import tracing

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus

# A message may arrive a little before the time it was meant for.
_EARLY_TOLERANCE = timedelta(seconds=1)


def claim(execution_id: str, node: str, task_id: str, redelivered: bool, now) -> NodeRun | None:
    """Claim the run for this message, or take it over when the broker redelivered the
    message of a process that died; None when there is nothing to do."""
    lease = now + timedelta(seconds=settings.WECONNECT_LEASE_SECONDS)
    run = store.node_run_claim(
        execution_id=execution_id,
        node=node,
        task_id=task_id,
        now=now,
        lease=lease,
        not_before=now + _EARLY_TOLERANCE,
    )
    if run is None and redelivered:
        # The broker handed this message back because the process running it died (a pool
        # child killed, or a whole worker after the visibility timeout). Take the run over if
        # it is still ours; node time limits stay below the visibility timeout, so a
        # redelivered message never races a live run of itself.
        run = store.node_run_take_over(
            execution_id=execution_id,
            node=node,
            task_id=task_id,
            now=now,
            lease=lease,
            max_reassignments=settings.WECONNECT_MAX_REASSIGNMENTS,
        )
        if run is not None:
            log.warning(
                "took over a run whose worker was lost",
                extra={"execution_id": execution_id, "node": node, "task_id": task_id},
            )
    if run is None:
        execution_time_out_if_due(execution_id=execution_id, now=now)
    return run


def _upstream_loader(execution_id: str, keys: list[str]):
    def load() -> dict[str, Any]:
        return dict(
            NodeRun.objects.filter(
                execution_id=execution_id, node__in=keys, status=N.SUCCEEDED
            ).values_list("node", "output")
        )

    return load


def _fired_loader(execution_id: str, graph, node: str, predecessors: tuple[str, ...]):
    def load() -> list[str]:
        # Which predecessors fired, decided exactly as routing did when it queued this run.
        outcomes = {
            key: Outcome(status, branch)
            for key, status, branch in NodeRun.objects.filter(
                execution_id=execution_id, node__in=predecessors
            ).values_list("node", "status", "branch")
        }
        incoming = graph.incoming[node]
        return [
            p
            for p in predecessors
            if p in outcomes and any(edge_fires(e, outcomes[p]) for e in incoming if e.source == p)
        ]

    return load


def _ancestors(graph, node: str) -> list[str]:
    seen: set[str] = set()
    stack = list(graph.predecessors(node))
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack.extend(graph.predecessors(k))
    return sorted(seen)


def check_output(output: Any) -> int:
    try:
        text = json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NodeError(
            f"node output is not JSON: {exc}", retryable=False, error_type="InvalidOutput"
        ) from None
    except RecursionError:
        text = None  # nested too deeply: the check below names where
    # Valid JSON that PostgreSQL's jsonb still refuses (a NUL character, a lone surrogate):
    # found here, the node fails once; found by the database, the finish statement would fail.
    # json.dumps writes both as \u escapes, so only such a text is walked to name the place
    # (the walk costs a few times the encoding on a large output).
    if text is None or "\\u0000" in text or "\\ud" in text:
        try:
            jsonsafe.check(output, max_depth=jsonsafe.MAX_OUTPUT_DEPTH, root="output")
        except jsonsafe.Unstorable as exc:
            raise NodeError(
                f"node output cannot be stored: {exc}",
                retryable=False,
                error_type="InvalidOutput",
            ) from None
    if text is None:
        raise NodeError(
            "node output cannot be stored: it is nested too deeply to encode",
            retryable=False,
            error_type="InvalidOutput",
        )
    size = len(text.encode())
    limit = settings.WECONNECT_MAX_OUTPUT_BYTES
    if size > limit:
        raise NodeError(
            f"node output of {size} bytes exceeds WECONNECT_MAX_OUTPUT_BYTES ({limit})",
            retryable=False,
            error_type="OutputTooLarge",
        )
    return size


def _claim_started(execution_id: str, node: str, task_id: str, redelivered: bool):
    """The claim, with the execution started if the claim did not start it (the ORM form)."""
    now = timezone.now()
    run = claim(execution_id, node, task_id, redelivered, now)
    if run is not None and run.execution.status == ExecutionStatus.PENDING:
        store.execution_start(execution_id=run.execution.id, now=now)
    return run


def _read(execution_id: str, node: str, task_id: str, redelivered: bool, pure: bool, carried):
    """The run this message is for: taken from the message (``carried``, see engine/carry.py)
    or read without a claim when the message says the node is pure (PostgreSQL, autocommit)
    and the run is queued and due, else claimed. Returns (run, the PureStart its end needs or
    None when it was claimed); (None, None) when there is nothing to do."""
    if pure and connection.vendor == "postgresql" and not connection.in_atomic_block:
        now = timezone.now()
        not_before = now + _EARLY_TOLERANCE
        if carried is not None:
            try:
                run = carry.run_from(execution_id, node, carried, now)
            except (KeyError, TypeError, ValueError) as exc:  # not ours: read instead
                log.warning("carried context ignored", extra={"node": node, "error": repr(exc)})
            else:
                return run, store.PureStart(started_at=now, task_id=task_id, not_before=not_before)
        run = store.node_run_peek(
            execution_id=execution_id, node=node, now=now, not_before=not_before
        )
        if run is not None:
            return run, store.PureStart(started_at=now, task_id=task_id, not_before=not_before)
        # Not queued and due: retrying, running (a redelivery to take over), timed out, or
        # gone. The claim tells which.
    return _claim_started(execution_id, node, task_id, redelivered), None


def node_run_execute(
    *,
    execution_id: str,
    node: str,
    task_id: str,
    redelivered: bool = False,
    pure: bool = False,
    carried: dict | None = None,
) -> str:
    """Run one attempt of a node run. Returns a short word for logs and tests.

    ``pure`` is the message's hint that the node's type has no side effects: its run is then
    read instead of claimed, and ended from ``queued`` in the one write of the hop. Whatever
    that one statement cannot express (a failure to retry or route, a join or a skip among the
    successors, one of several sinks) claims the run first, exactly as an impure node does.
    """
    run, pure_start = _read(execution_id, node, task_id, redelivered, pure, carried)
    if run is None:
        return "skipped"
    execution = run.execution
    graph = graph_for(execution.snapshot_id)
    spec = graph.nodes[node]
    if pure_start is not None and not dispatch.takes_pure_path(graph, node):
        # The hint does not hold for this node (a message sent by hand): claim as usual.
        run, pure_start = _claim_started(execution_id, node, task_id, redelivered), None
        if run is None:
            return "skipped"
        execution = run.execution
    node_type = get_node_type(spec.type)
    attempt = run.attempts
    fields = {"execution_id": str(execution.id), "node": node, "attempt": attempt}
    tracing.annotate_node_run(
        workflow_id=execution.workflow.id, node_type=spec.type, attempt=attempt
    )
    log.info("node started", extra=fields)
    predecessors = tuple(dict.fromkeys(e.source for e in graph.incoming[node]))
    ctx = Context(
        execution_id=str(execution.id),
        node_run_id=run.id,
        workflow_id=str(execution.workflow.id),
        owner_id=execution.workflow.owner_id,
        node=spec,
        input=run.input,
        execution_input=execution.input,
        attempt=attempt,
        depth=execution.depth,
        state=run.state,
        _load_nodes=_upstream_loader(str(execution.id), _ancestors(graph, node)),
        predecessors=predecessors,
        _load_fired=_fired_loader(str(execution.id), graph, node, predecessors),
        start_child=child_starter(node_run_id=run.id, depth=execution.depth),
        cancel_children=children_canceller(node_run_id=run.id),
    )
    if spec.rate_limit:
        waiting = wait_for_rate_limit(execution, graph, run, attempt, ctx, fields)
        if waiting is not None:
            return waiting
    failure: NodeError | None = None
    value: Any = None
    size: int | None = None
    # The values of every credential the node resolves are collected here, redacted from log
    # lines while it runs, and from its output, error and wait state before they are stored.
    secrets = redaction.Secrets()
    secrets_token = redaction.activate(secrets)
    if pure_start is None:
        heartbeat.begin(run.id, attempt)
    else:
        heartbeat.ensure_running()
    try:
        if node_type is None:
            raise NodeError(f"unknown node type {spec.type!r}", retryable=False)
        value = node_type.run(ctx)
        if not isinstance(value, Wait):
            size = check_output(value.output if isinstance(value, Result) else value)
    except SoftTimeLimitExceeded:
        failure = NodeTimeout(f"node ran past its timeout of {spec.timeout_seconds}s")
    except NodeError as exc:
        failure = exc
    except Exception as exc:  # a bug or an unexpected error in a node: retryable
        log.exception("node raised", extra=fields)
        failure = NodeError(str(exc) or type(exc).__name__, error_type=type(exc).__name__)
    finally:
        heartbeat.end()
        redaction.deactivate(secrets_token)
    if secrets:
        value, failure = redaction.redact_outcome(secrets, value, failure)

    returned = failure is None and not isinstance(value, Wait)
    result = _finish(value, node_type, size) if returned else None
    if pure_start is not None:
        if result is not None:
            try:
                recorded = node_run_finish(
                    execution=execution,
                    graph=graph,
                    node=node,
                    attempt=attempt,
                    result=result,
                    pure=pure_start,
                )
            except DatabaseError as exc:
                failure, recorded = result_not_stored(exc, fields), None
            if recorded is not None:
                if not recorded:
                    # No longer queued and due, or its execution stopped: the claim would
                    # have found the same, and timed the execution out if it is past due.
                    execution_time_out_if_due(execution_id=execution_id, now=timezone.now())
                return _ended(recorded, run, spec, result, fields)
        # A retry, a route, a park, or an end the one statement cannot express: all of them
        # start from a claimed run.
        run = _claim_started(execution_id, node, task_id, redelivered)
        if run is None:
            log.info("node discarded", extra=fields)
            return "discarded"
        execution, attempt = run.execution, run.attempts
        fields["attempt"] = attempt
    if failure is not None:
        return record_failure(execution, graph, run, attempt, failure, fields)
    if isinstance(value, Wait):
        return park(execution, graph, run, attempt, value, fields)
    try:
        recorded = node_run_finish(
            execution=execution, graph=graph, node=node, attempt=attempt, result=result
        )
    except DatabaseError as exc:
        failure = result_not_stored(exc, fields)
        return record_failure(execution, graph, run, attempt, failure, fields)
    return _ended(recorded, run, spec, result, fields)


def _finish(value: Any, node_type, size: int | None) -> Finish:
    """What a node's returned value records: succeeded, or failed when the value says so
    (``Result.failed``, or the error-output convention where the type applies it)."""
    output, branch = (value.output, value.branch) if isinstance(value, Result) else (value, None)
    explicit = value.failed if isinstance(value, Result) else None
    errored = (
        explicit
        if explicit is not None
        else (node_type.detects_error_output and is_error_output(output))
    )
    if errored:
        return Finish(
            N.FAILED,
            output,
            branch,
            {"message": "node returned an error output", "type": "ErrorOutput"},
            output_bytes=size,
        )
    return Finish(N.SUCCEEDED, output, branch, output_bytes=size)


def _ended(recorded: bool, run: NodeRun, spec, result: Finish, fields: dict) -> str:
    if recorded:
        counters.observe_node_run(run=run, node_type=spec.type, status=result.status)
    log.info("node %s", result.status if recorded else "discarded", extra=fields)
    return result.status if recorded else "discarded"
