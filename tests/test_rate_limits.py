"""Named rate limits: the API, validation at save, and the limit held across real worker
processes by the Redis bucket (tests/broker.py gives each worker test its own Redis, which a
test may stop and restart)."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import redis

from executions.engine.rate_limits import take_token
from executions.engine.recovery import recovery_run
from executions.models import Execution, NodeRun, RateLimit
from executions.services.executions import execution_create
from tests.conftest import drop_redis_keys
from tests.support.broker import PrivateBroker
from tests.support.workflows import make_workflow, node, wait_for, workflow_doc

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _drop_buckets(settings):
    """Buckets expire one period after use; a test does not leave them for the next ones."""
    yield
    drop_redis_keys(settings.WECONNECT_KEY_PREFIX + "rl:*")


def limited(key="a", name="github", rate_key=None, **extra):
    ref = {"name": name} if rate_key is None else {"name": name, "key": rate_key}
    return node(key, rate_limit=ref, **extra)


# --- API ---------------------------------------------------------------------------------


def test_rate_limits_api_crud_and_owner_isolation(api, other_api):
    r = api.post(
        "/api/rate-limits/", {"name": "github", "limit": 10, "period_seconds": 1}, format="json"
    )
    assert r.status_code == 201, r.content
    body = r.json()
    assert {body["name"], body["limit"], body["period_seconds"]} == {"github", 10, 1}
    rid = body["id"]
    assert api.get(f"/api/rate-limits/{rid}/").json()["limit"] == 10
    assert [x["name"] for x in api.get("/api/rate-limits/").json()["results"]] == ["github"]

    # Another user sees nothing of it and may use the same name for a limit of their own.
    assert other_api.get("/api/rate-limits/").json()["results"] == []
    assert other_api.get(f"/api/rate-limits/{rid}/").status_code == 404
    assert (
        other_api.put(
            f"/api/rate-limits/{rid}/",
            {"name": "x", "limit": 1, "period_seconds": 1},
            format="json",
        ).status_code
        == 404
    )
    assert other_api.delete(f"/api/rate-limits/{rid}/").status_code == 404
    assert (
        other_api.post(
            "/api/rate-limits/", {"name": "github", "limit": 1, "period_seconds": 60}, format="json"
        ).status_code
        == 201
    )

    r = api.put(
        f"/api/rate-limits/{rid}/",
        {"name": "github", "limit": 5, "period_seconds": 2},
        format="json",
    )
    assert r.status_code == 200 and r.json()["limit"] == 5
    assert api.delete(f"/api/rate-limits/{rid}/").status_code == 204
    assert api.get(f"/api/rate-limits/{rid}/").status_code == 404


@pytest.mark.parametrize(
    "body,field",
    [
        ({"name": "ok", "limit": 0, "period_seconds": 1}, "limit"),
        ({"name": "ok", "limit": "ten", "period_seconds": 1}, "limit"),
        ({"name": "ok", "limit": 1, "period_seconds": 0}, "period_seconds"),
        ({"name": "ok", "limit": 1, "period_seconds": 86401}, "period_seconds"),
        ({"name": "no spaces", "limit": 1, "period_seconds": 1}, "name"),
        ({"limit": 1, "period_seconds": 1}, "name"),
    ],
)
def test_bad_rate_limit_is_a_400_naming_the_field(api, body, field):
    r = api.post("/api/rate-limits/", body, format="json")
    assert r.status_code == 400 and field in r.json(), r.content


def test_duplicate_name_is_a_400(api):
    body = {"name": "dup", "limit": 1, "period_seconds": 1}
    assert api.post("/api/rate-limits/", body, format="json").status_code == 201
    r = api.post("/api/rate-limits/", body, format="json")
    assert r.status_code == 400 and "name" in r.json()


def test_a_limit_in_use_cannot_be_deleted_or_renamed(api, user):
    rl = RateLimit.objects.create(owner=user, name="github", limit=1, period_seconds=1)
    wf = make_workflow(user, [limited()])
    r = api.delete(f"/api/rate-limits/{rl.id}/")
    assert r.status_code == 409 and r.json()["workflows"] == [{"id": str(wf.id), "name": wf.name}]
    r = api.put(
        f"/api/rate-limits/{rl.id}/", {"name": "gh", "limit": 1, "period_seconds": 1}, format="json"
    )
    assert r.status_code == 409
    # Changing the numbers is fine: the next start uses them.
    r = api.put(
        f"/api/rate-limits/{rl.id}/",
        {"name": "github", "limit": 3, "period_seconds": 1},
        format="json",
    )
    assert r.status_code == 200


def test_workflow_naming_an_unknown_limit_is_a_400_naming_the_field(api, user, other_user):
    RateLimit.objects.create(owner=user, name="github", limit=1, period_seconds=1)
    RateLimit.objects.create(owner=other_user, name="theirs", limit=1, period_seconds=1)
    doc = workflow_doc([limited("a"), limited("b", name="theirs"), limited("c", name="nope")])
    r = api.post("/api/workflows/", doc, format="json")
    assert r.status_code == 400, r.content
    errors = r.json()
    assert "nodes[0].rate_limit.name" not in errors
    assert "theirs" in errors["nodes[1].rate_limit.name"][0]
    assert "nope" in errors["nodes[2].rate_limit.name"][0]

    bad = workflow_doc([node("a", rate_limit={"name": "github", "key": "{{ input.x "})])
    r = api.post("/api/workflows/", bad, format="json")
    assert r.status_code == 400 and "key" in str(r.json()["nodes"]["0"]["rate_limit"])
    r = api.post("/api/workflows/", workflow_doc([node("a", rate_limit={})]), format="json")
    assert r.status_code == 400 and "name" in r.json()["nodes"]["0"]["rate_limit"]

    good = workflow_doc([limited("a", rate_key="{{ input.customer }}")])
    r = api.post("/api/workflows/", good, format="json")
    assert r.status_code == 201, r.content
    assert r.json()["nodes"][0]["rate_limit"] == {"name": "github", "key": "{{ input.customer }}"}


# --- The bucket --------------------------------------------------------------------------


def test_bucket_grants_at_most_limit_per_window_and_keys_expire(settings):
    client = redis.Redis.from_url(settings.REDIS_URL)

    def take(key):
        return take_token(owner_id=1, name="unit", key=key, limit=3, period_ms=5000)

    answers = [take("k") for _ in range(5)]
    assert [a[0] for a in answers] == ["taken", "taken", "taken", "wait", "wait"]
    first_wait, second_wait = answers[3][1], answers[4][1]
    assert 0 < first_wait <= 5000 and second_wait > first_wait  # waiters are spread out
    # Another key is another bucket.
    assert take("other")[0] == "taken"
    keys = list(client.scan_iter(match=settings.WECONNECT_KEY_PREFIX + "rl:*"))
    assert keys and all(0 < client.pttl(k) <= 15000 for k in keys)
    # The script cache flushed (as after a restart): the next call loads the script again,
    # and the bucket's state is still there.
    client.script_flush()
    assert take("k")[0] == "wait"
    assert take("fresh")[0] == "taken"


# --- Across real workers -----------------------------------------------------------------


def assert_window(starts, limit, period):
    """No half-open window of ``period`` holds more than ``limit`` starts."""
    starts = sorted(starts)
    for i in range(len(starts) - limit):
        gap = starts[i + limit] - starts[i]
        assert gap >= period, (i, starts[i], starts[i + limit])


def drive_until_done(ids, timeout, supervise=()):
    """Run recovery as Beat would, and restart any of the ``supervise`` workers that exited,
    as a process supervisor would: kombu's Redis transport can end a worker with an
    "Unrecoverable error" when the broker restarts under messages it holds (its
    restore_unacked on a connection already gone); the engine must recover either way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in supervise:
            if w.proc is not None and w.proc.poll() is not None:
                w.start(wait=False)
        recovery_run()  # as Beat would: re-sends what a broker restart lost
        if not Execution.objects.filter(id__in=ids, status__in=["pending", "running"]).exists():
            return list(Execution.objects.filter(id__in=ids))
        time.sleep(0.5)
    left = Execution.objects.filter(id__in=ids, status__in=["pending", "running"]).count()
    raise AssertionError(f"{left} executions unfinished after {timeout}s")


