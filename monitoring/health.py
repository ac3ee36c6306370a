"""The health document behind ``GET /monitoring/health``.

Every probe runs in its own daemon thread with its own short socket timeout, and the answer is
assembled when all probes are back or the overall budget runs out, whichever comes first. A
probe still blocked then (a dependency that accepts connections and never answers) is reported
as timed out and its thread is left to finish on its own: the request never waits for it.

Status:
- ``down`` (HTTP 503): the database or the broker is unreachable. Nothing can be started or
  run: the API cannot record an execution and no message reaches a worker.
- ``degraded`` (HTTP 200): the engine still makes progress, or will once the part is back, but
  something needs attention: no worker answers the ping (and none is starting: a worker that
  has booted but cannot answer yet is reported as ``starting``), the recovery pass has not run
  recently (its own record, else Beat's), Redis for locks and counters is unreachable while the broker is fine (joins fall
  back to row locks, metrics counters stop), the statistics queries did not finish, or
  executions are stale (active for longer than WECONNECT_STALE_AFTER, as the stale sweep
  counts it).
- ``ok`` (HTTP 200): all of the above are fine.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone
from kombu import Connection

from executions import counters
from executions.models import Execution, NodeRun
from executions.states import EXECUTION_ACTIVE, ExecutionStatus, NodeRunStatus
from monitoring import processes
from weconnect.celery import app

Probe = Callable[[], dict[str, Any]]

OK, DEGRADED, DOWN = "ok", "degraded", "down"
RECOVERY_TASK = "weconnect-recovery"
# kombu's Redis transport keeps a priority's messages in "<queue>\x06\x16<step>" lists beside
# the queue's own list (priority 0); a queue's depth is the sum over all of them.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


# Probes still blocked after their answer was given up on, by key: (started, thread).
_stuck_lock = threading.Lock()
_inflight: dict[str, tuple[float, threading.Thread]] = {}


def run_concurrently(
    probes: dict[str, Probe], budget: float, *, scope: str = ""
) -> dict[str, dict[str, Any]]:
    """Run each probe in a daemon thread; return what finished within ``budget`` seconds.

    Daemon threads (not an executor) because a probe blocked on a hung socket must neither
    delay this answer nor keep the process from exiting. So that a dependency that hangs for
    long (a database that accepts and never answers, with no connect timeout) cannot pile up
    one blocked thread per request, a probe whose previous run (same ``scope`` and name) has
    been blocked for longer than the budget is not started again until that run returns.
    """
    results: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    done = threading.Event()
    now = time.monotonic()
    skipped: dict[str, dict[str, Any]] = {}
    with _stuck_lock:
        for name in probes:
            previous = _inflight.get(f"{scope}|{name}")
            if previous and previous[1].is_alive() and now - previous[0] > budget:
                skipped[name] = {
                    "ok": False,
                    "error": f"the previous probe has had no answer for {now - previous[0]:.1f}s",
                }

    def runner(name: str, probe: Probe) -> None:
        started = time.perf_counter()
        try:
            result = probe()
        except Exception as exc:  # a probe's failure is its answer
            result = {"ok": False, "error": _describe(exc)}
        finally:
            # Each thread opened its own database connection, if any; close it here.
            connections.close_all()
        result.setdefault("latency_ms", round((time.perf_counter() - started) * 1000, 1))
        with lock:
            results[name] = result
            if len(results) == len(probes):
                done.set()

    results.update(skipped)
    if len(results) == len(probes):
        done.set()
    for name, probe in probes.items():
        if name in skipped:
            continue
        thread = threading.Thread(
            target=runner, args=(name, probe), name=f"health-{name}", daemon=True
        )
        with _stuck_lock:
            _inflight[f"{scope}|{name}"] = (time.monotonic(), thread)
        thread.start()
    done.wait(budget)
    with lock:
        answered = dict(results)
    for name in probes:
        answered.setdefault(name, {"ok": False, "error": f"no answer within {budget:g}s"})
    return answered


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def _redis(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry_on_timeout=False
    )


def queue_roles() -> dict[str, str]:
    """The engine's two queues by role: ``workflow`` (everything but node runs) and ``node``."""
    return {"workflow": settings.WECONNECT_WORKFLOW_QUEUE, "node": settings.WECONNECT_NODE_QUEUE}


def queue_names() -> list[str]:
    return list(queue_roles().values())


def broker_key_prefix() -> str:
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}
    return str(options.get("global_keyprefix", ""))


