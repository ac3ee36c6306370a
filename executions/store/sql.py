"""The PostgreSQL one-statement forms of the hottest transitions, generated from the
transition table in :mod:`executions.states` so that no status word is typed twice.

Each is a compare-and-set exactly like its ORM counterpart: the allowed source statuses go in
the WHERE clause of the UPDATE on the target row, so a racing second statement, blocked on
the row lock, rechecks them on the committed version and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from executions.states import (
    EXECUTION_ACTIVE,
    EXECUTION_TRANSITIONS,
    NODE_RUN_TRANSITIONS,
    ExecutionStatus,
    NodeRunStatus,
    sources_for,
)

E, N = ExecutionStatus, NodeRunStatus


def _word(status: str) -> str:
    # Status words are identifiers of our own (lower-case letters and underscores), never
    # user input; the check keeps that true for any status added to the table later.
    if not status.replace("_", "").isalpha() or not status.islower():
        raise ValueError(f"not a status word: {status!r}")
    return f"'{status}'"


def in_(statuses: Iterable[str]) -> str:
    """``('a', 'b')`` for an SQL ``IN`` over status words, in a stable order."""
    return "(" + ", ".join(_word(s) for s in sorted(statuses)) + ")"


# The claim: one statement that moves the run to `running` and returns what the task needs.
# The run's own conditions sit on the UPDATE's target row, so when two claims race the second,
# blocked on the row lock, rechecks them on the committed version and claims nothing; the
# execution's conditions (active, within its deadline) come from the join. The first claim of
# an execution also moves it from `pending` to `running` (a compare-and-set of its own, only if
# the claim succeeded).
CLAIM = f"""
WITH claimed AS (
    UPDATE executions_noderun AS nr
       SET status = {_word(N.RUNNING)}, attempts = nr.attempts + 1, started_at = %(now)s,
           lease_expires_at = %(lease)s, task_id = %(task_id)s, next_attempt_at = NULL,
           worker = %(worker)s
      FROM executions_execution AS e, executions_workflow AS w
     WHERE nr.execution_id = %(execution_id)s AND nr.node = %(node)s
       AND e.id = nr.execution_id AND w.id = e.workflow_id
       AND e.status IN {in_(EXECUTION_ACTIVE)} AND e.deadline_at > %(now)s
       AND nr.status IN {in_(sources_for(NODE_RUN_TRANSITIONS, N.RUNNING, [N.QUEUED, N.RETRYING]))}
       AND (nr.next_attempt_at IS NULL OR nr.next_attempt_at <= %(not_before)s)
    RETURNING nr.id, nr.attempts, nr.input, nr.state, nr.retry_delays, nr.reassignments,
              nr.queued_at, nr.started_at, e.status, e.input, e.snapshot_id, e.depth,
              e.parent_node_run_id, w.id AS workflow_id, w.owner_id, nr.attempt_log,
              e.concurrency_key
), started AS (
    UPDATE executions_execution SET status = {_word(E.RUNNING)}, started_at = %(now)s
     WHERE id = %(execution_id)s
       AND status IN {in_(sources_for(EXECUTION_TRANSITIONS, E.RUNNING))}
       AND EXISTS (SELECT 1 FROM claimed)
    RETURNING 1
)
SELECT claimed.*, (SELECT count(*) FROM started) FROM claimed
"""

# How a hop's finish statement recognises the run it ends (its `done` step):
# - after a claim: the run is `running` in the attempt this worker claimed;
# - a pure node type's run, never claimed (see PEEK): the run is still `queued` in the attempt
#   the worker read, due, and its execution active and within its deadline. The same UPDATE
#   counts the attempt and records its start and worker, so the run goes `queued -> succeeded`
#   (or `failed`, routed) in the one write of the hop. Two messages racing for it both compute;
#   the second, blocked on the row lock, rechecks `queued` on the committed version and
#   records nothing.
_DONE_CLAIMED = f"""
    UPDATE executions_noderun
       SET status = %(status)s, output = %(output)s::jsonb, branch = %(branch)s,
           error = %(error)s::jsonb, finished_at = %(now)s, lease_expires_at = NULL
     WHERE execution_id = %(execution_id)s AND node = %(node)s
       AND status = {_word(N.RUNNING)} AND attempts = %(attempt)s
    RETURNING 1"""

_DONE_PURE = f"""
    UPDATE executions_noderun AS nr
       SET status = %(status)s, output = %(output)s::jsonb, branch = %(branch)s,
           error = %(error)s::jsonb, finished_at = %(now)s, lease_expires_at = NULL,
           attempts = nr.attempts + 1, started_at = %(started_at)s, task_id = %(task_id)s,
           next_attempt_at = NULL, worker = %(worker)s
      FROM executions_execution AS e
     WHERE nr.execution_id = %(execution_id)s AND nr.node = %(node)s
       AND e.id = nr.execution_id
       AND e.status IN {in_(EXECUTION_ACTIVE)} AND e.deadline_at > %(now)s
       AND nr.status = {_word(N.QUEUED)} AND nr.attempts = %(attempt)s - 1
       AND (nr.next_attempt_at IS NULL OR nr.next_attempt_at <= %(not_before)s)
    RETURNING 1"""

# The `pending -> running` of the execution that a claim does, for a pure first hop.
_STARTED_PURE = f""", started AS (
    UPDATE executions_execution SET status = {_word(E.RUNNING)}, started_at = %(started_at)s
     WHERE id = %(execution_id)s
       AND status IN {in_(sources_for(EXECUTION_TRANSITIONS, E.RUNNING, [E.PENDING]))}
       AND EXISTS (SELECT 1 FROM done)
    RETURNING 1
)"""


def _end_and_queue(pure: bool) -> str:
    """The end of a run in one statement (autocommit): record the finished run, queue the
    successors that have it as their only predecessor, and count down the joins among its
    successors (`predecessors_left`, returned as it is after this statement: the caller
    decides a join its statement brought to 0). Queueing and counting only happen if this run
    was still ours (`done`) and the execution is active, and only touch successors still
    `pending`. A cancel racing it is ordered by the successors' row locks exactly as in the
    general path. %(status)s is succeeded or failed, checked by the caller against the
    table."""
    return f"""
