"""``python -m benchmarks [--quick] [--only chain,fanin,throughput,trigger,memory,scaleout]``"""

from __future__ import annotations

import argparse
import os
import signal
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import environment

SCENARIOS = (
    "chain",
    "fanin",
    "throughput",
    "foreach",
    "tracing",
    "trigger",
    "memory",
    "scaleout",
)
RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and smaller sizes (a smoke run)"
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="comma-separated scenarios to run"
    )
    parser.add_argument(
        "--concurrency", type=int, default=4, help="pool processes per worker (default 4)"
    )
    parser.add_argument(
        "--web-workers", type=int, default=2, help="gunicorn worker processes (default 2)"
    )
    parser.add_argument(
        "--web-threads", type=int, default=1, help="gunicorn threads per worker (default 1)"
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help=f"results directory (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(
            f"--only: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    args.only = [s for s in SCENARIOS if s in chosen]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # A terminated run still stops its processes and drops its database (the finally blocks).
    signal.signal(signal.SIGTERM, _interrupt)
    env = environment.resolve()
    environment.export(env)
    environment.create_database(env)
    try:
        return _run(args, env)
    finally:
        environment.drop_database(env)


def _run(args: argparse.Namespace, env: environment.BenchEnvironment) -> int:
    import django

    django.setup()
    import redis
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections

    from benchmarks import raw, report, scenarios
    from benchmarks.processes import Worker
    from weconnect.celery import app as engine_app

    print(f"benchmark {env.run_id}: database {env.database_name}, queue {env.queue}", flush=True)
    call_command("migrate", verbosity=0)
    client = redis.Redis.from_url(env.redis_url)
    completions = scenarios.Completions(env.database_url)
    ctx = scenarios.Context(
        env=env,
        quick=args.quick,
        concurrency=args.concurrency,
        completions=completions,
        redis=client,
    )
    ctx.owner = get_user_model().objects.create_user(username="bench", password=None)

    def start_worker(kind: str, n: int) -> Worker:
        app_name, queue, celery_app = (
            ("weconnect", f"{env.queue}-workflow,{env.queue}-node", engine_app)
            if kind == "engine"
            else ("benchmarks.raw", env.raw_queue, raw.app)
        )
        worker = Worker(
            app=app_name, queue=queue, concurrency=n, name=f"{kind}-{n}", run_id=env.run_id
        ).start()
        worker.wait_ready(celery_app)
        return worker

    doc: dict = {
        "run_id": env.run_id,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "concurrency": args.concurrency,
        "settings": os.environ["DJANGO_SETTINGS_MODULE"],
        "load_before": report.load(),
        "machine": report.machine(client),
        "scenarios": {},
        "errors": {},
    }
    t0 = time.perf_counter()
    try:
        ctx.engine_worker = start_worker("engine", args.concurrency)
        ctx.raw_worker = start_worker("raw", args.concurrency)
        for name in args.only:
            if name == "scaleout":
                ctx.engine_worker.stop()
                ctx.raw_worker.stop()
            print(f"- {name} ...", flush=True)
            started = time.perf_counter()
            try:
                if name == "trigger":
                    result = scenarios.scenario_trigger(
                        ctx, web_workers=args.web_workers, web_threads=args.web_threads
                    )
                elif name == "scaleout":
                    result = scenarios.scenario_scaleout(ctx, start_worker)
                else:
                    result = getattr(scenarios, f"scenario_{name}")(ctx)
                result["seconds_taken"] = time.perf_counter() - started
                doc["scenarios"][name] = result
            except Exception as exc:
                traceback.print_exc()
                doc["errors"][name] = f"{type(exc).__name__}: {exc}"
            print(f"  done in {time.perf_counter() - started:.1f}s", flush=True)
        if "memory" not in args.only:
            # The key count is reported by the memory scenario; without it, report it here.
            doc["keys_left"] = sum(
                1
                for k in client.scan_iter(match=env.key_prefix + "*", count=1000)
                if not k.decode().startswith(env.key_prefix + "metrics:")
            )
    finally:
        for worker in (ctx.engine_worker, ctx.raw_worker):
            if worker:
                worker.stop()
        completions.close()
        connections.close_all()
        _delete_keys(client, env)
    doc["seconds"] = time.perf_counter() - t0
    doc["load_after"] = report.load()
    json_path, md_path = report.write(doc, args.output)
    print()
    print(report.markdown(doc))
    print(f"written: {json_path} and {md_path}")
    return 1 if doc["errors"] else 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _delete_keys(client, env: environment.BenchEnvironment) -> None:
    """Leave nothing behind in Redis: our engine keys, the broker's and the raw app's."""
    for prefix in (env.key_prefix, env.broker_prefix, env.raw_prefix):
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
