"""What the tests and the benchmarks share: building and running workflows (``workflows``),
the Celery worker launcher (``processes``, ``worker``), the local HTTP server (``http``), the
private broker (``broker``), the fixtures registered as pytest plugins (``security``,
``monitoring``, ``nodes``), and for breaking a deployment: the Procfile's stack as separate
processes (``stack``), a PostgreSQL server of the test's own (``pgcluster``) and test hosts in
network namespaces (``netns``)."""
