"""The body of the node task: claim the run, run the node type, record the outcome.

The message only says "look at node X of execution E"; the database decides whether there is
anything to do. A claim is a compare-and-set from ``queued`` (or a due ``retrying``) to
``running`` that also requires the execution to be active and within its deadline, so a
duplicate, late or revoked-but-delivered message changes nothing.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from executions.credentials import redaction
from executions.engine import dispatch, heartbeat, rate_limits
from executions.engine.retry import backoff_delay, should_retry
from executions.engine.scheduler import Finish, node_run_finish
from executions.engine.snapshots import graph_for
from executions.graph import is_error_output
from executions.models import Execution, NodeRun, Workflow
from executions.nodes import Context, NodeError, NodeTimeout, Result, Wait, get_node_type
from executions.states import EXECUTION_ACTIVE, ExecutionStatus, NodeRunStatus
from monitoring import counters

log = logging.getLogger("weconnect.engine")
N = NodeRunStatus

# An escaped NUL (\u0000 preceded by an even number of backslashes) in JSON text.
_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

# A message may arrive a little before the time it was meant for.
_EARLY_TOLERANCE = timedelta(seconds=1)


# The claim on PostgreSQL: one statement that moves the run to `running` and returns what the
# task needs. The run's own conditions sit on the UPDATE's target row, so when two claims race
# the second, blocked on the row lock, rechecks them on the committed version and claims
# nothing; the execution's conditions (active, within its deadline) come from the join.
# The first claim of an execution also moves it from `pending` to `running` (a
# compare-and-set of its own, only if the claim succeeded).
_CLAIM_SQL = """
WITH claimed AS (
    UPDATE executions_noderun AS nr
       SET status = 'running', attempts = nr.attempts + 1, started_at = %(now)s,
           lease_expires_at = %(lease)s, task_id = %(task_id)s, next_attempt_at = NULL
      FROM executions_execution AS e, executions_workflow AS w
     WHERE nr.execution_id = %(execution_id)s AND nr.node = %(node)s
       AND e.id = nr.execution_id AND w.id = e.workflow_id
       AND e.status IN ('pending', 'running') AND e.deadline_at > %(now)s
       AND nr.status IN ('queued', 'retrying')
       AND (nr.next_attempt_at IS NULL OR nr.next_attempt_at <= %(not_before)s)
    RETURNING nr.id, nr.attempts, nr.input, nr.state, nr.retry_delays, nr.reassignments,
              nr.queued_at, nr.started_at, e.status, e.input, e.snapshot_id, e.depth,
              e.parent_node_run_id, w.id AS workflow_id, w.owner_id
), started AS (
    UPDATE executions_execution SET status = 'running', started_at = %(now)s
     WHERE id = %(execution_id)s AND status = 'pending'
       AND EXISTS (SELECT 1 FROM claimed)
    RETURNING 1
)
SELECT claimed.*, (SELECT count(*) FROM started) FROM claimed
"""


def _json(value: Any) -> Any:
    # Django reads jsonb as text through its psycopg configuration; decode it here.
    return json.loads(value) if isinstance(value, str) else value


def _claim_postgres(execution_id: str, node: str, task_id: str, now, lease) -> NodeRun | None:
    with connection.cursor() as cursor:
        cursor.execute(
            _CLAIM_SQL,
            {
                "now": now,
                "lease": lease,
                "task_id": task_id,
                "execution_id": execution_id,
                "node": node,
                "not_before": now + _EARLY_TOLERANCE,
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    (
        run_id,
        attempts,
        input_,
        state,
        delays,
        reassignments,
        queued_at,
        started_at,
        ex_status,
        ex_input,
        snapshot_id,
        depth,
        parent_id,
        workflow_id,
        owner_id,
        started,
    ) = row
    if started:
        ex_status = ExecutionStatus.RUNNING
    workflow = Workflow(id=workflow_id, owner_id=owner_id)
    execution = Execution(
        id=execution_id if not isinstance(execution_id, str) else uuid.UUID(execution_id),
        status=ex_status,
        input=_json(ex_input),
        snapshot_id=snapshot_id,
        depth=depth,
        parent_node_run_id=parent_id,
        workflow=workflow,
    )
    return NodeRun(
        id=run_id,
        execution=execution,
        node=node,
        status=N.RUNNING,
        attempts=attempts,
        input=_json(input_),
        state=_json(state),
        retry_delays=_json(delays) or [],
        reassignments=reassignments,
        queued_at=queued_at,
        started_at=started_at,
        task_id=task_id,
    )


def _claim(execution_id: str, node: str, task_id: str, redelivered: bool, now) -> NodeRun | None:
    lease = now + timedelta(seconds=settings.WECONNECT_LEASE_SECONDS)
    if connection.vendor == "postgresql":
        run = _claim_postgres(execution_id, node, task_id, now, lease)
        if run is not None:
            return run
        if not redelivered:
            _check_deadline(execution_id, now)
            return None
    # The execution's conditions go in a subquery on the execution alone, never as a join: an
    # UPDATE filtered through a join is rewritten by Django as `id IN (SELECT ... self-join)`,
    # and a second claim blocked on the row lock would then recheck the run's status on the
    # stale copy in that subquery and claim the run a second time. Conditions on the row
    # itself are rechecked on its committed version, so one of two racing claims wins.
    base = NodeRun.objects.filter(
        execution_id__in=Execution.objects.filter(
            id=execution_id, status__in=EXECUTION_ACTIVE, deadline_at__gt=now
        ).values("id"),
        node=node,
    )
    claimed = base.filter(
        Q(status=N.QUEUED) | Q(status=N.RETRYING),
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + _EARLY_TOLERANCE),
    ).update(
        status=N.RUNNING,
        attempts=F("attempts") + 1,
        started_at=now,
        lease_expires_at=lease,
        task_id=task_id,
        next_attempt_at=None,
    )
    if not claimed and redelivered:
        # The broker handed this message back because the process running it died (a pool
        # child killed, or a whole worker after the visibility timeout). Take the run over if
        # it is still ours; node time limits stay below the visibility timeout, so a
        # redelivered message never races a live run of itself.
        claimed = base.filter(
            status=N.RUNNING,
            task_id=task_id,
            reassignments__lt=settings.WECONNECT_MAX_REASSIGNMENTS,
        ).update(
            attempts=F("attempts") + 1,
            reassignments=F("reassignments") + 1,
            started_at=now,
            lease_expires_at=lease,
        )
        if claimed:
            log.warning(
                "took over a run whose worker was lost",
                extra={"execution_id": execution_id, "node": node, "task_id": task_id},
            )
    if not claimed:
        _check_deadline(execution_id, now)
        return None
    return (
        NodeRun.objects.select_related("execution", "execution__workflow")
        .only(
            "id",
            "node",
            "attempts",
            "input",
            "state",
            "retry_delays",
            "reassignments",
            "execution__id",
            "execution__status",
            "execution__input",
            "execution__snapshot_id",
            "execution__depth",
            "execution__parent_node_run_id",
            "execution__workflow__owner_id",
            "execution__workflow__id",
            "queued_at",
            "started_at",
        )
        .get(execution_id=execution_id, node=node)
    )


def _check_deadline(execution_id: str, now) -> None:
    from executions.services.executions import execution_time_out_if_due

    execution_time_out_if_due(execution_id=execution_id, now=now)


def _upstream_loader(execution_id: str, keys: list[str]):
    def load() -> dict[str, Any]:
        return dict(
            NodeRun.objects.filter(
                execution_id=execution_id, node__in=keys, status=N.SUCCEEDED
            ).values_list("node", "output")
        )

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


def _error_doc(exc: BaseException, error_type: str | None = None, **extra) -> dict[str, Any]:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {"error": True, "message": message, "type": error_type or type(exc).__name__, **extra}


def _check_output(output: Any) -> None:
    try:
        text = json.dumps(output, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NodeError(
            f"node output is not JSON: {exc}", retryable=False, error_type="InvalidOutput"
        ) from None
    if _NUL.search(text):  # valid JSON, but PostgreSQL's jsonb cannot store a NUL character
        raise NodeError(
            "node output contains a NUL character", retryable=False, error_type="InvalidOutput"
        )
    size = len(text.encode())
    limit = settings.WECONNECT_MAX_OUTPUT_BYTES
    if size > limit:
        raise NodeError(
            f"node output of {size} bytes exceeds WECONNECT_MAX_OUTPUT_BYTES ({limit})",
            retryable=False,
            error_type="OutputTooLarge",
        )


def node_run_execute(
    *, execution_id: str, node: str, task_id: str, redelivered: bool = False
) -> str:
    """Run one attempt of a node run. Returns a short word for logs and tests."""
    now = timezone.now()
    run = _claim(execution_id, node, task_id, redelivered, now)
    if run is None:
        return "skipped"
    execution = run.execution
    if execution.status == ExecutionStatus.PENDING:
        Execution.objects.filter(id=execution.id, status=ExecutionStatus.PENDING).update(
            status=ExecutionStatus.RUNNING, started_at=now
        )
    graph = graph_for(execution.snapshot_id)
    spec = graph.nodes[node]
    node_type = get_node_type(spec.type)
    attempt = run.attempts
    fields = {"execution_id": str(execution.id), "node": node, "attempt": attempt}
    log.info("node started", extra=fields)
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
    )
    if spec.rate_limit:
        waiting = _wait_for_rate_limit(execution, graph, run, attempt, ctx, fields)
        if waiting is not None:
            return waiting
    failure: NodeError | None = None
    value: Any = None
    # The values of every credential the node resolves are collected here, redacted from log
    # lines while it runs, and from its output, error and wait state before they are stored.
    secrets = redaction.Secrets()
    secrets_token = redaction.activate(secrets)
    heartbeat.begin(run.id, attempt)
    try:
        if node_type is None:
            raise NodeError(f"unknown node type {spec.type!r}", retryable=False)
        value = node_type.run(ctx)
        if not isinstance(value, Wait):
            _check_output(value.output if isinstance(value, Result) else value)
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

    if failure is not None:
        return _record_failure(execution, graph, run, attempt, failure, fields)
    if isinstance(value, Wait):
        return _park(execution, graph, run, attempt, value, fields)
    output, branch = (value.output, value.branch) if isinstance(value, Result) else (value, None)
    explicit = value.failed if isinstance(value, Result) else None
    errored = (
        explicit
        if explicit is not None
        else (node_type.detects_error_output and is_error_output(output))
    )
    if errored:
        result = Finish(
            N.FAILED,
            output,
            branch,
            {"message": "node returned an error output", "type": "ErrorOutput"},
        )
    else:
        result = Finish(N.SUCCEEDED, output, branch)
    recorded = node_run_finish(
        execution=execution, graph=graph, node=node, attempt=attempt, result=result
    )
    if recorded:
        counters.observe_node_run(run=run, node_type=spec.type, status=result.status)
    log.info("node %s", result.status if recorded else "discarded", extra=fields)
    return result.status if recorded else "discarded"


def _record_failure(
    execution, graph, run: NodeRun, attempt: int, failure: NodeError, fields
) -> str:
    spec = graph.nodes[run.node]
    if should_retry(attempt, spec.retry, failure.retryable):
        delay = (
            failure.retry_after
            if failure.retry_after is not None
            else backoff_delay(attempt, spec.retry)
        )
        delay = max(0.0, float(delay))
        now = timezone.now()
        with transaction.atomic():
            changed = _reschedule(
                execution,
                spec,
                run,
                attempt,
                N.RETRYING,
                now,
                now + timedelta(seconds=delay),
                error=_error_doc(failure, failure.error_type, attempt=attempt, **failure.details),
                retry_delays=[*run.retry_delays, round(delay, 3)],
            )
        if changed:
            counters.record_retry(spec.type)
        log.warning("node will retry in %.3fs: %s", delay, failure.message, extra=fields)
        return "retrying" if changed else "discarded"
    output = _error_doc(failure, failure.error_type, **failure.details)
    recorded = node_run_finish(
        execution=execution,
        graph=graph,
        node=run.node,
        attempt=attempt,
        result=Finish(N.FAILED, output, None, {**output, "attempts": attempt}),
    )
    if recorded:
        counters.observe_node_run(run=run, node_type=spec.type, status=N.FAILED)
    log.warning("node failed: %s", failure.message, extra=fields)
    return N.FAILED if recorded else "discarded"


def _park(execution, graph, run: NodeRun, attempt: int, wait: Wait, fields) -> str:
    """Put the run back to ``queued`` until ``wait.until`` (or until woken), without counting
    the wait as an attempt. No worker is held while it waits."""
    spec = graph.nodes[run.node]
    now = timezone.now()
    until = wait.until
    # A wait with no time (a sub-workflow) is bounded by the execution's deadline.
    not_before = (
        until
        if until is not None
        else Execution.objects.values_list("deadline_at", flat=True).get(id=execution.id)
    )
    with transaction.atomic():
        # A wake that arrived while the node was still running (its sub-workflow finished
        # before it parked) left next_attempt_at set on the running row: resume at once.
        row = (
            NodeRun.objects.select_for_update()
            .filter(id=run.id, status=N.RUNNING, attempts=attempt)
            .values_list("next_attempt_at", flat=True)
        )
        if row and row[0] is not None:
            not_before = now
        changed = _reschedule(
            execution,
            spec,
            run,
            attempt,
            N.QUEUED,
            now,
            not_before,
            may_send=until is not None or not_before == now,
            attempts=F("attempts") - 1,
            state=dict(wait.state),
        )
    log.info("node waiting until %s", not_before.isoformat(), extra=fields)
    return "waiting" if changed else "discarded"


def _wait_for_rate_limit(execution, graph, run: NodeRun, attempt: int, ctx, fields) -> str | None:
    """Take the node's start token, or park the run until one may be free.

    The token is taken here, after the claim: a duplicate or late message that claims nothing
    never spends one. A run that gets no token goes back to ``queued`` with its attempt not
    counted (as a ``Wait`` does) and ``waiting_for`` saying why, freeing the worker. Returns
    None when the node may run now."""
    try:
        decision = rate_limits.rate_limit_take(ctx)
    except NodeError as exc:
        return _record_failure(execution, graph, run, attempt, exc, fields)
    if decision.granted_at is not None:
        # The recorded start of a limited run is its grant time on Redis's clock: every run
        # sharing the limit is timed on that one clock, the one the limit is exact on.
        NodeRun.objects.filter(id=run.id, status=N.RUNNING, attempts=attempt).update(
            started_at=decision.granted_at, waiting_for=None
        )
        return None
    now = timezone.now()
    until = now + timedelta(milliseconds=decision.wait_ms)
    with transaction.atomic():
        changed = _reschedule(
            execution,
            graph.nodes[run.node],
            run,
            attempt,
            N.QUEUED,
            now,
            until,
            attempts=F("attempts") - 1,
            waiting_for=decision.waiting_for(until),
        )
    log.info(
        "node waiting for rate limit %s until %s", decision.name, until.isoformat(), extra=fields
    )
    return "rate_limited" if changed else "discarded"


def _reschedule(
    execution,
    spec,
    run: NodeRun,
    attempt: int,
    status: str,
    now,
    not_before,
    *,
    may_send: bool = True,
    **fields,
) -> bool:
    """Move attempt ``attempt`` from ``running`` to ``status`` (retrying, or queued for a wait),
    due at ``not_before``. Must run inside a transaction.

    Short delays ride a Celery countdown sent after commit; longer ones are held in the
    database (``dispatched_at`` empty) and sent by the recovery task when due, never as an
    ETA near the visibility timeout, which Redis would deliver twice."""
    delay = max(0.0, (not_before - now).total_seconds())
    sent_now = may_send and delay <= settings.WECONNECT_MAX_ETA_SECONDS
    task_id = dispatch.new_task_id()
    changed = NodeRun.objects.filter(id=run.id, status=N.RUNNING, attempts=attempt).update(
        status=status,
        next_attempt_at=not_before,
        task_id=task_id,
        dispatched_at=now if sent_now else None,
        lease_expires_at=None,
        **fields,
    )
    if changed and sent_now:
        dispatch.send_on_commit(
            [dispatch.Dispatch(str(execution.id), run.node, task_id, spec.timeout_seconds, delay)]
        )
    return bool(changed)
