"""WSGI entry point (config/web.py serves it): Django, behind the fast path (core/fast_path.py) for the
hottest calls: the recommendation surfaces' answers and event ingestion."""

import gc
import os
import resource

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
# a web request's query never runs longer than this (workers, which load a store's events, are not bound;
# nor are processes this one starts)
_timeout_set_here = "REQUEST_STATEMENT_TIMEOUT_MS" not in os.environ
os.environ.setdefault("REQUEST_STATEMENT_TIMEOUT_MS", "15000")
django_application = get_wsgi_application()
if _timeout_set_here:
    del os.environ["REQUEST_STATEMENT_TIMEOUT_MS"]

# every model version this process serves is a memory map, which holds its file open: as many open files
# as the hard limit allows (the soft one is often 1,024; a worker may hold a few thousand small models)
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
_wanted = _hard if _hard != resource.RLIM_INFINITY else 1 << 20
if _soft != resource.RLIM_INFINITY and _soft < _wanted:
    resource.setrlimit(resource.RLIMIT_NOFILE, (_wanted, _hard))

# the handlers need the apps loaded
from core.fast_path import FastPath  # noqa: E402
from events.wsgi import fast_ingest  # noqa: E402
from recommendations.serving.wsgi import fast_answer  # noqa: E402

application = FastPath(django_application, {"GET": [fast_answer], "POST": [fast_ingest]})

# the compiled loops of computed answers (numba), loaded from numba's cache now, when the process starts,
# rather than by its first shopper's request (a quarter of a second, the GIL held; compiled the first time
# after a change to them, and cached on disk)
from recommendations.engine.recommender import compile_serving  # noqa: E402

compile_serving()
# What is loaded by now (Django, the apps, numba's type registries: some 300,000 objects) lives as long as
# the process: kept out of the garbage collector's full passes, which otherwise scan it all and held the
# GIL for 150-260 ms a pass, about twice per worker in an 8 s bench run (requests behind it waited: p99
# 100-190 ms instead of 12-18). The collector still frees cycles of whatever is made after this.
gc.freeze()
