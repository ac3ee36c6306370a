"""The store: the only code that writes the status of an execution or a node run.

One function per transition, named ``<entity>_<action>``, keyword-only, its allowed sources
taken from the transition table in :mod:`executions.states`; each is a compare-and-set that
returns whether it changed anything. The PostgreSQL one-statement forms (claim, peek,
end-and-queue, end-and-complete, and the latter two for a pure node type's run ended straight
from ``queued``) are generated from the same table in :mod:`executions.store.sql`.
tests/test_architecture.py fails when a status is written anywhere else.
"""

from executions.store.bulk import bulk_operation_claim, bulk_operation_finish  # noqa: F401
from executions.store.executions import (  # noqa: F401
    execution_admit,
    execution_end,
    execution_pause,
    execution_queue,
    execution_start,
    execution_succeed,
    execution_unpause,
)
from executions.store.node_runs import (  # noqa: F401
    PureStart,
    node_run_claim,
    node_run_count_down,
    node_run_end,
    node_run_end_and_complete,
    node_run_end_and_queue,
    node_run_extend_lease,
    node_run_peek,
    node_run_queue,
    node_run_reclaim,
    node_run_record_start,
    node_run_redispatch,
    node_run_reschedule,
    node_run_skip,
    node_run_take_over,
    node_run_wake,
    node_runs_cancel,
    node_runs_create,
    node_runs_recount,
)
