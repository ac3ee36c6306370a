"""Prometheus metrics and the detailed JSON view behind ``GET /monitoring/metrics``.

Two sources, so that the numbers are right whichever process is scraped:
- gauges computed from PostgreSQL and the broker at scrape time (a custom Collector): the
  database is the truth for what exists now, and every web process reads the same rows;
- counters and histograms that workers record in Redis (``executions.counters``): events that
  happen in worker processes and leave no row behind to count (retries, attempt durations,
  recovery repairs).

A source that cannot be read is reported as ``weconnect_metrics_source_up{source=...} 0`` and
its series are left out, rather than failing the scrape.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.registry import Collector

from executions import counters
from executions.models import Execution, NodeRun
from executions.states import EXECUTION_ACTIVE, ExecutionStatus, NodeRunStatus
from monitoring import processes
from monitoring.health import (
    broker_key_prefix,
    broker_queue_depths,
    control_connection,
    count_stale,
    queue_names,
    queue_roles,
    run_concurrently,
)
from weconnect.celery import app

RECENT_FAILURES = 20
ACTIVE_JOBS_LIMIT = 100


def _statement_timeout(seconds: float) -> None:
    conn = connections["default"]
    if conn.vendor == "postgresql":
        with conn.cursor() as cursor:
            # Local (like SET LOCAL, which takes no bound parameter): the limit ends with the
            # surrounding transaction.
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, true)", [str(int(seconds * 1000))]
            )


def database_figures(*, now=None, timeout: float = 2.0) -> dict[str, Any]:
    """Counts from PostgreSQL, in one read-only transaction with a statement timeout."""

    now = now or timezone.now()
    active = list(EXECUTION_ACTIVE)
    with transaction.atomic():
        _statement_timeout(timeout)
        executions = dict(
            Execution.objects.order_by().values_list("status").annotate(n=Count("id"))
        )
        stale = count_stale(Execution.objects.all(), now)
        node_runs = {
            (t, s): n
            for t, s, n in NodeRun.objects.order_by()
            .values_list("node_type", "status")
            .annotate(n=Count("id"))
        }
        waiting_runs = NodeRun.objects.filter(
            status__in=[NodeRunStatus.QUEUED, NodeRunStatus.RETRYING],
            execution__status__in=active,
        ).aggregate(
            due=Count("id", filter=Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)),
            later=Count("id", filter=Q(next_attempt_at__gt=now)),
            oldest=Min(
                "queued_at", filter=Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
            ),
        )
        failed_last_hour = NodeRun.objects.filter(
            status=NodeRunStatus.FAILED, finished_at__gte=now - timedelta(hours=1)
        ).count()
    return {
        "executions": executions,
        "in_progress": sum(executions.get(s, 0) for s in active),
        "stale": stale,
        "node_runs": node_runs,
        "running": sum(n for (_, s), n in node_runs.items() if s == NodeRunStatus.RUNNING),
        "due": waiting_runs["due"],
        "later": waiting_runs["later"],
        "oldest_due_seconds": (
            round((now - waiting_runs["oldest"]).total_seconds(), 3)
            if waiting_runs["oldest"]
            else None
        ),
        "failed_last_hour": failed_last_hour,
    }


def broker_depths(timeout: float = 1.0) -> dict[str, int]:
    return broker_queue_depths(
        settings.CELERY_BROKER_URL, queue_names(), broker_key_prefix(), timeout
    )


def own_process_entry() -> dict[str, Any]:
    """The scraped process, as it would report itself (when it has not yet, or Redis is down)."""
    return {
        "role": processes.current_role() or "web",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "state": processes.READY,
        **processes.usage(),
    }


def process_entries() -> list[dict[str, Any]]:
    """Every web and worker process that reported recently, and always the scraped one."""
    entries = processes.read()
    if not any(e["pid"] == os.getpid() and e["host"] == socket.gethostname() for e in entries):
        entries.append(own_process_entry())
    return entries


def instance_label(host: str, details: bool) -> str:
    """A process's host: its name for privileged callers, a stable digest for the public (the
    workers' names are not public, monitoring/access.py)."""
    return host if details else hashlib.sha256(host.encode()).hexdigest()[:12]


