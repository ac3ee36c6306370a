"""Node types: one module per type, each registering itself on import."""

from executions.nodes import http_request, noop  # noqa: F401
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
