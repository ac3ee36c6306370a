import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")
application = get_wsgi_application()

from monitoring import processes  # noqa: E402  (needs the settings configured above)

# Every web process reports its memory, CPU and open files (monitoring/processes.py).
processes.start("web")