class WeConnectCollector(Collector):
    """Reads every source when scraped; registered on a registry made per request."""

    def __init__(self, *, timeout: float = 2.0, details: bool = False):
        self.timeout = timeout
        self.details = details

    def collect(self) -> Iterator[Metric]:
        results = run_concurrently(
            {
                "database": lambda: {"ok": True, "data": database_figures(timeout=self.timeout)},
                "broker": lambda: {"ok": True, "data": broker_depths(self.timeout)},
                "redis": lambda: {"ok": True, "data": counters.read()},
                "processes": lambda: {"ok": True, "data": process_entries()},
            },
            budget=self.timeout + 0.5,
        )
        up = GaugeMetricFamily(
            "weconnect_metrics_source_up",
            "1 when the source could be read for this scrape",
            labels=["source"],
        )
        for name, result in results.items():
            up.add_metric([name], 1.0 if result.get("ok") else 0.0)
        yield up
        if results["database"].get("ok"):
            yield from self._database(results["database"]["data"])
        if results["broker"].get("ok"):
            g = GaugeMetricFamily(
                "weconnect_queue_waiting_messages",
                "Messages waiting in the broker queue, by role (workflow, node) and name",
                labels=["role", "queue"],
            )
            for role, queue in queue_roles().items():
                g.add_metric([role, queue], results["broker"]["data"].get(queue, 0))
            yield g
        if results["redis"].get("ok"):
            yield from self._counters(results["redis"]["data"])
        entries = results["processes"].get("data") or [own_process_entry()]
        yield from self._processes(entries)

    def _processes(self, entries: list[dict[str, Any]]) -> Iterator[Metric]:
        labels = ["role", "instance", "pid"]
        families = [
            (
                GaugeMetricFamily(
                    "weconnect_process_resident_memory_bytes",
                    "Resident memory of each web and worker process",
                    labels=labels,
                ),
                "resident_memory_bytes",
            ),
            (
                CounterMetricFamily(
                    "weconnect_process_cpu_seconds",
                    "CPU time (user and system) of each web and worker process",
                    labels=labels,
                ),
                "cpu_seconds",
            ),
            (
                GaugeMetricFamily(
                    "weconnect_process_open_fds",
                    "Open file descriptors of each web and worker process",
                    labels=labels,
                ),
                "open_files",
            ),
            (
                GaugeMetricFamily(
                    "weconnect_process_start_time_seconds",
                    "Start time of each web and worker process (Unix epoch seconds)",
                    labels=labels,
                ),
                "start_time_seconds",
            ),
        ]
        for entry in entries:
            values = [entry["role"], instance_label(entry["host"], self.details), str(entry["pid"])]
            for family, field_name in families:
                family.add_metric(values, float(entry.get(field_name) or 0))
        for family, _ in families:
            yield family

    def _database(self, figures: dict[str, Any]) -> Iterator[Metric]:
        g = GaugeMetricFamily("weconnect_executions", "Executions by status", labels=["status"])
        for status in ExecutionStatus.values:
            g.add_metric([status], figures["executions"].get(status, 0))
        yield g
        yield GaugeMetricFamily(
            "weconnect_executions_in_progress",
            "Executions pending or running",
            value=figures["in_progress"],
        )
        yield GaugeMetricFamily(
            "weconnect_executions_stale",
            "Executions still active after WECONNECT_STALE_AFTER",
            value=figures["stale"],
        )
        g = GaugeMetricFamily(
            "weconnect_node_runs",
            "Node runs by node type and status",
            labels=["node_type", "status"],
        )
        for (node_type, status), n in sorted(figures["node_runs"].items()):
            g.add_metric([node_type, status], n)
        yield g
        g = GaugeMetricFamily(
            "weconnect_node_runs_waiting",
            "Queued or retrying node runs of active executions: due now, or held until later",
            labels=["when"],
        )
        g.add_metric(["due"], figures["due"])
        g.add_metric(["later"], figures["later"])
        yield g
        yield GaugeMetricFamily(
            "weconnect_node_run_oldest_due_seconds",
            "Age of the oldest due node run that has not started (0 when none)",
            value=figures["oldest_due_seconds"] or 0.0,
        )
        yield GaugeMetricFamily(
            "weconnect_node_runs_failed_last_hour",
            "Node runs that ended failed in the last hour",
            value=figures["failed_last_hour"],
        )

    def _counters(self, snap: counters.Snapshot) -> Iterator[Metric]:
        c = CounterMetricFamily(
            "weconnect_node_runs_finished",
            "Node runs finished, by node type and final status",
            labels=["node_type", "status"],
        )
        for (node_type, status), n in sorted(snap.node_runs.items()):
            c.add_metric([node_type, status], n)
        yield c
        c = CounterMetricFamily(
            "weconnect_node_run_retries", "Retries scheduled, by node type", labels=["node_type"]
        )
        for node_type, n in sorted(snap.retries.items()):
            c.add_metric([node_type], n)
        yield c
        c = CounterMetricFamily(
            "weconnect_recovery_actions",
            "Repairs by the recovery pass (redispatched, reclaimed, lost, timed_out, ...) and "
            "fallback_passes, passes a worker ran because Beat's was overdue",
            labels=["action"],
        )
        always = ("redispatched", "reclaimed", "lost", "timed_out")
        for action in always + tuple(sorted(set(snap.recovery) - set(always))):
            c.add_metric([action], snap.recovery.get(action, 0))
        yield c
        for name, doc, histograms in (
            (
                "weconnect_node_run_duration_seconds",
                "Run time of the attempt that finished a node run",
                snap.duration,
            ),
            (
                "weconnect_node_run_queue_wait_seconds",
                "Time from queued to started (first attempts)",
                snap.wait,
            ),
        ):
            h = HistogramMetricFamily(name, doc, labels=["node_type"])
            for node_type, hist in histograms.items():
                h.add_metric([node_type], hist.buckets, hist.sum)
            yield h


