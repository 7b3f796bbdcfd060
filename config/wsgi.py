"""WSGI entry point (config/web.py serves it): Django, behind the fast path for cached answers
(tenants/fast_answers.py)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
django_application = get_wsgi_application()

from tenants.fast_answers import CachedAnswers  # noqa: E402 - needs the apps loaded

application = CachedAnswers(django_application)
