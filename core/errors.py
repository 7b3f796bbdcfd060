"""The one error type of the API and the exception handler that renders every error as
`{"code", "message", "details"}`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from psycopg.errors import QueryCanceled
from rest_framework import exceptions, status
from rest_framework.response import Response


class ApiError(Exception):
    """An error a client can act on: machine-readable code, human message, optional details."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Any = None,
        status_code: int | None = None,
        headers: list[tuple[str, str]] | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or []
        if status_code is not None:
            self.status_code = status_code


class NotFound(ApiError):
    status_code: int = status.HTTP_404_NOT_FOUND

    def __init__(self, message: str = "not found"):
        super().__init__("not_found", message)


DATABASE_UNAVAILABLE = (
    "the database is unavailable for a moment; send the request again (events with their event_id are "
    "stored once however often they are sent)"
)


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details}


_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_json",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(
            error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=dict(exc.headers)
        )
    if isinstance(exc, OperationalError) and isinstance(exc.__cause__, QueryCanceled):
        # the web processes' statement timeout (REQUEST_STATEMENT_TIMEOUT_MS) cut a query short
        return Response(
            error_body("query_timeout", "the request took too long; try again or narrow it"),
            status=503,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, OperationalError | InterfaceError):  # PostgreSQL down or restarting
        return Response(
            error_body("database_unavailable", DATABASE_UNAVAILABLE), status=503, headers={"Retry-After": "1"}
        )
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "not found"), status=404)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.APIException):
        code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
        detail = exc.detail
        if isinstance(exc, exceptions.ValidationError):
            message, details = "invalid request", detail
        else:
            message, details = str(detail), None
        headers = {}
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return Response(error_body(code, message, details), status=exc.status_code, headers=headers)
    return None


def raise_all_rows_rejected(result: dict[str, Any], errors: list[dict[str, Any]]) -> None:
    """A batch of which no row was stored is a 400; its details are the per-row result."""
    first = errors[0]
    if len(errors) == 1:
        raise ApiError(first["code"], first["message"], details=result)
    raise ApiError(
        "invalid_rows", f"all {len(errors)} rows were rejected; the first: {first['message']}", details=result
    )


# --- Django's own error views (config/urls.py: handler400/403/404/500), JSON under /api/ ---------------
# DRF renders the errors of its views; these answer the rest: a route that does not exist, a request that
# Django refused before any view (a bad host, a body too large), and an unhandled exception.


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _json_error(status_code: int, code: str, message: str) -> JsonResponse:
    from core.observability import request_id_var

    body = error_body(code, message, {"request_id": request_id_var.get()} if status_code >= 500 else None)
    return JsonResponse(body, status=status_code)


def bad_request_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json_error(400, "bad_request", str(exception) or "bad request")
    return defaults.bad_request(request, exception)


def permission_denied_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json_error(403, "permission_denied", "permission denied")
    return defaults.permission_denied(request, exception)


def not_found_view(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json_error(404, "not_found", f"no API route {request.path!r}; see /api/v1/docs/")
    return defaults.page_not_found(request, exception)


def server_error_view(request: HttpRequest) -> HttpResponse:
    if _is_api(request):
        return _json_error(500, "internal_error", "internal error; quote the request id when reporting it")
    return defaults.server_error(request)
