"""Observability: Prometheus metrics, the request id and store carried into every log line, and the
middleware that times requests by surface.

Under the web server (several processes) and on workers, PROMETHEUS_MULTIPROC_DIR makes the metrics of every
process add up at /metrics; `manage.py serve` sets it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from core import tenancy

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# who is acting, for the audit log: an API key ("api key rk_<prefix>"), an admin user, else "system"
actor_var: contextvars.ContextVar[str] = contextvars.ContextVar("actor", default="system")
store_var: contextvars.ContextVar[str] = contextvars.ContextVar("store", default="-")

REQUEST_SECONDS = Histogram(
    "recsys_request_seconds",
    "API request latency by surface",
    ["surface", "method", "status"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ANSWERS_CACHED = Counter(
    "recsys_answer_cache_total",
    "Answers of cached surfaces: hit (served from the cache, on the fast path or by the view) or miss",
    ["surface", "outcome"],
)
SERVING_LOADS = Counter(
    "recsys_serving_loads_total",
    "Models and catalogs loaded into a web process (a model version once per process while it fits)",
    ["kind"],
)
SERVING_BYTES = Gauge(
    "recsys_serving_bytes",
    "Bytes of models and catalogs held by the web processes (each at most SERVING_MODEL_MB and "
    "SERVING_CATALOG_MB; memory-mapped models are shared through the page cache)",
    ["kind"],
    multiprocess_mode="livesum",
)
EVENTS_INGESTED = Counter("recsys_events_ingested_total", "Events received, by outcome", ["outcome"])
REFUSED_BY_LIMIT = Counter(
    "recsys_refused_by_limit_total",
    "Requests refused by a limit: rate_limited, quota (products or events a day), body_too_large",
    ["limit"],
)
TRAINING_SECONDS = Histogram(
    "recsys_training_seconds", "Training run duration", buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600)
)
TRAINING_RUNS = Counter("recsys_training_runs_total", "Training runs finished, by status", ["status"])


@functools.lru_cache(maxsize=64)
def answer_cache_counter(surface: str, outcome: str) -> Any:
    """The counter child of a surface and outcome (labels() costs more than inc() on a hot path)."""
    return ANSWERS_CACHED.labels(surface, outcome)


class ContextFilter(logging.Filter):
    """Adds request_id and store to every record, so JSON logs can be joined per request and tenant."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.store = store_var.get()
        return True


_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestMiddleware:
    """A request id (the caller's X-Request-ID when well-formed), echoed in the response, and the
    request's latency by surface (the URL pattern's name, never the raw path)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        # Set, not reset at the end: Django logs a 4xx/5xx after the middleware chain has returned, and
        # that line must still carry them. The next request on this thread sets its own.
        request_id_var.set(request_id)
        store_var.set("-")
        actor_var.set("system")
        started = time.perf_counter()
        # no store's rows until the request's key is known (core/tenancy.py); the scope of the request
        # ends with it (a test's client runs requests in the test's own context)
        scope = tenancy.enter(tenancy.NONE)
        try:
            response = self.get_response(request)
        finally:
            tenancy.leave(scope)
        match = getattr(request, "resolver_match", None)
        if match and match.url_name:
            surface = match.url_name
        else:
            surface = "admin" if request.path.startswith("/admin") else "other"
        REQUEST_SECONDS.labels(surface, request.method, f"{response.status_code // 100}xx").observe(
            time.perf_counter() - started
        )
        response["X-Request-ID"] = request_id
        return response


class QueueDepthCollector:
    """The number of messages waiting in each Celery queue, read from the broker at scrape time."""

    def collect(self) -> Any:
        gauge = GaugeMetricFamily("recsys_queue_depth", "Messages waiting per Celery queue", labels=["queue"])
        try:
            from kombu import Connection

            with Connection(settings.CELERY_BROKER_URL, connect_timeout=1) as connection:
                channel = connection.default_channel
                for queue in settings.CELERY_TASK_QUEUES_USED:
                    try:
                        _, waiting, _ = channel.queue_declare(queue, passive=True)
                    except Exception:  # noqa: BLE001 - a queue nobody declared yet is empty
                        waiting = 0
                    gauge.add_metric([queue], waiting)
        except Exception:  # noqa: BLE001 - a broker that is down shows as no samples (and in /health)
            return
        yield gauge


def metrics_view(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    output = generate_latest(registry)
    queue_registry = CollectorRegistry()
    queue_registry.register(QueueDepthCollector())
    output += generate_latest(queue_registry)
    return HttpResponse(output, content_type=CONTENT_TYPE_LATEST)


class AdminActorMiddleware:
    """The admin user behind an /admin/ request, named in the audit log (after AuthenticationMiddleware)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith("/admin/"):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                actor_var.set(f"admin {user.get_username()}")
                if user.is_staff:  # the operators' admin sees every store (core/tenancy.py)
                    tenancy.enter(tenancy.ALL)  # (RequestMiddleware ends it with the request)
        return self.get_response(request)
