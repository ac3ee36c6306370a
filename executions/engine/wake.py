"""Waking a parked node run from inside the caller's transaction.

Used when a ``wait_for_event`` run is resumed: the payload is written and the run made due in
one transaction, and the message is sent after commit. If the message is lost (the process
dies right after the commit, the broker is down) the run is still due in the database and
the recovery pass sends it again.
"""

from __future__ import annotations

from django.db import transaction

from executions import store
from executions.engine import dispatch
from executions.engine.snapshots import graph_for
from executions.models import NodeRun


def node_run_wake_locked(*, node_run_id: int, now) -> bool:
    """Make a parked run due now, or mark a still-running one so that it does not park for
    long (store.node_run_wake). Must run inside a transaction. Returns whether it was queued
    and is now due.

    The row lock is taken first, here, and orders this against the park step
    (engine/outcome.py ``park``), which locks the same row before it moves ``running`` to
    ``queued``: either we see it queued and wake it, or it sees our mark (``next_attempt_at``
    set on the running row) and parks due at once. Without the lock a wake could fall between
    the park's read and its write and be lost."""
    assert transaction.get_connection().in_atomic_block, "call inside transaction.atomic()"
    row = (
        # Only the run's row is locked, not the execution's (that would serialize every wake
        # of an execution with its other runs' finishes).
        NodeRun.objects.select_for_update(of=("self",))
        .filter(id=node_run_id)
        .values_list("execution_id", "node", "execution__snapshot_id", "execution__priority")
        .first()
    )
    if row is None:
        return False
    execution_id, node, snapshot_id, priority = row
    task_id = dispatch.new_task_id()
    if not store.node_run_wake(
        node_run_id=node_run_id, execution_id=execution_id, task_id=task_id, now=now
    ):
        return False
    timeout = graph_for(snapshot_id).nodes[node].timeout_seconds
    dispatch.send_on_commit(
        [dispatch.Dispatch(str(execution_id), node, task_id, timeout, priority=priority)]
    )
    return True
