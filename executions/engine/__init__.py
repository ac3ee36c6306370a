"""The execution engine, in the order a node run meets it.

- ``start``: an execution and its node runs created, the start nodes dispatched.
- ``dispatch``: sending task messages by name, only after commit.
- ``execute``: the body of the node task (claim, run the node type, hand the outcome on).
- ``outcome``: a retry after a backoff, a park (wait), or a failure.
- ``routing``: what a finished run makes ready (successors, joins, skips).
- ``completion``: the end of an execution (complete, stop, fail, cancel, time out) and the
  wake-up of a waiting parent.
- ``recovery``: re-dispatching what the broker lost and reclaiming runs whose worker died.
- ``heartbeat``, ``retry``, ``snapshots``, ``deadlocks``: their small tools.

Every status it changes is changed through :mod:`executions.store`.
"""
