"""WSGI entry point (config/web.py serves it): Django, behind the fast path (core/fast_path.py) for the
hottest calls: the recommendation surfaces' answers and event ingestion."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django_application = get_wsgi_application()

# the handlers need the apps loaded
from core.fast_path import FastPath  # noqa: E402
from events.wsgi import fast_ingest  # noqa: E402
from recommendations.serving.wsgi import fast_answer  # noqa: E402

application = FastPath(django_application, {"GET": [fast_answer], "POST": [fast_ingest]})
