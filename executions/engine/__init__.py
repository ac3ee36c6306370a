"""The execution engine.

- ``locks``: the Redis lock that guards a join's scheduling step.
- ``dispatch``: sending node-run messages, only after commit.
- ``retry``: the backoff policy.
- ``scheduler``: what happens when a node run finishes (routing, joins, skips, completion).
- ``runner``: the body of the node task (claim, run, record).
- ``recovery``: re-dispatching what the broker lost and reclaiming runs whose worker died.
"""