def queue_depths(client: redis.Redis, queues: list[str], prefix: str) -> dict[str, int]:
    """Messages waiting in each broker queue: one pipelined round trip for all of them."""
    pipe = client.pipeline(transaction=False)
    for q in queues:
        pipe.llen(prefix + q)
        for step in _PRIORITY_STEPS:
            pipe.llen(f"{prefix}{q}{_PRIORITY_SEPARATOR}{step}")
    counts = pipe.execute()
    per = 1 + len(_PRIORITY_STEPS)
    return {q: int(sum(counts[i * per : (i + 1) * per])) for i, q in enumerate(queues)}


def amqp_queue_depths(broker_url: str, queues: list[str], timeout: float) -> dict[str, int]:
    """Messages ready in each RabbitMQ queue, from a passive declare (which creates nothing:
    a queue not declared yet by a worker counts as empty)."""
    depths: dict[str, int] = {}
    with Connection(broker_url, connect_timeout=timeout) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        for q in queues:
            channel = conn.channel()
            try:
                depths[q] = int(channel.queue_declare(queue=q, passive=True).message_count)
            except Exception as exc:  # 404 NOT_FOUND closes the channel
                if getattr(exc, "code", None) != 404:
                    raise
                depths[q] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


def broker_queue_depths(broker_url: str, queues: list[str], prefix: str, timeout: float):
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return queue_depths(_redis(broker_url, timeout), queues, prefix)
    return amqp_queue_depths(broker_url, queues, timeout)


