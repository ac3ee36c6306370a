"""`make soak`: a bounded chaos run of the whole stack, then the figures that say whether anything
was lost, stuck or done twice.

The stack boots as production does (the Procfile's web, workers and beat) on a PostgreSQL and a
Redis of the run's own, which the chaos loop may restart. Executions of mixed shapes are
triggered at a steady rate, every Idempotency-Key twice; a chaos loop SIGKILLs a worker, restarts
Redis with nothing on disk, crashes PostgreSQL and kills web, in turn, every few seconds. Then it
drains and counts, from the database and from a local HTTP server that records every side
effect it answered.

    python -m benchmarks.soak --executions 10000 --rate 20 --kill-every 15
    python -m benchmarks.soak --broker both --duration 60     # the one-minute version
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import redis

from tests.support.pgcluster import PgCluster
from tests.support.stack import Stack, call
from weconnect.devstack import free_port, port_open, redis_start_bundled

TERMINAL = ("succeeded", "failed", "cancelled", "timed_out")


@dataclass
class SoakOptions:
    executions: int = 600
    rate: float = 10.0  # triggers per second
    duration: float | None = None  # seconds of triggering; overrides executions when set
    kill_every: tuple[float, float] = (10.0, 20.0)
    chaos: tuple[str, ...] = ("worker", "redis", "postgres", "web")
    broker: str = "redis"  # redis | amqp
    workers: int = 2
    clients: int = 8  # concurrent API clients triggering
    drain_timeout: float = 600.0
    flaky_ratio: float = 0.1
    lease_seconds: int = 5
    seed: int | None = None


@dataclass
class SoakReport:
    broker: str
    triggered: int = 0
    refused: int = 0  # a trigger the API never accepted (the client knows: not lost)
    idempotency_mismatches: int = 0
    succeeded: int = 0
    failed: int = 0
    other_terminal: int = 0
    stuck: int = 0
    lost: int = 0
    side_effects: int = 0
    side_effects_twice: int = 0
    side_effects_twice_unexplained: int = 0
    joins_more_than_once: int = 0
    chaos_events: dict[str, int] = field(default_factory=dict)
    trigger_seconds: float = 0.0
    drain_seconds: float = 0.0
    longest_recovery_wait_seconds: float = 0.0
    # Unfinished when triggering stopped, and how many finished in the drain's last minute: a
    # drain that ends with executions still finishing was too short, not stuck.
    backlog_at_drain: int = 0
    finished_last_minute_of_drain: int = 0
    reassigned_runs: int = 0
    # Processes that exited on their own and were started again, as a supervisor would.
    supervisor_restarts: dict[str, int] = field(default_factory=dict)
    # The longest the recovery pass went without running (its own timestamp in Redis, sampled
    # every 2 s; unknown just after a Redis restart), and how many passes the workers ran
    # themselves because Beat's was overdue.
    longest_recovery_gap_seconds: float = 0.0
    recovery_fallback_passes: int = 0
    # What the first unfinished executions look like, to tell a slow drain from a stuck one.
    stuck_detail: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.stuck == 0
            and self.joins_more_than_once == 0
            and self.side_effects_twice_unexplained == 0
            and self.idempotency_mismatches == 0
        )


class EffectServer:
    """A remote API with side effects: counts the successful calls per execution, and answers
    503 to a share of them (which the http_request node retries)."""

    def __init__(self, flaky_ratio: float) -> None:
        self.successes: Counter[str] = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                query = parse_qs(urlsplit(self.path).query)
                run = query.get("run", [""])[0]
                # A slow remote call: a worker killed now has made the call but not yet
                # recorded its result, and the run taken over calls again.
                time.sleep(float(query.get("sleep", ["0"])[0]))
                if random.random() < flaky_ratio:
                    self.send_response(503)
                    self.end_headers()
                    return
                with outer.lock:
                    outer.successes[run] += 1
                body = json.dumps({"ok": True, "run": run}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the caller died after the effect: exactly the case being measured

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/effect"

    def __enter__(self) -> EffectServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


def shapes(effect_url: str) -> dict[str, dict]:
    """The workflows the soak triggers (a child workflow for sub_workflow is created first)."""
    chain = {
        "name": "soak chain",
        "nodes": [{"key": f"n{i}", "type": "noop"} for i in range(4)],
        "connections": [{"source": f"n{i}", "target": f"n{i + 1}"} for i in range(3)],
    }
    fanin = {
        "name": "soak fan-in",
        "nodes": [
            {"key": "start", "type": "noop"},
            *[{"key": f"b{i}", "type": "noop"} for i in range(6)],
            {"key": "join", "type": "merge", "config": {"mode": "object"}},
        ],
        "connections": [
            *[{"source": "start", "target": f"b{i}"} for i in range(6)],
            *[{"source": f"b{i}", "target": "join"} for i in range(6)],
        ],
    }
    http = {
        "name": "soak http",
        "nodes": [
            {
                "key": "call",
                "type": "http_request",
                "config": {"url": effect_url + "?sleep=1&run={{ execution.id }}", "timeout": 5},
                "retry": {"max_retries": 6, "backoff_seconds": 0.2, "max_backoff_seconds": 2},
            },
            {"key": "after", "type": "noop"},
        ],
        "connections": [{"source": "call", "target": "after"}],
    }
    delay = {
        "name": "soak delay",
        "nodes": [
            {"key": "wait", "type": "delay", "config": {"seconds": 1}},
            {"key": "after", "type": "noop"},
        ],
        "connections": [{"source": "wait", "target": "after"}],
    }
    return {"chain": chain, "fanin": fanin, "http": http, "delay": delay}


def _amqp_vhost(name: str) -> str | None:
    import subprocess

    base = os.environ.get("WECONNECT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
    if not port_open("127.0.0.1", 5672):
        return None
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], capture_output=True, timeout=60)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        capture_output=True,
        timeout=60,
    )
    return f"{base.rstrip('/')}/{name}"


def _drop_vhost(name: str) -> None:
    import subprocess

    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60)


class Chaos(threading.Thread):
    """Breaks one thing at a time, in turn, every ``kill_every`` seconds."""

    def __init__(self, soak: Soak) -> None:
        super().__init__(daemon=True)
        self.soak = soak
        self.stop = threading.Event()
        self.events: Counter[str] = Counter()

    def run(self) -> None:
        kinds = itertools.cycle(self.soak.options.chaos)
        low, high = self.soak.options.kill_every
        while not self.stop.wait(random.uniform(low, high)):
            kind = next(kinds)
            try:
                with self.soak.processes_lock:
                    getattr(self.soak, f"break_{kind}")()
                self.events[kind] += 1
            except Exception as exc:  # the chaos loop itself must not die
                print(f"  chaos {kind} failed: {exc!r}", file=sys.stderr)


class Supervisor(threading.Thread):
    """Starts again any process of the stack that exited on its own, as production's process
    manager (systemd, the platform, Kubernetes) does: a worker can end itself (kombu's Redis
    transport when Redis restarts under unacknowledged messages; the consumer watchdog when a
    worker has stopped taking messages), and the run must show that nothing is lost when it
    does, not that nothing restarts it."""

    def __init__(self, soak: Soak, keys: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.soak = soak
        self.keys = keys  # (role, key)
        self.stop = threading.Event()
        self.restarts: Counter[str] = Counter()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with self.soak.processes_lock:
                for role, key in self.keys:
                    if not self.soak.stack.alive(key):
                        self.soak.stack.start(role, key)
                        self.restarts[key] += 1


class RecoveryWatch(threading.Thread):
    """Samples when the recovery pass last ran, whoever ran it (Beat or a worker)."""

    def __init__(self, redis_port: int, prefix: str) -> None:
        super().__init__(daemon=True)
        self.url = f"redis://127.0.0.1:{redis_port}/0"
        self.key = f"{prefix}metrics:recovery_last_run"
        self.stop = threading.Event()
        self.longest = 0.0

    def run(self) -> None:
        while not self.stop.wait(2.0):
            try:
                raw = redis.Redis.from_url(self.url, socket_timeout=1).get(self.key)
            except redis.RedisError:
                continue
            if raw:
                self.longest = max(self.longest, time.time() - float(raw))


class Soak:
    def __init__(self, options: SoakOptions) -> None:
        self.options = options
        self.tag = uuid.uuid4().hex[:8]
        self.dir = Path(tempfile.mkdtemp(prefix=f"wc-soak-{self.tag}-"))
        self.redis_port = free_port()
        self.redis = None
        self.pg: PgCluster | None = None
        self.stack: Stack | None = None
        self.vhost: str | None = None
        self.processes_lock = threading.Lock()  # chaos and supervisor: one at a time

    # --- what the chaos loop does -----------------------------------------------------------
    def break_worker(self) -> None:
        key = f"w{random.randrange(self.options.workers)}"
        self.stack.kill(key, signal.SIGKILL)
        self.stack.start("worker", key)

    def break_redis(self) -> None:
        self.redis.process.kill()
        self.redis.process.wait()
        self.redis = redis_start_bundled(workdir=self.dir / "redis", port=self.redis_port)

    def break_postgres(self) -> None:
        self.pg.restart("immediate")

    def break_web(self) -> None:
        self.stack.kill("web", signal.SIGKILL)
        self.stack.start("web")

    # --- the run ----------------------------------------------------------------------------
    def run(self) -> SoakReport:
        opts = self.options
        if opts.seed is not None:
            random.seed(opts.seed)
        report = SoakReport(broker=opts.broker)
        self.pg = PgCluster().init().start()
        self.redis = redis_start_bundled(workdir=self.dir / "redis", port=self.redis_port)
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        broker_url = redis_url
        if opts.broker == "amqp":
            self.vhost = f"wcsoak-{self.tag}"
            broker_url = _amqp_vhost(self.vhost)
            if broker_url is None:
                raise SystemExit("RabbitMQ does not answer on 127.0.0.1:5672")
        db_url = self.pg.create_database("weconnect")
        lease = opts.lease_seconds
        self.stack = Stack(
            database_url=db_url,
            redis_url=redis_url,
            name=f"soak-{opts.broker}-{self.tag}",
            CELERY_BROKER_URL=broker_url,
            WECONNECT_LEASE_SECONDS=str(lease),
            WECONNECT_HEARTBEAT_SECONDS=str(max(1, lease // 3)),
            WECONNECT_RECOVERY_INTERVAL_SECONDS="2",
            WECONNECT_REDISPATCH_AFTER_SECONDS="5",
            DATABASE_CONNECT_TIMEOUT="2",
            WECONNECT_LOG_LEVEL="WARNING",
        )
        try:
            return self._run(report, db_url)
        finally:
            self.stack.stop()
            self.redis.process.kill()
            self.pg.cleanup()
            if self.vhost:
                _drop_vhost(self.vhost)

    def _run(self, report: SoakReport, db_url: str) -> SoakReport:
        opts = self.options
        stack = self.stack
        stack.release()
        stack.start("web")
        stack.start("beat")
        for i in range(opts.workers):
            stack.start("worker", f"w{i}")
        stack.wait_web(timeout=120)
        supervisor = Supervisor(
            self,
            [("web", "web"), ("beat", "beat")] + [("worker", f"w{i}") for i in range(opts.workers)],
        )
        supervisor.start()
        watch = RecoveryWatch(self.redis_port, stack.env["WECONNECT_KEY_PREFIX"])
        watch.start()
        with EffectServer(opts.flaky_ratio) as effects, stack.client(timeout=5) as client:
            workflows = {}
            for name, doc in shapes(effects.url).items():
                r = call(client, "POST", "/api/workflows/", json=doc)
                assert r.status_code == 201, r.text
                workflows[name] = r.json()["id"]
            child = workflows["chain"]
            r = call(
                client,
                "POST",
                "/api/workflows/",
                json={
                    "name": "soak sub-workflow",
                    "nodes": [
                        {"key": "child", "type": "sub_workflow", "config": {"workflow": child}},
                        {"key": "after", "type": "noop"},
                    ],
                    "connections": [{"source": "child", "target": "after"}],
                },
            )
            assert r.status_code == 201, r.text
            workflows["sub"] = r.json()["id"]

            chaos = Chaos(self)
            chaos.start()
            accepted: dict[str, str] = {}  # execution id -> shape
            lock = threading.Lock()
            kinds = itertools.cycle(sorted(workflows))

            def trigger(i: int, kind: str) -> None:
                # Clients of their own: a thread-safe pool is not what is being tested.
                key = f"soak-{self.tag}-{i}"
                ids = []
                with self.stack.client(timeout=10) as own:
                    for _ in range(2):  # every key twice
                        try:
                            resp = call(
                                own,
                                "POST",
                                f"/api/workflows/{workflows[kind]}/execute/",
                                json={"input": {"i": i, "kind": kind}},
                                headers={"Idempotency-Key": key},
                                attempts=30,
                            )
                            if resp.status_code in (200, 202):
                                ids.append(resp.json()["id"])
                        except Exception:
                            pass
                with lock:
                    if ids:
                        accepted[ids[0]] = kind
                        report.idempotency_mismatches += len(set(ids)) - 1
                    else:
                        report.refused += 1

            started = time.monotonic()
            interval = 1.0 / opts.rate
            i = 0
            with ThreadPoolExecutor(max_workers=opts.clients) as pool:
                while True:
                    elapsed = time.monotonic() - started
                    if opts.duration is not None:
                        if elapsed >= opts.duration:
                            break
                    elif i >= opts.executions:
                        break
                    pool.submit(trigger, i, next(kinds))
                    i += 1
                    time.sleep(max(0.0, started + i * interval - time.monotonic()))
            report.trigger_seconds = round(time.monotonic() - started, 1)
            chaos.stop.set()
            chaos.join()
            report.chaos_events = dict(chaos.events)
            report.triggered = len(accepted)

            # Drain: everything must finish without more chaos.
            drain_from = time.monotonic()
            history: list[tuple[float, int]] = []  # (seconds into the drain, unfinished)
            while time.monotonic() - drain_from < opts.drain_timeout:
                try:
                    with psycopg.connect(db_url, autocommit=True, connect_timeout=3) as conn:
                        active = conn.execute(
                            "SELECT count(*) FROM executions_execution "
                            "WHERE status NOT IN ('succeeded','failed','cancelled','timed_out')"
                        ).fetchone()[0]
                    history.append((time.monotonic() - drain_from, active))
                    if active == 0:
                        break
                except psycopg.Error:
                    pass
                time.sleep(1)
            if history:
                report.backlog_at_drain = history[0][1]
                end = history[-1][0]
                before = [n for t, n in history if t <= end - 60] or [history[0][1]]
                report.finished_last_minute_of_drain = before[-1] - history[-1][1]
            report.drain_seconds = round(time.monotonic() - drain_from, 1)
            supervisor.stop.set()
            supervisor.join()
            report.supervisor_restarts = dict(supervisor.restarts)
            watch.stop.set()
            watch.join()
            report.longest_recovery_gap_seconds = round(watch.longest, 1)
            report.recovery_fallback_passes = sum(
                stack.log_path(f"w{i}")
                .read_text(errors="replace")
                .count("the recovery pass is overdue")
                for i in range(opts.workers)
                if stack.log_path(f"w{i}").exists()
            )
            self._count(report, db_url, accepted, effects)
        return report

    def _count(self, report: SoakReport, db_url: str, accepted: dict, effects) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            rows = dict(
                conn.execute(
                    "SELECT id::text, status FROM executions_execution WHERE id = ANY(%s::uuid[])",
                    (list(accepted),),
                ).fetchall()
            )
            runs = conn.execute(
                "SELECT e.id::text, r.node, r.attempts, r.reassignments, r.status, "
                "EXTRACT(EPOCH FROM (r.started_at - r.queued_at)) "
                "FROM executions_noderun r JOIN executions_execution e ON e.id = r.execution_id"
            ).fetchall()
        for ex_id in accepted:
            status = rows.get(ex_id)
            if status is None:
                report.lost += 1
            elif status == "succeeded":
                report.succeeded += 1
            elif status == "failed":
                report.failed += 1
            elif status in TERMINAL:
                report.other_terminal += 1
            else:
                report.stuck += 1
        stuck_ids = [ex for ex in accepted if rows.get(ex) not in (None, *TERMINAL)][:5]
        if stuck_ids:
            with psycopg.connect(db_url, autocommit=True) as conn:
                for ex_id in stuck_ids:
                    ex = conn.execute(
                        "SELECT status, created_at, started_at, deadline_at FROM "
                        "executions_execution WHERE id = %s",
                        (ex_id,),
                    ).fetchone()
                    node_rows = conn.execute(
                        "SELECT node, status, attempts, reassignments, queued_at, started_at, "
                        "dispatched_at, next_attempt_at, lease_expires_at, worker "
                        "FROM executions_noderun WHERE execution_id = %s ORDER BY id",
                        (ex_id,),
                    ).fetchall()
                    report.stuck_detail.append(
                        {
                            "execution": ex_id,
                            "shape": accepted[ex_id],
                            "execution_row": [str(v) for v in ex],
                            "node_runs": [[str(v) for v in r] for r in node_rows],
                        }
                    )
        reassigned = {(ex, node) for ex, node, _, re, _, _ in runs if re > 0}
        report.reassigned_runs = len(reassigned)
        for _, node, attempts, re, status, waited in runs:
            if node == "join" and status == "succeeded" and attempts > 1 + re:
                report.joins_more_than_once += 1
            if re > 0 and waited is not None:
                report.longest_recovery_wait_seconds = max(
                    report.longest_recovery_wait_seconds, round(float(waited), 1)
                )
        report.side_effects = sum(effects.successes.values())
        for run, count in effects.successes.items():
            if count > 1:
                report.side_effects_twice += 1
                # A repeat is explained when the call's node run was taken over (its worker
                # died or lost its database after calling and before recording the result).
                if (run, "call") not in reassigned:
                    report.side_effects_twice_unexplained += 1


def run_soak(options: SoakOptions) -> SoakReport:
    return Soak(options).run()


def render(reports: list[SoakReport]) -> str:
    fields = [
        "triggered",
        "refused",
        "succeeded",
        "failed",
        "other_terminal",
        "stuck",
        "lost",
        "idempotency_mismatches",
        "side_effects",
        "side_effects_twice",
        "side_effects_twice_unexplained",
        "joins_more_than_once",
        "reassigned_runs",
        "trigger_seconds",
        "drain_seconds",
        "backlog_at_drain",
        "finished_last_minute_of_drain",
        "longest_recovery_wait_seconds",
        "supervisor_restarts",
        "longest_recovery_gap_seconds",
        "recovery_fallback_passes",
    ]
    head = "| figure | " + " | ".join(r.broker for r in reports) + " |"
    lines = [head, "|---" * (len(reports) + 1) + "|"]
    for f in fields:
        lines.append(f"| {f} | " + " | ".join(str(getattr(r, f)) for r in reports) + " |")
    lines.append(
        "| chaos events | "
        + " | ".join(
            ", ".join(f"{k} {v}" for k, v in sorted(r.chaos_events.items())) for r in reports
        )
        + " |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--executions", type=int, default=SoakOptions.executions)
    parser.add_argument("--rate", type=float, default=SoakOptions.rate, help="triggers per second")
    parser.add_argument("--duration", type=float, help="seconds of triggering (instead of a count)")
    parser.add_argument(
        "--kill-every",
        type=float,
        nargs="+",
        default=[10, 20],
        help="seconds between chaos events: one value, or a range LOW HIGH",
    )
    parser.add_argument("--chaos", default="worker,redis,postgres,web")
    parser.add_argument("--broker", choices=["redis", "amqp", "both"], default="redis")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--drain-timeout", type=float, default=600)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    kill = args.kill_every * 2 if len(args.kill_every) == 1 else args.kill_every[:2]
    brokers = ["redis", "amqp"] if args.broker == "both" else [args.broker]
    reports = []
    for broker in brokers:
        options = SoakOptions(
            executions=args.executions,
            rate=args.rate,
            duration=args.duration,
            kill_every=(kill[0], kill[1]),
            chaos=tuple(args.chaos.split(",")),
            broker=broker,
            workers=args.workers,
            drain_timeout=args.drain_timeout,
        )
        print(f"== soak on {broker}: {asdict(options)}", flush=True)
        reports.append(run_soak(options))
        print(render(reports[-1:]), flush=True)
    print()
    print(render(reports))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"ok": r.ok} for r in reports], indent=2))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")
    sys.exit(main())
