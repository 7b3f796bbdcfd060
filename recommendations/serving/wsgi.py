"""The fast path's handler for the recommendation surfaces (core/fast_path.py): a GET of a surface's URL
(a view with a `surface`) is authenticated from the process's memory and answered with `answers.serve`,
the function the views call, from the cache or computed from the loaded model, catalog and profile."""

from __future__ import annotations

from typing import Any

from django.http import QueryDict
from django.urls import ResolverMatch

from core import rate_limit
from core.errors import ApiError
from core.fast_path import FastResponse, allowed_methods, database_request
from core.observability import answer_cache_counter, store_var
from recommendations.serving.answers import Surface, answer_lookup, serve
from tenants.authentication import bearer_token, plain_request_text, recent_keys, remembered_key
from tenants.models import ApiKeyScope


def fast_answer(environ: dict[str, Any], match: ResolverMatch) -> FastResponse | None:
    view_class = getattr(match.func, "view_class", None)
    surface: Surface | None = getattr(view_class, "surface", None)
    if surface is None:
        return None
    query_string = environ.get("QUERY_STRING", "")
    if not plain_request_text(match.kwargs, query_string):
        return None  # Django answers the 400
    if surface.view_parameters and any(f"{name}=" in query_string for name in surface.view_parameters):
        return None  # (related's scope=network is the view's own answer)
    entry = remembered_key(environ, ApiKeyScope.READ)
    if entry is None:
        return None
    key, generation = entry
    limit = rate_limit.bucket_args(key)
    lookup = answer_lookup(
        surface, key.store, environ, match.kwargs, bucket=limit, trusted_keys_generation=generation
    )
    if lookup.store_generation is None:
        return None  # the cache did not answer
    if lookup.keys_generation != generation:  # keys or stores changed since: look the key up again
        recent_keys.forget(bearer_token(environ) or "")
        return None  # (Django takes a token at the store's current limits)
    bucket = None
    if limit is not None and lookup.bucket is not None:
        bucket = rate_limit.Bucket.from_reply(lookup.bucket, limit[2])
        environ[rate_limit.ENVIRON_KEY] = bucket  # taken: Django, should it answer instead, takes no other
        if not bucket.allowed:
            return None  # Django answers the 429
    store_var.set(key.store.slug)
    try:
        if lookup.body is not None:  # cached: nothing to parse, nothing to query
            served = serve(surface, key.store, environ, {}, match.kwargs, lookup)
        else:
            with database_request(environ):
                query = QueryDict(environ.get("QUERY_STRING", ""))
                served = serve(surface, key.store, environ, query, match.kwargs, lookup)
    except ApiError:
        return None  # Django answers errors
    outcome = "hit" if served.cached else "miss"
    answer_cache_counter(match.url_name or "other", outcome).inc()
    headers = [("X-Answer-Cache", outcome), ("Allow", allowed_methods(view_class))]
    return FastResponse(served.body, headers + (bucket.headers() if bucket is not None else []))
