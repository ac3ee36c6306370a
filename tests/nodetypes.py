"""Node types used only by the tests (loaded through WECONNECT_NODE_MODULES in the test run
and in its worker processes)."""

from __future__ import annotations

import time

from executions.nodes import Context, NodeError, NodeType, Result, register


@register
class Behave(NodeType):
    type = "test_behave"
    description = "Test node: fails its first attempts, sleeps, returns a given output or branch."
    config_schema = {
        "type": "object",
        "properties": {
            "fail_attempts": {"type": "integer", "minimum": 0},
            "retryable": {"type": "boolean"},
            "sleep": {"type": "number", "minimum": 0},
            "output": {},
            "branch": {"type": "string"},
        },
        "additionalProperties": False,
    }

    def run(self, ctx: Context):
        cfg = ctx.config
        if cfg.get("sleep"):
            time.sleep(cfg["sleep"])
        if ctx.attempt <= cfg.get("fail_attempts", 0):
            raise NodeError(
                f"planned failure on attempt {ctx.attempt}", retryable=cfg.get("retryable", True)
            )
        output = cfg["output"] if "output" in cfg else ctx.input
        if "branch" in cfg:
            return Result(output, cfg["branch"])
        return output


@register
class PureBehave(Behave):
    """The same, declared pure: the engine runs it without a claim when it can."""

    type = "test_pure_behave"
    pure = True


@register
class Delivery(NodeType):
    type = "test_delivery"
    description = "Test node: outputs the broker priority of the message that ran it."

    def run(self, ctx: Context):
        from celery import current_task

        info = (current_task.request.delivery_info or {}) if current_task else {}
        return {"priority": info.get("priority")}
