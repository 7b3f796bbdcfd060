"""The WSGI fast path: the hottest API calls answered before Django's request handling.

A storefront posts an event on every page view and then asks for recommendations; each of those does a
fraction of a millisecond of real work, and Django's request, nine middlewares, URL resolution and DRF's
view would cost more than that again. `FastPath` wraps the WSGI application. For an API request it
resolves the URL once and offers it to the handlers the apps register for that method (answers of the
recommendation surfaces, event ingestion); a handler authenticates as the view would (the bearer key from
the process's memory, trusted only at the current keys generation, and its scope), does the same work
through the same services, and answers, or declines. The answer carries what Django would add: the
security headers, the request id, the metrics under the URL's name.

Anything unusual goes to Django unchanged: no or an unknown key, a missing scope, a host not in
ALLOWED_HOSTS, a key whose last use is due to be recorded, HTTPS redirects or HSTS turned on, the cache
off or down, and every error: errors are always answered by Django (a handler that read a body puts it
back, and declines only before it stored anything). `FAST_PATH_MIDDLEWARE` names the middlewares whose
effect is reproduced here; a test fails when the settings' list differs, so that a new middleware (CORS,
throttling) cannot be skipped silently. This module knows no app: they hand it their handlers.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers.wsgi import get_path_info
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, ResolverMatch, get_resolver

from core import tenancy
from core.db.base import pending_request_start
from core.observability import REQUEST_SECONDS, request_id_var

# The middlewares of settings.MIDDLEWARE whose effect on a successful API call this path reproduces (the
# request id and metrics, the security and frame headers) or that do nothing for it (sessions, CSRF for a
# bearer-key API call without cookies, static files, messages, the admin's user).
FAST_PATH_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "core.observability.RequestMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "core.observability.AdminActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)

logger = logging.getLogger(__name__)
API_PREFIX = "/api/"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
StartResponse = Callable[..., Any]
WsgiApplication = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class FastResponse:
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)  # besides type, length, id, security
    status: str = "200 OK"


# (the request's environ, its URL match) -> the answer, or None to hand the request to Django
Handler = Callable[[dict[str, Any], ResolverMatch], FastResponse | None]


def security_headers() -> list[tuple[str, str]]:
    """The headers SecurityMiddleware and XFrameOptionsMiddleware add to a plain-HTTP answer."""
    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        value = policy if isinstance(policy, str) else ",".join(policy)
        headers.append(("Referrer-Policy", ",".join(v.strip() for v in value.split(","))))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
    if "django.middleware.clickjacking.XFrameOptionsMiddleware" in settings.MIDDLEWARE:
        headers.append(("X-Frame-Options", settings.X_FRAME_OPTIONS.upper()))
    return headers


def _steps_aside() -> bool:
    """Settings under which Django's answer would differ by more than the headers above."""
    return bool(settings.SECURE_SSL_REDIRECT or settings.SECURE_HSTS_SECONDS or settings.USE_X_FORWARDED_HOST)


def _allowed_host(environ: dict[str, Any]) -> bool:
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


@lru_cache(maxsize=64)
def _timer(surface: str, method: str, status: str) -> Any:
    return REQUEST_SECONDS.labels(surface, method, status)


@lru_cache(maxsize=64)
def allowed_methods(view_class: Any) -> str:
    """The `Allow` header DRF adds to the view's answers (Django's View.setup answers HEAD as GET)."""
    view = view_class()
    if hasattr(view, "get") and not hasattr(view, "head"):
        view.head = view.get
    return ", ".join(view.allowed_methods)


@contextmanager
def database_request(environ: dict[str, Any]) -> Iterator[None]:
    """Around a handler's work that may query the database, as Django does around a request: connections
    past CONN_MAX_AGE are closed, and a reused one is checked (CONN_HEALTH_CHECKS) before its first query.
    Django's request signals are sent only if the database is used, its start just before the first use
    (core/db): a computed answer from Redis and memory asks nothing of it, and the two signals cost such an
    answer about 55 µs of its ~800 (answers from the cache skip this altogether)."""
    started = False

    def start() -> None:
        nonlocal started
        started = True
        signals.request_started.send(sender=FastPath, environ=environ)

    token = pending_request_start.set(start)
    try:
        yield
    finally:
        pending_request_start.reset(token)
        if started:
            signals.request_finished.send(sender=FastPath)


@lru_cache(maxsize=16_384)
def _resolve(resolver: Any, path: str) -> ResolverMatch | None:
    """URL resolution, remembered per path: a shopper's or a product's URL comes back again and again,
    and resolving walks every pattern. (Handlers only read the match.)"""
    try:
        return resolver.resolve(path)
    except Resolver404:
        return None


class FastPath:
    """WSGI middleware: the registered handlers' answers, served without entering Django."""

    def __init__(self, application: WsgiApplication, handlers: dict[str, list[Handler]]):
        self.application = application
        self.handlers = handlers

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        handlers = self.handlers.get(method)
        if not handlers or not environ.get("PATH_INFO", "").startswith(API_PREFIX):
            return self.application(environ, start_response)
        started = time.perf_counter()
        scope = tenancy.enter(tenancy.NONE)  # a handler scopes the database to its key's store
        try:
            answered = self._answer(environ, handlers)
        finally:
            tenancy.leave(scope)
        if answered is None:
            return self.application(environ, start_response)
        response, surface = answered
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request_id_var.set(request_id)
        start_response(
            response.status,
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(response.body))),
                *response.headers,
                ("X-Request-ID", request_id),
                *security_headers(),
            ],
        )
        _timer(surface, method, response.status[0] + "xx").observe(time.perf_counter() - started)
        return [response.body]

    def _answer(self, environ: dict[str, Any], handlers: list[Handler]) -> tuple[FastResponse, str] | None:
        if _steps_aside() or not _allowed_host(environ):
            return None
        match = _resolve(get_resolver(), get_path_info(environ))
        if match is None:
            return None
        for handler in handlers:
            try:
                response = handler(environ, match)
            except Exception:  # Django answers it again, with its JSON error and its logging
                logger.exception("the fast path failed; handing the request to Django")
                return None
            if response is not None:
                return response, match.url_name or "other"
        return None
