import os

from django.core.asgi import get_asgi_application

from weconnect import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")
tracing.configure("weconnect-web")  # before the handler is built (see wsgi.py)
application = get_asgi_application()
