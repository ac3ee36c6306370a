"""Benchmarks of the engine against raw Celery on the same broker, run with
``python -m benchmarks`` (``make bench``). See docs/performance.md for the figures."""
