"""After many executions of every ending, no per-execution key of ours is left in Redis."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from executions.models import Execution
from executions.redis_client import redis_client
from executions.services.executions import execution_cancel, execution_create
from tests.support.workflows import edge, make_workflow, node, wait_all

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.worker]


def our_keys() -> list[str]:
    keys = [
        k.decode()
        for k in redis_client().scan_iter(match=settings.WECONNECT_KEY_PREFIX + "*", count=1000)
    ]
    # Aggregate metrics counters are not per-execution state.
    return [k for k in keys if not k.startswith(settings.WECONNECT_KEY_PREFIX + "metrics")]


def test_no_execution_keys_left_behind(worker, user):
    fan = [node("s")] + [node(f"b{i}") for i in range(8)] + [node("join")]
    fan_edges = [edge("s", f"b{i}") for i in range(8)] + [edge(f"b{i}", "join") for i in range(8)]
    ok = make_workflow(user, fan, fan_edges, name="ok")
    failing = make_workflow(
        user,
        [node("x", "test_behave", config={"fail_attempts": 9, "retryable": False}), *fan],
        [edge("x", "s"), *fan_edges],
        name="failing",
    )
    slow = make_workflow(
        user,
        [node("s"), node("slow", "test_behave", config={"sleep": 3}), node("j")],
        [edge("s", "slow"), edge("slow", "j"), edge("s", "j")],
        name="slow",
    )
    timing_out = make_workflow(
        user,
        [node("s"), node("slow", "test_behave", config={"sleep": 4}), node("j")],
        [edge("s", "slow"), edge("slow", "j"), edge("s", "j")],
        timeout_seconds=1,
        name="timeout",
    )

    ids = [execution_create(workflow=ok, input={})[0].id for _ in range(30)]
    ids += [execution_create(workflow=failing, input={})[0].id for _ in range(10)]
    to_cancel = [execution_create(workflow=slow, input={})[0] for _ in range(5)]
    ids += [e.id for e in to_cancel]
    ids += [execution_create(workflow=timing_out, input={})[0].id for _ in range(5)]
    time.sleep(0.5)
    for e in to_cancel:
        execution_cancel(execution=e)
    executions = wait_all(ids, timeout=180)
    by_status = {}
    for e in executions:
        by_status[e.status] = by_status.get(e.status, 0) + 1
    assert by_status == {"succeeded": 30, "failed": 10, "cancelled": 5, "timed_out": 5}
    time.sleep(5)  # let the sleeping nodes of cancelled/timed-out runs end and be discarded
    leftover = our_keys()
    assert leftover == [], leftover
    ids_text = {str(i) for i in ids}
    assert not any(any(i in k for i in ids_text) for k in leftover)
    assert Execution.objects.filter(id__in=ids, status__in=["pending", "running"]).count() == 0
