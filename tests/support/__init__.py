"""What the tests and the benchmarks share: building and running workflows (``workflows``),
the Celery worker launcher (``processes``, ``worker``), the local HTTP server (``http``), the
private broker (``broker``) and the fixtures registered as pytest plugins (``security``,
``monitoring``, ``nodes``)."""
