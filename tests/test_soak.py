"""The one-minute chaos soak (`make soak` runs the long one): the Procfile's stack on its own
PostgreSQL and Redis, executions of every shape triggered twice per key, while a worker is
SIGKILLed, Redis restarts with nothing on disk, PostgreSQL crashes and web is killed. A process
that ends on its own (a worker that kombu's Redis transport takes down when Redis restarts) is
started again, as production's supervisor does; without that the run would measure the missing
supervisor, not the engine."""

from __future__ import annotations

import pytest

from benchmarks.soak import SoakOptions, render, run_soak
from tests.environment import BROKER


# Set-up (a cluster of its own, migrations), 45 s of chaos, then up to 240 s of drain.
@pytest.mark.timeout(480)
def test_one_minute_soak_loses_nothing():
    try:
        import pgserver  # noqa: F401
    except ImportError:  # pragma: no cover - a dev dependency
        pytest.skip("the pgserver package (PostgreSQL binaries) is not installed")
    report = run_soak(
        SoakOptions(duration=45, rate=3, kill_every=(5, 8), broker=BROKER, drain_timeout=240)
    )
    print("\n" + render([report]))
    assert set(report.chaos_events) == {"worker", "redis", "postgres", "web"}, report
    assert report.triggered > 60
    assert report.lost == 0 and report.stuck == 0, report
    assert report.idempotency_mismatches == 0
    assert report.joins_more_than_once == 0
    assert report.side_effects_twice_unexplained == 0
    assert report.succeeded == report.triggered, report
