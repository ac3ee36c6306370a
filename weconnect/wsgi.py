import os

from django.core.wsgi import get_wsgi_application

from weconnect.middleware import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "weconnect.settings")
django_application = get_wsgi_application()

# gunicorn de-chunks request bodies without giving their length; see ChunkedBodyMiddleware.
application = ChunkedBodyMiddleware(django_application)