def _seen_waiting(api, ids) -> dict | None:
    for ex_id in ids[-20:]:
        [run] = api.get(f"/api/executions/{ex_id}/").json()["node_runs"]
        if run["status"] == "queued" and run["waiting_for"]:
            return run["waiting_for"]
    return None


def test_hundred_runs_across_two_workers_never_exceed_ten_a_second(api, user, settings):
    settings.WECONNECT_REDISPATCH_AFTER_SECONDS = 5
    RateLimit.objects.create(owner=user, name="github", limit=10, period_seconds=1)
    wf = make_workflow(user, [limited("call")])
    with PrivateBroker() as broker:
        broker.worker("rl1", concurrency=2).start()
        broker.worker("rl2", concurrency=2).start()
        ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(100)]
        waiting = None
        deadline = time.monotonic() + 30
        while waiting is None and time.monotonic() < deadline:
            waiting = _seen_waiting(api, ids)
        executions = drive_until_done(ids, timeout=180)
    assert {e.status for e in executions} == {"succeeded"}
    # A waiting run says why in the API.
    assert waiting is not None and waiting["rate_limit"] == "github" and waiting["until"]
    runs = NodeRun.objects.filter(execution_id__in=ids)
    # Waiting for a token is not an attempt.
    assert set(runs.values_list("attempts", flat=True)) == {1}
    assert not runs.exclude(waiting_for=None).exists()  # cleared when the token was taken
    starts = [r.started_at for r in runs]
    assert_window(starts, 10, timedelta(seconds=1))
    assert max(starts) - min(starts) >= timedelta(seconds=9)


