"""The workflow helpers, under the name the tests have always imported them by (their home is
tests/support/workflows.py)."""

from tests.support.workflows import (  # noqa: F401
    edge,
    make_workflow,
    node,
    run,
    runs_by_node,
    wait_all,
    wait_for,
    workflow_doc,
)
