"""Engine log lines carry execution_id, node and attempt as structured fields: in the JSON
format (one object per line) and in the text format (key=value)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from executions.engine.execute import node_run_execute
from executions.models import Execution, NodeRun, WorkflowVersion
from tests.support.worker import WorkerProcess
from tests.support.workflows import make_workflow, node, wait_for
from weconnect.logging import JsonFormatter, TextFormatter

pytestmark = [pytest.mark.django_db(transaction=True)]


def queued_execution(user, nodes) -> Execution:
    """An execution whose start node is queued but whose message was never sent (as after a
    broker outage), so that the test decides which process runs it."""
    wf = make_workflow(user, nodes)
    snapshot = WorkflowVersion.objects.get(workflow=wf, version=wf.version)
    now = timezone.now()
    execution = Execution.objects.create(
        workflow=wf,
        snapshot=snapshot,
        workflow_version=wf.version,
        input={"x": 1},
        deadline_at=now + timedelta(minutes=5),
    )
    for n in nodes:
        NodeRun.objects.create(
            execution=execution,
            node=n["key"],
            node_type=n["type"],
            status="queued",
            input={"x": 1},
            queued_at=now,
        )
    return execution


@pytest.fixture
def engine_log():
    """Every record of the engine's logger, at INFO, while the test runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("weconnect.engine")
    handler, level = Keep(logging.INFO), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_engine_records_format_with_their_fields(user, engine_log):
    execution = queued_execution(
        user, [node("flaky", "test_behave", config={"fail_attempts": 1}, retry={"max_retries": 0})]
    )
    assert node_run_execute(execution_id=str(execution.id), node="flaky", task_id="t-1") == "failed"
    lines = [json.loads(JsonFormatter().format(r)) for r in engine_log]
    started = next(d for d in lines if d["message"] == "node started")
    assert started["execution_id"] == str(execution.id)
    assert started["node"] == "flaky" and started["attempt"] == 1
    assert started["level"] == "INFO" and started["logger"] == "weconnect.engine"
    failed = next(d for d in lines if d["message"].startswith("node failed"))
    assert (failed["execution_id"], failed["node"], failed["attempt"]) == (
        str(execution.id),
        "flaky",
        1,
    )
    assert failed["level"] == "WARNING"
    text = TextFormatter().format(next(r for r in engine_log if r.getMessage() == "node started"))
    assert f"execution_id={execution.id} node=flaky attempt=1" in text


def test_json_formatter_keeps_its_own_fields_and_serialises_anything():
    record = logging.LogRecord(
        "weconnect.engine", logging.ERROR, __file__, 1, "boom %s", ("x",), None
    )
    record.__dict__.update(
        {"level": "forged", "ts": "forged", "when": timezone.now(), "id": uuid.uuid4()}
    )
    try:
        raise ValueError("bad value")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    doc = json.loads(JsonFormatter().format(record))
    assert doc["level"] == "ERROR" and doc["ts"] != "forged" and doc["message"] == "boom x"
    assert doc["extra_level"] == "forged"
    assert "ValueError: bad value" in doc["exc"]
    assert isinstance(doc["when"], str) and isinstance(doc["id"], str)
    line = JsonFormatter().format(record)
    assert "\n" not in line  # one record, one line


@pytest.mark.worker
def test_json_lines_from_a_worker_process(user):
    """A worker started with WECONNECT_LOG_FORMAT=json writes one JSON object per engine log
    line, with the execution, node and attempt as keys."""
    from executions.tasks import run_node

    queue = f"{settings.WECONNECT_QUEUE}-jsonlog"
    worker = WorkerProcess(
        concurrency=1,
        name="jsonlog",
        env={
            "WECONNECT_LOG_FORMAT": "json",
            "WECONNECT_LOG_LEVEL": "INFO",
            "WECONNECT_QUEUE": queue,
        },
    )
    if worker.log.exists():
        worker.log.unlink()
    worker.start()
    try:
        execution = queued_execution(
            user, [node("only", "test_behave", config={"output": {"ok": 1}})]
        )
        run_node.apply_async(args=[str(execution.id), "only"], queue=queue)
        assert wait_for(execution.id, timeout=30).status == "succeeded"
        deadline = time.monotonic() + 10
        while True:
            docs = []
            for line in worker.log.read_text().splitlines():
                if line.startswith("{"):
                    docs.append(json.loads(line))
            finished = [d for d in docs if d.get("message") == "node succeeded"]
            if finished or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        worker.stop()
    started = next(d for d in docs if d.get("message") == "node started")
    assert (started["execution_id"], started["node"], started["attempt"]) == (
        str(execution.id),
        "only",
        1,
    )
    assert (finished[0]["execution_id"], finished[0]["node"], finished[0]["attempt"]) == (
        str(execution.id),
        "only",
        1,
    )
    assert finished[0]["logger"] == "weconnect.engine" and finished[0]["level"] == "INFO"
