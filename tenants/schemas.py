"""Serializers that only describe request and response shapes for the OpenAPI schema."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import serializers

from core.schema import NO_CONTROL_CHARACTERS, TEXT_OR_EMPTY, register_request_schemas

# the event types by name (tenants cannot import events: the names are the contract's)
EVENT_TYPE_NAMES = (
    "view", "click", "add_to_cart", "remove_from_cart", "add_to_wishlist", "purchase", "rating", "return"
)  # fmt: skip


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(allow_null=True)


class StoreSettingsSerializer(serializers.Serializer):
    share_network = serializers.BooleanField()
    include_purchased = serializers.BooleanField()
    default_filters = serializers.DictField()
    diversity = serializers.DictField()
    blend_weights = serializers.DictField()
    pins = serializers.DictField()
    boosts = serializers.DictField()
    event_weights = serializers.DictField()
    retrain_interval_hours = serializers.IntegerField(min_value=1, max_value=8760)
    attribution_window_hours = serializers.IntegerField(
        min_value=1,
        max_value=8760,
        help_text="a purchase of an item shown this recently, without an id, is view-through",
    )
    retention_days = serializers.IntegerField(
        min_value=1,
        max_value=36500,
        allow_null=True,
        help_text="events older than this many days are archived to Parquet and leave the database; "
        "null: kept for good",
    )
    training_window_days = serializers.IntegerField(
        min_value=1,
        max_value=36500,
        allow_null=True,
        help_text="training reads the events of this many last days, archived ones included; null: all",
    )
    compatibility = serializers.DictField(
        help_text='complete-the-look rules over those learned from co-purchase: {"Sofas": ["Coffee tables", '
        '"Rugs"]} adds, {"Sofas": {"add": [...], "forbid": ["Lamps"]}} adds and forbids'
    )


class StoreLimitsSerializer(serializers.Serializer):
    rate_limit_per_second = serializers.IntegerField(help_text="requests a second per API key; 0: none")
    rate_limit_burst = serializers.IntegerField(help_text="requests a key may make at once")
    max_products = serializers.IntegerField(help_text="products the catalog may hold; 0: none")
    max_events_per_day = serializers.IntegerField(help_text="events a UTC day; 0: none")


class StoreSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="the store's slug")
    name = serializers.CharField()
    currency = serializers.CharField()
    created_at = serializers.DateTimeField()
    settings = StoreSettingsSerializer()
    limits = StoreLimitsSerializer(read_only=True, help_text="set by the operator")


class StoreDeletedSerializer(serializers.Serializer):
    id = serializers.CharField()
    status = serializers.ChoiceField(choices=["erasing"])
    deleted_at = serializers.DateTimeField()


class StorePatchSerializer(serializers.Serializer):
    name = serializers.CharField(required=False)
    currency = serializers.CharField(required=False, min_length=3, max_length=3)
    settings = StoreSettingsSerializer(required=False, partial=True)
    share_network = serializers.BooleanField(required=False)


class ApiKeySerializer(serializers.Serializer):
    prefix = serializers.CharField(help_text="the key's visible part: rk_<prefix>_...")
    name = serializers.CharField()
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=["read", "write", "admin"]))
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="recorded at most once a minute")
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    live = serializers.BooleanField(help_text="neither revoked nor expired")


class IssuedKeySerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="the whole key, shown in this answer only")
    replaces = serializers.CharField(required=False, help_text="on a rotation: the prefix of the old key")


class ApiKeyInSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, required=False, default="default")
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=["read", "write", "admin"]), required=False, min_length=1
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)


class ApiKeyRotateSerializer(serializers.Serializer):
    overlap_hours = serializers.FloatField(required=False, default=24, min_value=0, max_value=720)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):  # type: ignore[no-untyped-def]
        return {"type": "http", "scheme": "bearer", "description": "the store's API key: `Bearer rk_...`"}


_CATEGORY_NAMES = {
    "type": "array",
    "maxItems": 100,
    "items": {"type": "string", "minLength": 1, "maxLength": 200},
}
_SETTINGS = {
    "share_network": {"type": "boolean"},
    "include_purchased": {"type": "boolean"},
    "default_filters": {"type": "object"},
    "diversity": {"type": "object"},
    "blend_weights": {
        "type": "object",
        "properties": {"global": {"type": "number", "minimum": 0, "maximum": 1, "nullable": True}},
        "additionalProperties": False,
    },
    "pins": {
        "type": "object",
        "additionalProperties": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}, "position": {"type": "integer", "minimum": 0}},
                "required": ["id"],
            },
        },
    },
    "boosts": {
        "type": "object",
        "properties": {
            kind: {
                "type": "object",
                "additionalProperties": {
                    "type": "number",
                    "minimum": 0,
                    "exclusiveMinimum": True,
                    "maximum": 1e6,
                },
            }
            for kind in ("brand", "category", "product")
        },
        "additionalProperties": False,
    },
    "event_weights": {
        "type": "object",
        "properties": {name: {"type": "number", "minimum": 0, "maximum": 1e6} for name in EVENT_TYPE_NAMES},
        "additionalProperties": False,
    },
    "retrain_interval_hours": {"type": "integer", "minimum": 1, "maximum": 8760},
    "attribution_window_hours": {"type": "integer", "minimum": 1, "maximum": 8760},
    "retention_days": {"type": "integer", "minimum": 1, "maximum": 36500, "nullable": True},
    "training_window_days": {"type": "integer", "minimum": 1, "maximum": 36500, "nullable": True},
    "compatibility": {
        "type": "object",
        "maxProperties": 1000,
        "additionalProperties": {
            "anyOf": [
                _CATEGORY_NAMES,
                {
                    "type": "object",
                    "properties": {"add": _CATEGORY_NAMES, "forbid": _CATEGORY_NAMES},
                    "additionalProperties": False,
                },
            ]
        },
    },
}
register_request_schemas(
    {
        "PatchedStoreSettingsRequest": {
            "type": "object",
            "properties": _SETTINGS,
            "additionalProperties": False,
        },
        "PatchedStorePatchRequest": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": TEXT_OR_EMPTY},
                "currency": {"type": "string", "minLength": 3, "maxLength": 3, "pattern": "^[A-Za-z]{3}$"},
                "settings": {"$ref": "#/components/schemas/PatchedStoreSettingsRequest"},
                **_SETTINGS,
            },
            "additionalProperties": False,
        },
        "ApiKeyInRequest": {
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100,
                    "pattern": NO_CONTROL_CHARACTERS,
                },
                "scopes": {
                    "type": "array",
                    "nullable": True,
                    "minItems": 1,
                    "items": {"type": "string", "enum": ["read", "write", "admin"]},
                },
                "expires_at": {"type": "string", "format": "date-time", "nullable": True},
            },
            "additionalProperties": False,
        },
        "ApiKeyRotateRequest": {
            "type": "object",
            "properties": {"overlap_hours": {"type": "number", "minimum": 0, "maximum": 720}},
            "additionalProperties": False,
        },
    }
)
