"""The machine a run happened on, and the results as JSON and a Markdown table."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil


def machine(redis_client) -> dict[str, Any]:
    import celery
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": _cpu_model(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgres": postgres,
        "redis": redis_client.info("server")["redis_version"],
        "celery": celery.__version__,
        "django": django.__version__,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _f(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def _mark(holds: bool | None) -> str:
    return "-" if holds is None else ("yes" if holds else "**no**")


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"Run {doc['started_at']} ({'quick' if doc['quick'] else 'full'}), "
        f"{doc['concurrency']} pool processes per worker, settings {doc.get('settings', '?')}, "
        f"{doc['seconds']:.0f} s in all.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gb']} GB, Python {m['python']}, "
        f"PostgreSQL {m['postgres']}, Redis {m['redis']}, Celery {m['celery']}, Django {m['django']}. "
        f"Load average (1/5/15 min) before: {' '.join(map(str, doc['load_before']))}, "
        f"after: {' '.join(map(str, doc['load_after']))}.",
        "",
        "| Scenario | Engine median (p95) | Raw Celery median (p95) | Engine / raw | Target | Holds |",
        "|---|---|---|---|---|---|",
    ]
    s = doc["scenarios"]
    if "chain" in s:
        r = s["chain"]
        lines.append(
            f"| Chain, {r['nodes']} nodes, {r['rounds']} rounds | {_f(r['engine']['median'])} ms "
            f"({_f(r['engine']['p95'])}) | {_f(r['raw']['median'])} ms ({_f(r['raw']['p95'])}) | "
            f"{_f(r['ratio'], 2)} | {r['target']} | {_mark(r['holds'])} |"
        )
    if "fanin" in s:
        r = s["fanin"]
        lines.append(
            f"| Fan-in 1 -> {r['width']} -> 1, {r['rounds']} rounds | {_f(r['engine']['median'])} ms "
            f"({_f(r['engine']['p95'])}) | {_f(r['raw']['median'])} ms ({_f(r['raw']['p95'])}) | "
            f"{_f(r['ratio'], 2)}; join once: {'yes' if r['join_runs_once'] else 'no'} | "
            f"{r['target']} | {_mark(r['holds'])} |"
        )
    if "throughput" in s:
        r = s["throughput"]
        lines.append(
            f"| Throughput, {r['executions']} x {r['nodes']} nodes, {r['rounds']} rounds | "
            f"{_f(r['engine']['median'], 0)} runs/s (min {_f(r['engine']['min'], 0)}) | "
            f"{_f(r['raw']['median'], 0)} tasks/s | {_f(r['ratio'], 2)} | {r['target']} | {_mark(r['holds'])} |"
        )
    if "foreach" in s:
        r = s["foreach"]
        lines.append(
            f"| for_each, {r['items']} items, {r['concurrency']} at a time, {r['rounds']} rounds | "
            f"{_f(r['engine']['median'], 2)} s ({_f(r['engine']['p95'], 2)}) | group of "
            f"{r['items']}: {_f(r['raw']['median'], 2)} s ({_f(r['raw']['p95'], 2)}) | "
            f"{_f(r['ratio'], 2)} | {r['target']} | {_mark(r['holds'])} |"
        )
    if "tracing" in s:
        r = s["tracing"]
        if "skipped" in r:
            lines.append(f"| Tracing off | skipped: {r['skipped']} | | | | - |")
        else:
            lines.append(
                f"| Tracing off: hooks per hop vs one chain hop | {_f(r['hook_cost_per_hop_us'], 2)} us "
                f"| hop {_f(r['hop_us'], 0)} us | {_f(r['ratio'], 4)} | {r['target']} | "
                f"{_mark(r['holds'])} |"
            )
    if "trigger" in s:
        r = s["trigger"]
        lat = r["latency"]
        lines.append(
            f"| Trigger, {r['clients']} clients, {r['requests']} requests | p50 {_f(lat['median'])} ms, "
            f"p99 {_f(lat['p99'])} ms, {_f(r['requests_per_second'], 0)} req/s; one client: p50 "
            f"{_f(r['single_client_latency']['median'])} ms | - | - | {r['target']} | {_mark(r['holds'])} |"
        )
    if "memory" in s:
        r = s["memory"]
        lines.append(
            f"| Memory, {r['executions']} executions | RSS {_f(r['rss_before_mb'])} -> "
            f"{_f(r['rss_after_mb'])} MB ({r['rss_growth_mb']:+.1f} MB); keys left: {r['keys_left']} | - | - | "
            f"{r['target']} | {_mark(r['holds'])} |"
        )
    if "scaleout" in s:
        r = s["scaleout"]
        cells = "; ".join(
            f"{row['processes']}: {_f(row['engine']['median'], 0)} vs {_f(row['raw']['median'], 0)} "
            f"({_f(row['ratio'], 2)})"
            for row in r["rows"]
        )
        lines.append(
            f"| Scale-out, {r['executions']} x {r['nodes']} nodes, processes: engine vs raw runs/s (ratio) "
            f"| {cells} | | | {r['target']} | {_mark(r['holds'])} |"
        )
    for name, error in doc.get("errors", {}).items():
        lines.append(f"| {name} | failed: {error} | | | | **no** |")
    return "\n".join(lines) + "\n"


def write(doc: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = directory / f"bench-{stamp}.json"
    md_path = directory / f"bench-{stamp}.md"
    json_path.write_text(json.dumps(doc, indent=2, default=str))
    md_path.write_text(markdown(doc))
    (directory / "latest.json").write_text(json.dumps(doc, indent=2, default=str))
    (directory / "latest.md").write_text(markdown(doc))
    return json_path, md_path


def python_executable() -> str:
    return sys.executable
