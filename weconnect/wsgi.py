import os

from django.core.wsgi import get_wsgi_application

from weconnect import tracing
from weconnect.middleware import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")
# Before the handler is built: Django's instrumentation adds its middleware (when tracing is
# configured at all; otherwise nothing of OpenTelemetry is loaded).
tracing.configure("weconnect-web")
django_application = get_wsgi_application()

# gunicorn de-chunks request bodies without giving their length; see ChunkedBodyMiddleware.
application = ChunkedBodyMiddleware(django_application)

from monitoring import processes  # noqa: E402  (needs the settings configured above)

# Every web process reports its memory, CPU and open files (monitoring/processes.py).
processes.start("web")