def exposition(timeout: float = 2.0, *, openmetrics: bool = False, details: bool = False) -> bytes:
    """The Prometheus text format (or OpenMetrics): WeConnect's figures, every process's
    resource use as reported to Redis, and the standard ``process_*`` series of the process
    scraped."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WeConnectCollector(timeout=timeout, details=details))
    ProcessCollector(registry=registry)
    return (generate_openmetrics if openmetrics else generate_latest)(registry)


# --- the JSON view ------------------------------------------------------------------------


def recent_failures(limit: int = RECENT_FAILURES) -> list[dict[str, Any]]:
    rows = (
        NodeRun.objects.filter(status=NodeRunStatus.FAILED)
        .order_by("-finished_at", "-id")
        .values("execution_id", "node", "node_type", "attempts", "finished_at", "error")[:limit]
    )
    return [
        {
            **r,
            "execution_id": str(r["execution_id"]),
            "finished_at": r["finished_at"] and r["finished_at"].isoformat(),
        }
        for r in rows
    ]


def active_jobs(timeout: float, limit: int = ACTIVE_JOBS_LIMIT) -> dict[str, Any]:
    """What each worker is executing now, as the workers report it (bounded in time and size)."""

    with control_connection(settings.CELERY_BROKER_URL, timeout) as conn:
        replies = app.control.inspect(timeout=timeout, connection=conn).active() or {}
    jobs: list[dict[str, Any]] = []
    for worker_name in sorted(replies):
        for task in replies[worker_name] or []:
            args = task.get("args") or []
            jobs.append(
                {
                    "worker": worker_name,
                    "id": task.get("id"),
                    "name": task.get("name"),
                    "execution_id": args[0] if len(args) > 0 else None,
                    "node": args[1] if len(args) > 1 else None,
                    "started": task.get("time_start"),
                }
            )
    return {
        "workers": len(replies),
        "count": len(jobs),
        "jobs": jobs[:limit],
        "truncated": len(jobs) > limit,
    }


def system_resources() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    disk_path = str(getattr(settings, "VAR_DIR", settings.BASE_DIR))
    if not os.path.exists(disk_path):
        disk_path = str(settings.BASE_DIR)
    disk = psutil.disk_usage(disk_path)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": psutil.cpu_count(),
        # Since the previous call in this process (no blocking sample on the request path).
        "cpu_percent": psutil.cpu_percent(interval=None),
        "load_average": list(load) if load else None,
        "memory": {"total": memory.total, "available": memory.available, "percent": memory.percent},
        "disk": {
            "path": disk_path,
            "total": disk.total,
            "free": disk.free,
            "percent": disk.percent,
        },
    }


def _histogram_summary(histograms: dict[str, counters.Histogram]) -> dict[str, Any]:
    return {
        t: {
            "count": int(h.count),
            "sum": round(h.sum, 6),
            "mean": round(h.sum / h.count, 6) if h.count else None,
        }
        for t, h in histograms.items()
    }


# What the JSON view leaves out for callers that are not privileged (monitoring.access).
RESTRICTED = ("recent_failures", "active_jobs")


def metrics_document(timeout: float = 2.0, *, details: bool = False) -> dict[str, Any]:
    """The detailed view: queue analysis, counters, resources; with ``details`` also what each
    worker runs and the recent failures with their error documents, which carry other users'
    inputs, remote response bodies and URLs. Without ``details`` those are not even read (the
    inspect broadcast is the slowest part of the view)."""
    started = time.perf_counter()
    probes = {
        "database": lambda: {
            "ok": True,
            "figures": database_figures(timeout=timeout),
            "failures": recent_failures() if details else None,
        },
        "broker": lambda: {"ok": True, "waiting": broker_depths(timeout)},
        "counters": lambda: {"ok": True, "snapshot": counters.read()},
        "system": lambda: {"ok": True, **system_resources()},
        "processes": lambda: {"ok": True, "entries": process_entries()},
    }
    if details:
        # Workers answer within milliseconds; inspect waits out its whole timeout.
        probes["active_jobs"] = lambda: {"ok": True, **active_jobs(timeout=min(timeout, 0.5))}
    results = run_concurrently(probes, budget=timeout + 0.5)
    jobs = results.get("active_jobs", {})
    db, broker, snap = results["database"], results["broker"], results["counters"]
    figures = db.get("figures")
    queues: dict[str, Any] = {}
    for role, name in queue_roles().items():
        queues[role] = {
            "name": name,
            "waiting": broker["waiting"].get(name, 0) if broker.get("ok") else None,
        }
    # Node runs are sent to the node queue: the database figures describe that queue.
    queues["node"].update(
        {
            "running": figures["running"] if figures else None,
            "due": figures["due"] if figures else None,
            "held_until_later": figures["later"] if figures else None,
            "oldest_due_seconds": figures["oldest_due_seconds"] if figures else None,
            "failed_last_hour": figures["failed_last_hour"] if figures else None,
        }
    )
    doc: dict[str, Any] = {
        "generated_at": timezone.now().isoformat(),
        "sources": {
            name: {"ok": bool(r.get("ok")), **({"error": r["error"]} if "error" in r else {})}
            for name, r in results.items()
        },
        "queues": queues,
        "executions": None,
        "node_runs": None,
        "counters": None,
        "active_jobs": {k: v for k, v in jobs.items() if k not in ("ok", "latency_ms")}
        if jobs.get("ok")
        else None,
        "recent_failures": db.get("failures"),
        "restricted": [] if details else list(RESTRICTED),
        "processes": [
            {
                **{k: v for k, v in e.items() if k != "host"},
                "instance": instance_label(e["host"], details),
            }
            for e in results["processes"].get("entries") or [own_process_entry()]
        ],
        "system": {k: v for k, v in results["system"].items() if k not in ("ok", "latency_ms")}
        if results["system"].get("ok")
        else None,
    }
    if figures:
        doc["executions"] = {
            "by_status": figures["executions"],
            "in_progress": figures["in_progress"],
            "stale": figures["stale"],
        }
        doc["node_runs"] = [
            {"node_type": t, "status": s, "count": n}
            for (t, s), n in sorted(figures["node_runs"].items())
        ]
    if snap.get("ok"):
        s: counters.Snapshot = snap["snapshot"]
        doc["counters"] = {
            "node_runs_finished": [
                {"node_type": t, "status": st, "count": n}
                for (t, st), n in sorted(s.node_runs.items())
            ],
            "retries": s.retries,
            "recovery": s.recovery,
            "duration_seconds": _histogram_summary(s.duration),
            "queue_wait_seconds": _histogram_summary(s.wait),
        }
    doc["took_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return doc