WITH done AS ({_DONE_PURE if pure else _DONE_CLAIMED}
){_STARTED_PURE if pure else ""}, ex AS (
    SELECT status FROM executions_execution WHERE id = %(execution_id)s
), queued AS (
    UPDATE executions_noderun AS nr
       SET status = {_word(N.QUEUED)}, input = %(output)s::jsonb, queued_at = %(now)s,
           dispatched_at = %(now)s, task_id = v.task_id
      FROM (SELECT unnest(%(succ_nodes)s::text[]) AS node, unnest(%(succ_tasks)s::text[]) AS task_id) AS v
     WHERE nr.execution_id = %(execution_id)s AND nr.node = v.node
       AND nr.status IN {in_(sources_for(NODE_RUN_TRANSITIONS, N.QUEUED, [N.PENDING]))}
       AND EXISTS (SELECT 1 FROM done)
       AND (SELECT status FROM ex) IN {in_(EXECUTION_ACTIVE)}
    RETURNING nr.node, nr.task_id, nr.id
), counted AS (
    UPDATE executions_noderun AS nr
       SET predecessors_left = nr.predecessors_left - 1
     WHERE nr.execution_id = %(execution_id)s AND nr.node = ANY(%(join_nodes)s::text[])
       AND nr.status = {_word(N.PENDING)} AND nr.predecessors_left > 0
       AND EXISTS (SELECT 1 FROM done)
       AND (SELECT status FROM ex) IN {in_(EXECUTION_ACTIVE)}
    RETURNING nr.node, nr.predecessors_left
)
SELECT (SELECT count(*) FROM done), (SELECT status FROM ex),
       ARRAY(SELECT node FROM queued), ARRAY(SELECT task_id FROM queued),
       ARRAY(SELECT node FROM counted), ARRAY(SELECT predecessors_left FROM counted),
       ARRAY(SELECT id FROM queued)
"""


def _end_and_complete(pure: bool) -> str:
    """The last node of a workflow with a single sink, in one statement. Every node of such a
    graph is an ancestor of the sink, and a node only runs once all its predecessors have
    finished, so when the sink succeeds nothing else can be active: the execution is
    complete."""
    return f"""
WITH done AS ({_DONE_PURE if pure else _DONE_CLAIMED}
), fin AS (
    UPDATE executions_execution
       SET status = {_word(E.SUCCEEDED)}, output = %(execution_output)s::jsonb,
           finished_at = %(now)s, started_at = COALESCE(started_at, %(started_at)s)
     WHERE id = %(execution_id)s
       AND status IN {in_(sources_for(EXECUTION_TRANSITIONS, E.SUCCEEDED))}
       AND EXISTS (SELECT 1 FROM done)
    RETURNING parent_node_run_id
)
SELECT (SELECT count(*) FROM done), (SELECT count(*) FROM fin),
       (SELECT parent_node_run_id FROM fin)
"""


END_AND_QUEUE = _end_and_queue(pure=False)
END_AND_COMPLETE = _end_and_complete(pure=False)
PURE_END_AND_QUEUE = _end_and_queue(pure=True)
PURE_END_AND_COMPLETE = _end_and_complete(pure=True)

# A pure node type's read of its run, instead of a claim: nothing is written before it runs.
# The same conditions as the claim's (queued and due, the execution active and within its
# deadline), as a plain SELECT: in autocommit it commits nothing and waits for no disk.
PEEK = f"""
SELECT nr.id, nr.attempts, nr.input, nr.state, nr.retry_delays, nr.reassignments,
       nr.queued_at, e.status, e.input, e.snapshot_id, e.depth, e.parent_node_run_id,
       w.id AS workflow_id, w.owner_id, nr.attempt_log, e.concurrency_key
  FROM executions_noderun AS nr
  JOIN executions_execution AS e ON e.id = nr.execution_id
  JOIN executions_workflow AS w ON w.id = e.workflow_id
 WHERE nr.execution_id = %(execution_id)s AND nr.node = %(node)s
   AND nr.status = {_word(N.QUEUED)}
   AND (nr.next_attempt_at IS NULL OR nr.next_attempt_at <= %(not_before)s)
   AND e.status IN {in_(EXECUTION_ACTIVE)} AND e.deadline_at > %(now)s
"""
