"""The WSGI fast path: recommendation answers served before Django's request handling, cached or computed.

A storefront posts an event on every page view, so most for-user answers are computed, not cached; their
numpy work is a fraction of a millisecond, and Django's request, middlewares, URL resolution and DRF's view
would cost more than that again. `FastAnswers` wraps the WSGI application: for a GET of a surface's URL
(a view with a `surface`), it authenticates as the view would (the bearer key from this process's memory,
trusted only at the current keys generation, and its read scope), makes the surface's one Redis round trip,
and answers itself: the cached body, or the answer computed from the loaded model, catalog and profile
(`answers.serve`, the same function the views call). It adds the headers Django would add: the security
headers, the request id, `X-Answer-Cache`, and the request counted in the metrics under its surface.

Anything unusual goes to Django unchanged: no or an unknown key, a missing scope, a host not in
ALLOWED_HOSTS, a key whose last use is due to be recorded, HTTPS redirects or HSTS turned on, the cache
off or down, and every error (a bad option, an unknown product): errors are always answered by Django.
`FAST_PATH_MIDDLEWARE` names the middlewares whose effect is reproduced here; a test fails when the
settings' list differs, so that a new middleware (CORS, throttling) cannot be skipped silently.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import get_path_info
from django.http import QueryDict
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, get_resolver

from core import answer_cache
from core.errors import ApiError
from core.observability import REQUEST_SECONDS, answer_cache_counter, request_id_var, store_var
from recommendations.serving.answers import Surface, answer_lookup, serve
from tenants.authentication import bearer_token, recent_keys
from tenants.models import ApiKeyScope
from tenants.services import TOUCH_EVERY_SECONDS

# The middlewares of settings.MIDDLEWARE whose effect on a successful API GET this path reproduces (the
# request id and metrics, the security and frame headers) or that do nothing for it (sessions, CSRF on a
# GET, static files, messages, the admin's user).
FAST_PATH_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "core.observability.RequestMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)

logger = logging.getLogger(__name__)
API_PREFIX = "/api/"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
StartResponse = Callable[..., Any]


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


@lru_cache(maxsize=16)
def _timer(surface: str) -> Any:
    return REQUEST_SECONDS.labels(surface, "GET", "2xx")


class FastAnswers:
    """WSGI middleware: answers of surface views served without entering Django."""

    def __init__(self, application: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]):
        self.application = application

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO", "").startswith(API_PREFIX):
            started = time.perf_counter()
            answered = self.answer(environ)
            if answered is not None:
                body, surface, cached, allow = answered
                incoming = environ.get("HTTP_X_REQUEST_ID", "")
                request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
                request_id_var.set(request_id)
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("X-Answer-Cache", "hit" if cached else "miss"),
                        ("X-Request-ID", request_id),
                        ("Allow", allow),
                        *security_headers(),
                    ],
                )
                _timer(surface).observe(time.perf_counter() - started)
                answer_cache_counter(surface, "hit" if cached else "miss").inc()
                return [body]
        return self.application(environ, start_response)

    def answer(self, environ: dict[str, Any]) -> tuple[bytes, str, bool, str] | None:
        """(the answer, its surface, whether it was cached, the view's methods) or None to hand the request
        to Django."""
        if _steps_aside() or not answer_cache.enabled() or not _allowed_host(environ):
            return None
        try:
            match = get_resolver().resolve(get_path_info(environ))
        except Resolver404:
            return None
        view_class = getattr(match.func, "view_class", None)
        surface: Surface | None = getattr(view_class, "surface", None)
        if surface is None:
            return None
        token = bearer_token(environ)
        if token is None:
            return None
        entry = recent_keys.get(token)
        if entry is None:
            return None
        key, generation = entry
        if ApiKeyScope.READ not in key.scopes:
            return None
        used = key.last_used_at
        if used is None or time.time() - used.timestamp() > TOUCH_EVERY_SECONDS:
            return None  # Django serves this one and records the key's use
        lookup = answer_lookup(surface, key.store, environ, match.kwargs)
        if lookup.store_generation is None:
            return None  # the cache did not answer
        if lookup.keys_generation != generation:
            recent_keys.forget(token)  # keys or stores changed: look again
            return None
        store_var.set(key.store.slug)
        try:
            served = serve(surface, key.store, environ, QueryDict(environ.get("QUERY_STRING", "")),
                           match.kwargs, lookup)  # fmt: skip
        except ApiError:
            return None  # Django answers errors
        except Exception:  # noqa: BLE001 - Django answers it again, with its JSON error and its logging
            logger.exception("the fast path failed; handing the request to Django")
            return None
        return served.body, match.url_name or "other", served.cached, _allowed_methods(view_class)


@lru_cache(maxsize=64)
def _allowed_methods(view_class: Any) -> str:
    """The `Allow` header DRF adds to the view's answers (Django's View.setup answers HEAD as GET)."""
    view = view_class()
    if hasattr(view, "get") and not hasattr(view, "head"):
        view.head = view.get
    return ", ".join(view.allowed_methods)