def test_the_limit_resumes_after_redis_restarts(user, settings):
    settings.WECONNECT_REDISPATCH_AFTER_SECONDS = 1
    RateLimit.objects.create(owner=user, name="github", limit=10, period_seconds=1)
    wf = make_workflow(user, [limited("call")])
    with PrivateBroker() as broker:
        broker.worker("rs1", concurrency=2, WECONNECT_RATE_LIMIT_UNAVAILABLE_DELAY="0.5").start()
        broker.worker("rs2", concurrency=2, WECONNECT_RATE_LIMIT_UNAVAILABLE_DELAY="0.5").start()
        ids = [execution_create(workflow=wf, input={"i": i})[0].id for i in range(60)]
        deadline = time.monotonic() + 60
        while NodeRun.objects.filter(execution_id__in=ids, status="succeeded").count() < 20:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        broker.stop()  # every key, the script cache and the queued messages are gone
        time.sleep(1.5)
        broker.start()
        restarted_at = time.time()
        executions = drive_until_done(ids, timeout=180, supervise=broker.workers)
    assert {e.status for e in executions} == {"succeeded"}
    starts = [r.started_at for r in NodeRun.objects.filter(execution_id__in=ids)]
    after = [s for s in starts if s.timestamp() > restarted_at]
    assert len(after) >= 20, len(after)
    # The limit held on both sides of the restart.
    assert_window(starts, 10, timedelta(seconds=1))
    assert max(after) - min(after) >= timedelta(seconds=(len(after) - 10) // 10)


# --- Admin -------------------------------------------------------------------------------


def test_admin_edits_rate_limits_and_keeps_those_in_use(admin_client, user):
    r = admin_client.post(
        "/admin/executions/ratelimit/add/",
        {"owner": user.id, "name": "github", "limit": 10, "period_seconds": 1},
    )
    assert r.status_code == 302, r.content[:2000]
    rl = RateLimit.objects.get(owner=user, name="github")
    bad = admin_client.post(
        f"/admin/executions/ratelimit/{rl.id}/change/",
        {"owner": user.id, "name": "github", "limit": 0, "period_seconds": 1},
    )
    assert bad.status_code == 200 and b"must be 1 to" in bad.content
    wf = make_workflow(user, [limited()])
    page = admin_client.get(f"/admin/executions/ratelimit/{rl.id}/change/")
    assert page.status_code == 200 and wf.name.encode() in page.content
    renamed = admin_client.post(
        f"/admin/executions/ratelimit/{rl.id}/change/",
        {"owner": user.id, "name": "gh", "limit": 5, "period_seconds": 2},
    )
    assert renamed.status_code == 200 and b"cannot be renamed" in renamed.content
    ok = admin_client.post(
        f"/admin/executions/ratelimit/{rl.id}/change/",
        {"owner": user.id, "name": "github", "limit": 5, "period_seconds": 2},
    )
    assert ok.status_code == 302
    rl.refresh_from_db()
    assert (rl.limit, rl.period_seconds) == (5, 2)
    assert admin_client.get(f"/admin/executions/ratelimit/{rl.id}/delete/").status_code == 403
    assert admin_client.get("/admin/executions/ratelimit/").status_code == 200


@pytest.mark.worker
def test_each_key_has_its_own_bucket_and_a_waiting_run_says_which(api, user, worker):
    RateLimit.objects.create(owner=user, name="per_customer", limit=1, period_seconds=600)
    wf = make_workflow(
        user,
        [node("call", rate_limit={"name": "per_customer", "key": "{{ input.customer }}"})],
    )
    first = execution_create(workflow=wf, input={"customer": "acme"})[0]
    other = execution_create(workflow=wf, input={"customer": "globex"})[0]
    assert wait_for(first.id).status == "succeeded"
    assert wait_for(other.id).status == "succeeded"
    second = execution_create(workflow=wf, input={"customer": "acme"})[0]
    deadline = time.monotonic() + 30
    while True:
        [run] = api.get(f"/api/executions/{second.id}/").json()["node_runs"]
        if run["waiting_for"]:
            break
        assert time.monotonic() < deadline, run
        time.sleep(0.1)
    assert run["status"] == "queued" and run["attempts"] == 0
    assert run["waiting_for"]["rate_limit"] == "per_customer"
    assert run["waiting_for"]["key"] == "acme"
    assert run["next_attempt_at"] and run["waiting_for"]["until"]
    # Cancelled while waiting: it never runs, and no longer says it waits.
    assert api.post(f"/api/executions/{second.id}/cancel/").status_code == 200
    [run] = api.get(f"/api/executions/{second.id}/").json()["node_runs"]
    assert run["status"] == "cancelled" and run["waiting_for"] is None


@pytest.mark.worker
def test_a_key_that_does_not_render_fails_the_node_without_retrying(user, worker):
    RateLimit.objects.create(owner=user, name="broken_key", limit=5, period_seconds=1)
    wf = make_workflow(
        user,
        [
            node(
                "call",
                rate_limit={"name": "broken_key", "key": "{{ input.missing.deeper }}"},
                retry={"max_retries": 3},
            )
        ],
    )
    ex = wait_for(execution_create(workflow=wf, input={})[0].id)
    run = ex.node_runs.get()
    assert ex.status == "failed" and run.attempts == 1
    assert run.output["type"] == "TemplateError" and "rate_limit.key" in run.output["message"]
