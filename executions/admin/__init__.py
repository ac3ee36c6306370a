"""The admin: workflows edited through the same services as the API, and executions shown as
a run inspector (graph, timeline, failure summary, every node's input and output, history)."""

# The node types load before the credential services: the admin is discovered before this
# app's ready(), and the two import each other.
from executions import nodes  # noqa: F401
from executions.admin import (  # noqa: F401  (registers the admins)
    bulk,
    credentials,
    rate_limits,
    runs,
    schedules,
    workflows,
)
