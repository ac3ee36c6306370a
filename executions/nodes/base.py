"""The node-type contract: what a node type declares and what the engine hands it.

A node type is a class with a ``type`` name, a ``description``, a JSON Schema for its
``config`` (published at /api/node-types/ and enforced when a workflow is saved) and a
``run(ctx)`` method. ``run`` returns the node's output (any JSON value), a :class:`Result`
to also select a branch, or a :class:`Wait` to park the run without holding a worker.
It raises :class:`NodeError` for failures; ``retryable=False`` skips the retry policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar

from jsonschema import Draft202012Validator

from executions.errors import NodeError, NodeTimeout, NonRetryableError  # noqa: F401
from executions.graph import NodeSpec


@dataclass(frozen=True)
class Result:
    output: Any
    branch: str | None = None
    # Set to decide success or failure explicitly instead of by the generic error convention
    # (http_request: a status listed in allowed_status is a success even when >= 400).
    failed: bool | None = None


@dataclass(frozen=True)
class Wait:
    """Park the node run until ``until`` (or until woken, when None); ``state`` is handed
    back in ``ctx.state`` when the run resumes. The worker is free while it waits."""

    until: datetime | None
    state: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    execution_id: str
    node_run_id: int
    workflow_id: str
    owner_id: int
    node: NodeSpec
    input: Any
    execution_input: Any
    attempt: int
    depth: int
    state: Mapping[str, Any] | None
    _load_nodes: Callable[[], dict[str, Any]] = field(repr=False, default=dict)
    # The direct predecessors, in the order of the workflow's connections.
    predecessors: tuple[str, ...] = ()
    _load_fired: Callable[[], list[str]] = field(repr=False, default=list)
    # Starts a child execution of ``workflow`` with ``input``, pointing back at this node run
    # (idempotent per node run); given by the engine, so node types import no service.
    start_child: Callable[..., Any] | None = field(repr=False, default=None)
    # Cancels the unfinished children this node run started, with a reason; returns how many.
    cancel_children: Callable[[str], int] | None = field(repr=False, default=None)

    @cached_property
    def nodes(self) -> dict[str, Any]:
        """Outputs of the finished upstream nodes, by key (loaded on first use)."""
        return self._load_nodes()

    @cached_property
    def fired(self) -> list[str]:
        """The predecessors whose connection to this node fired, in connection order, decided
        exactly as the engine did when it queued this run (loaded on first use)."""
        return self._load_fired()

    @property
    def config(self) -> Mapping[str, Any]:
        return self.node.config


class NodeType:
    type: ClassVar[str]
    description: ClassVar[str] = ""
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }

    # Whether the generic error convention (executions.graph.is_error_output) applies to this
    # type's output. Pass-through types (noop, merge, delay, routing) turn it off: an error
    # handler made of a noop receives the error document and must not fail because of it.
    detects_error_output: ClassVar[bool] = True

    # A pure type has no side effects: running it twice on the same input is harmless, so its
    # run is not claimed before it runs. The worker reads the run, runs the type, and one
    # statement ends the run only if it is still queued and queues its successors (a
    # duplicate message at worst computes the same result again, and one is kept). Types that
    # call out, start children, wait or keep state between attempts leave it False.
    pure: ClassVar[bool] = False

    def check_config(self, config: Mapping[str, Any]) -> list[str]:
        """Checks beyond the JSON Schema (expressions that must compile, and so on)."""
        return []

    def run(self, ctx: Context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


_registry: dict[str, NodeType] = {}
_validators: dict[str, Draft202012Validator] = {}


def register(cls: type[NodeType]) -> type[NodeType]:
    Draft202012Validator.check_schema(cls.config_schema)
    _registry[cls.type] = cls()
    _validators[cls.type] = Draft202012Validator(cls.config_schema)
    return cls


def get_node_type(name: str) -> NodeType | None:
    return _registry.get(name)


def node_types() -> dict[str, NodeType]:
    return dict(sorted(_registry.items()))


def validate_config(type_name: str, config: Any) -> list[str]:
    """Every reason ``config`` does not fit ``type_name``, as readable strings."""
    node_type = _registry.get(type_name)
    if node_type is None:
        return [f"unknown node type {type_name!r}"]
    errors = []
    for err in sorted(_validators[type_name].iter_errors(config), key=lambda e: list(e.path)):
        where = "config" + "".join(f"[{p!r}]" if isinstance(p, str) else f"[{p}]" for p in err.path)
        errors.append(f"{where}: {err.message}")
    if not errors:
        errors.extend(node_type.check_config(config))
    return errors