def control_connection(broker_url: str, timeout: float) -> Connection:
    """A broker connection for one broadcast (ping, inspect) and its replies.

    Its own, never the app's pool: a broadcast that stops listening at its timeout leaves a
    BRPOP in flight on the connection, and the next broadcast over the same connection would
    read its answer as the reply to that old command (every other ping came back empty). The
    short polling interval keeps closing it, which waits for that BRPOP, brief.
    """

    options = {
        **(app.conf.broker_transport_options or {}),
        "polling_interval": min(0.1, timeout),
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    return Connection(broker_url, connect_timeout=timeout, transport_options=options)


def stale_after() -> timedelta:
    value = getattr(settings, "WECONNECT_STALE_AFTER", 24 * 3600)
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def count_stale(executions, now: datetime) -> int:
    """Active executions older than WECONNECT_STALE_AFTER, measured as the stale sweep
    (monitoring.sweeps) measures them: from the start, or the creation if never started."""
    from django.db.models import F
    from django.db.models.functions import Coalesce

    return (
        executions.filter(status__in=list(EXECUTION_ACTIVE))
        .annotate(since=Coalesce(F("started_at"), F("created_at")))
        .filter(since__lt=now - stale_after())
        .count()
    )


@dataclass
class HealthCheck:
    """The probes, with every address injectable (tests point them at closed or hung ports)."""

    database: str = "default"
    redis_url: str | None = None
    broker_url: str | None = None
    probe_timeout: float | None = None
    budget: float | None = None
    queues: dict[str, str] | None = None  # role -> broker queue name
    key_prefix: str | None = None
    now: datetime | None = None
    extra: dict[str, Probe] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.redis_url = self.redis_url or settings.REDIS_URL
        self.broker_url = self.broker_url or settings.CELERY_BROKER_URL
        self.probe_timeout = self.probe_timeout or settings.WECONNECT_HEALTH_PROBE_TIMEOUT
        self.budget = self.budget or settings.WECONNECT_HEALTH_BUDGET
        self.queues = self.queues or queue_roles()
        self.key_prefix = broker_key_prefix() if self.key_prefix is None else self.key_prefix

    # --- probes -------------------------------------------------------------------------

    def _with_statement_timeout(self):
        conn = connections[self.database]
        if conn.vendor == "postgresql":
            with conn.cursor() as cursor:
                # Local (like SET LOCAL, which takes no bound parameter): the limit ends with this
                # transaction, never leaks to other work.
                cursor.execute(
                    "SELECT set_config('statement_timeout', %s, true)",
                    [str(int(self.probe_timeout * 1000))],
                )

    def probe_database(self) -> dict[str, Any]:
        started = time.perf_counter()
        with transaction.atomic(using=self.database):
            self._with_statement_timeout()
            with connections[self.database].cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}

    def probe_redis(self) -> dict[str, Any]:
        started = time.perf_counter()
        _redis(self.redis_url, self.probe_timeout).ping()
        return {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}

    def probe_broker(self) -> dict[str, Any]:
        started = time.perf_counter()
        depths = broker_queue_depths(
            self.broker_url, list(self.queues.values()), self.key_prefix, self.probe_timeout
        )
        latency = round((time.perf_counter() - started) * 1000, 1)
        return {"ok": True, "latency_ms": latency, "waiting": depths}

    def probe_workers(self) -> dict[str, Any]:
        with control_connection(self.broker_url, self.probe_timeout) as conn:
            replies = app.control.ping(timeout=self.probe_timeout * 0.8, connection=conn)
        names = sorted(name for reply in replies or [] for name in reply)
        # A worker still booting has reported itself but cannot answer the ping yet.
        try:
            entries = processes.read(_redis(self.redis_url, self.probe_timeout))
            starting = [h for h in processes.starting_workers(entries) if h not in names]
        except Exception:  # Redis is reported by its own probe
            starting = []
        doc: dict[str, Any] = {
            "ok": bool(names or starting),
            "online": len(names),
            "starting": len(starting),
            "workers": names,
            "starting_workers": starting,
        }
        if not names and starting:
            doc["state"] = "starting"
        elif not names:
            doc["error"] = "no worker answered the ping"
        return doc

    def probe_beat(self) -> dict[str, Any]:
        """When the recovery pass last ran: its own record in Redis (written at the end of
        every pass), else Beat's ``last_run_at`` (which Beat saves only every few minutes, so
        alone it left health ``degraded`` for the first minutes after a start)."""
        from django_celery_beat.models import PeriodicTask

        with transaction.atomic(using=self.database):
            self._with_statement_timeout()
            beat_last = (
                PeriodicTask.objects.using(self.database)
                .filter(name=RECOVERY_TASK)
                .values_list("last_run_at", flat=True)
                .first()
            )
        try:
            stamp = counters.recovery_last_run(_redis(self.redis_url, self.probe_timeout))
        except Exception:  # Redis is reported by its own probe; Beat's record remains
            stamp = None
        own_last = datetime.fromtimestamp(stamp, tz=UTC) if stamp else None
        last = max((t for t in (own_last, beat_last) if t is not None), default=None)
        now = self.now or timezone.now()
        silent_after = settings.WECONNECT_BEAT_SILENT_AFTER
        ok = last is not None and (now - last).total_seconds() <= silent_after
        doc: dict[str, Any] = {
            "ok": ok,
            "recovery_last_run": last.isoformat() if last else None,
            "recorded_by": None if last is None else ("recovery" if last == own_last else "beat"),
        }
        if not ok:
            doc["error"] = (
                f"{RECOVERY_TASK} has never run"
                if last is None
                else f"{RECOVERY_TASK} last ran more than {silent_after}s ago"
            )
        return doc

    def probe_stats(self) -> dict[str, Any]:
        now = self.now or timezone.now()
        with transaction.atomic(using=self.database):
            self._with_statement_timeout()
            executions = Execution.objects.using(self.database)
            runs = NodeRun.objects.using(self.database)
            counts = _count_by_status(executions)
            stale = count_stale(executions, now)
            active = runs.filter(status=NodeRunStatus.RUNNING).count()
            # Failed in the last hour: by finished_at, the moment the run was given up on.
            hour_ago = now - timedelta(hours=1)
            failed = runs.filter(status=NodeRunStatus.FAILED, finished_at__gte=hour_ago).count()
            executions_failed = executions.filter(
                status__in=[ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT],
                finished_at__gte=hour_ago,
            ).count()
        return {
            "ok": True,
            "executions": {
                "running": counts.get(ExecutionStatus.RUNNING, 0),
                "pending": counts.get(ExecutionStatus.PENDING, 0),
                "stale": stale,
            },
            "active": active,
            "failed": failed,
            "executions_failed": executions_failed,
        }

    # --- the document -------------------------------------------------------------------

    def cache_key(self) -> tuple:
        queues = tuple(sorted(self.queues.items()))
        return (self.database, self.redis_url, self.broker_url, queues, self.key_prefix)

    def run(self) -> dict[str, Any]:
        probe_runs.increment()
        probes: dict[str, Probe] = {
            "database": self.probe_database,
            "redis": self.probe_redis,
            "broker": self.probe_broker,
            "workers": self.probe_workers,
            "beat": self.probe_beat,
            "stats": self.probe_stats,
            **self.extra,
        }
        scope = f"{self.database}|{self.redis_url}|{self.broker_url}"
        results = run_concurrently(probes, self.budget, scope=scope)
        stats = results.pop("stats")
        broker = results["broker"]
        waiting = broker.pop("waiting", None)
        workers = results["workers"]
        workers.setdefault("online", 0)

        # The queues by role, whatever the broker names them. ``node``: node runs running now
        # and failed in the last hour. ``workflow``: executions running now and failed (or
        # timed out) in the last hour, the work its upkeep tasks drive.
        executions = stats.get("executions", {})
        figures = {
            "workflow": (executions.get("running"), stats.get("executions_failed")),
            "node": (stats.get("active"), stats.get("failed")),
        }
        queues: dict[str, dict[str, int | None]] = {}
        for role, name in self.queues.items():
            active, failed = figures.get(role, (0, 0))
            queues[role] = {
                "waiting": None if waiting is None else waiting.get(name, 0),
                "active": active,
                "failed": failed,
            }

        status = OK
        if not results["database"]["ok"] or not broker["ok"]:
            status = DOWN
        elif not all(r["ok"] for r in results.values()) or not stats.get("ok"):
            status = DEGRADED
        elif stats["executions"]["stale"]:
            status = DEGRADED
        checks = {name: results[name] for name in probes if name != "stats"}
        if not stats.get("ok"):
            checks["statistics"] = stats
        return {
            "status": status,
            "checks": checks,
            "queues": queues,
            "executions": stats.get(
                "executions", {"running": None, "pending": None, "stale": None}
            ),
        }


