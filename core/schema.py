"""The OpenAPI schema says what the API does (drf-spectacular postprocessing): every error an operation
can answer is documented with the one error body, and path and query strings say what validation refuses
(control characters). tests/test_contract.py holds the API to it with Schemathesis."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
# what the API refuses in an id or a query value (tenants.authentication.check_request_text)
NO_CONTROL_CHARACTERS = r"^[^\u0000-\u001f\u007f]*$"
# a string of the body the API takes: no NUL, and not blank (core.validation.clean_string)
TEXT = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"
TEXT_OR_EMPTY = r"^[^\u0000]*$"
# an id of the merchant's (it appears in URLs): no control character, and not blank
ID = r"^[^\u0000-\u001f\u007f]*[^\s\u0000-\u001f\u007f][^\u0000-\u001f\u007f]*$"
ID_OR_EMPTY = r"^[^\u0000-\u001f\u007f]*$"

# Request bodies as exactly as validation takes them, by component name: a serializer cannot say "no other
# field", "this string or that number" or "no NUL". Each app registers its own (its schemas module).
_request_schemas: dict[str, dict[str, Any]] = {}


def register_request_schemas(schemas: dict[str, dict[str, Any]]) -> None:
    _request_schemas.update(schemas)


def text(max_length: int, *, blank: bool = False) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "pattern": TEXT_OR_EMPTY if blank else TEXT}


_RATE_HEADERS = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"},
    "RateLimit-Limit": {"schema": {"type": "integer"}, "description": "requests the key may make at once"},
    "RateLimit-Remaining": {"schema": {"type": "integer"}},
    "RateLimit-Reset": {"schema": {"type": "integer"}, "description": "seconds until the bucket is full"},
}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": ERROR}},
    }
    if headers:
        response["headers"] = headers
    return response


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = {
        "type": "object",
        "properties": {
            "code": {"type": "string", "description": "machine-readable, e.g. invalid_parameter"},
            "message": {"type": "string"},
            "details": {"description": "per-row errors, the parameter, limits; null when none"},
        },
        "required": ["code", "message", "details"],
    }
    for name, schema in _request_schemas.items():
        if name in components:
            components[name] = schema
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            _strict_strings(operation)
            if not operation.get("security") or operation["security"] == [{}]:
                continue  # health and the schema: no key, no limits
            responses = operation["responses"]
            responses.setdefault("400", _error("invalid request: JSON, parameters or rows (per-row details)"))
            responses.setdefault("401", _error("no API key, or one unknown, revoked or expired"))
            responses.setdefault(
                "403", _error("the key lacks the scope this call needs, or a quota is reached")
            )
            if "{" in path:
                responses.setdefault("404", _error("no such resource in this store"))
            if "requestBody" in operation:
                responses.setdefault("413", _error("the body is larger than the server takes"))
            responses.setdefault(
                "429", _error("the key's rate limit, or the store's daily quota, is reached", _RATE_HEADERS)
            )
            responses.setdefault(
                "503",
                _error("the database is unavailable, or the request took too long; retry (Retry-After)"),
            )
    return result


def _strict_strings(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        if schema.get("type") != "string" or "enum" in schema or "format" in schema:
            continue
        if parameter.get("in") == "path":  # an id: not blank either
            schema.setdefault("pattern", ID)
            schema.setdefault("minLength", 1)
            schema.setdefault("maxLength", 256)
        else:
            schema.setdefault("pattern", NO_CONTROL_CHARACTERS)
