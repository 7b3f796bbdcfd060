"""The WSGI fast path: cached API answers served before Django's request handling.

A hot recommendation answer is a few hundred bytes in Redis. Through Django it also pays for building the
request, nine middlewares, URL resolution and the view; together that is as much CPU as the lookup
itself. `CachedAnswers` wraps the WSGI application: for a GET of an API path whose view caches answers
(`StoreScopedAPIView.cache_answers`), it makes the same lookup as the view would (`look_up_answer`: the
bearer key from this process's memory, trusted only at the current keys generation, its read scope, one
Redis round trip) and answers a hit itself, with the headers Django would add: the security headers, the
request id, `X-Answer-Cache: hit`, and the request counted in the metrics under its surface.

Anything else goes to Django unchanged, and so does anything unusual: a miss (with the lookup left in the
environ, so the view does not repeat it), no or an unknown key, a missing scope, a host not in
ALLOWED_HOSTS, a key whose last use is due to be recorded, HTTPS redirects or HSTS turned on. Errors are
always answered by Django, never here.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.handlers.wsgi import get_path_info
from django.http.request import split_domain_port, validate_host
from django.urls import Resolver404, get_resolver

from core import answer_cache
from core.observability import REQUEST_SECONDS, answer_cache_counter, request_id_var
from tenants.authentication import (
    LOOKUP_ENVIRON_KEY,
    NOTHING_FOUND,
    StoreScopedAPIView,
    look_up_answer,
)
from tenants.services import TOUCH_EVERY_SECONDS

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


class CachedAnswers:
    """WSGI middleware: cached answers of `cache_answers` views served without entering Django."""

    def __init__(self, application: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]):
        self.application = application

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "GET" and environ.get("PATH_INFO", "").startswith(API_PREFIX):
            started = time.perf_counter()
            answered = self.answer(environ)
            if answered is not None:
                body, surface = answered
                incoming = environ.get("HTTP_X_REQUEST_ID", "")
                request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
                request_id_var.set(request_id)
                start_response(
                    "200 OK",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(body))),
                        ("X-Answer-Cache", "hit"),
                        ("X-Request-ID", request_id),
                        *security_headers(),
                    ],
                )
                _timer(surface).observe(time.perf_counter() - started)
                answer_cache_counter(surface, "hit").inc()
                return [body]
        return self.application(environ, start_response)

    def answer(self, environ: dict[str, Any]) -> tuple[bytes, str] | None:
        """(the cached answer, its surface) or None to hand the request to Django."""
        if _steps_aside() or not answer_cache.enabled() or not _allowed_host(environ):
            return None
        try:
            match = get_resolver().resolve(get_path_info(environ))
        except Resolver404:
            return None
        view_class = getattr(match.func, "view_class", None)
        if not (isinstance(view_class, type) and issubclass(view_class, StoreScopedAPIView)):
            return None
        if not view_class.cache_answers:
            return None
        found = look_up_answer(environ, view_class, match.kwargs)
        environ[LOOKUP_ENVIRON_KEY] = found or NOTHING_FOUND  # the view does not look again
        if found is None or found.body is None:
            return None
        used = found.api_key.last_used_at
        if used is None or time.time() - used.timestamp() > TOUCH_EVERY_SECONDS:
            return None  # Django serves this one from the lookup and records the key's use
        return answer_cache.with_fresh_recommendation_id(found.body), match.url_name or "other"