def _count_by_status(qs) -> dict[str, int]:
    from django.db.models import Count

    rows = (
        qs.filter(status__in=[ExecutionStatus.PENDING, ExecutionStatus.RUNNING])
        .order_by()
        .values_list("status")
        .annotate(n=Count("id"))
    )
    return {status: n for status, n in rows}


def health_check(**options: Any) -> dict[str, Any]:
    """The full health document; ``options`` override the addresses and timeouts."""
    return HealthCheck(**options).run()


class _Counter:
    """How many times this process ran the probes (read by tests and the ``probes`` field)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def increment(self) -> None:
        with self._lock:
            self.value += 1


probe_runs = _Counter()


class HealthCache:
    """The last health document of this process, shared by every caller for ``ttl`` seconds.

    Probing costs real work elsewhere (a broadcast ping every worker answers, queries, round
    trips): answering every public call with fresh probes let 32 parallel calls take the API's
    latency from 4 ms to 1.8 s. So callers queue on one lock while the first of them probes,
    and all get that result (single flight): any number of callers costs one probe per ``ttl``
    in each web process. The probes are bounded by WECONNECT_HEALTH_BUDGET, so nobody waits on
    the lock for longer than that.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._doc: dict[str, Any] | None = None
        self._key: tuple | None = None
        self._at = 0.0

    def get(self, check: HealthCheck, ttl: float) -> dict[str, Any]:
        key = check.cache_key()
        with self._lock:
            age = time.monotonic() - self._at
            if self._doc is None or self._key != key or age >= ttl:
                self._doc, self._key = check.run(), key
                self._at, age = time.monotonic(), 0.0
            doc = copy.deepcopy(self._doc)
        doc["age_seconds"] = round(age, 3)
        return doc

    def put(self, check: HealthCheck, doc: dict[str, Any]) -> None:
        with self._lock:
            self._doc, self._key, self._at = copy.deepcopy(doc), check.cache_key(), time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._doc, self._key, self._at = None, None, 0.0


health_cache = HealthCache()


def cached_health_check(ttl: float | None = None) -> dict[str, Any]:
    """The health document, at most ``ttl`` (WECONNECT_HEALTH_CACHE_SECONDS) seconds old."""
    ttl = settings.WECONNECT_HEALTH_CACHE_SECONDS if ttl is None else ttl
    return health_cache.get(HealthCheck(), ttl)


def fresh_health_check() -> dict[str, Any]:
    """Probes now (for privileged callers) and shares the result with the public ones."""
    check = HealthCheck()
    doc = check.run()
    health_cache.put(check, doc)
    doc["age_seconds"] = 0.0
    return doc


def public_health(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without the workers' names: the counts of workers stay."""
    doc = copy.deepcopy(doc)
    workers = doc.get("checks", {}).get("workers")
    if workers is not None:
        workers.pop("workers", None)
        workers.pop("starting_workers", None)
    return doc
