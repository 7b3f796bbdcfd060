"""WSGI entry point (config/web.py serves it): Django, behind the fast path for recommendation answers
(recommendations/serving/wsgi.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django_application = get_wsgi_application()

from recommendations.serving.wsgi import FastAnswers  # noqa: E402 - needs the apps loaded

application = FastAnswers(django_application)
