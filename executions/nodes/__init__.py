"""Node types: one module per type, each registering itself on import."""

from executions.nodes import (  # noqa: F401
    condition,
    delay,
    for_each,
    http_request,
    merge,
    noop,
    python,
    stop_and_error,
    sub_workflow,
    switch,
    transform,
    wait_for_event,
)
from executions.nodes.base import (  # noqa: F401
    Context,
    NodeError,
    NodeTimeout,
    NodeType,
    NonRetryableError,
    Result,
    Wait,
    get_node_type,
    node_types,
    register,
    validate_config,
)
