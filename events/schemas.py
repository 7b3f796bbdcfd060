"""Serializers that only describe event request and response shapes for the OpenAPI schema."""

from rest_framework import serializers

from catalog.schemas import MONEY, RowErrorSerializer, external_id
from core.schema import register_request_schemas
from events.models import Channel, EventType


class EventInSerializer(serializers.Serializer):
    event_id = serializers.CharField(max_length=128, required=False, help_text="makes a resend idempotent")
    user_id = serializers.CharField(max_length=256)
    session_id = serializers.CharField(max_length=256, required=False)
    product_id = serializers.CharField(max_length=256)
    type = serializers.ChoiceField(
        choices=[*(label for _, label in EventType.choices), "impression"],
        help_text="impression: a product of an answer really shown (needs recommendation_id); kept apart, "
        "never used for training, trending or the shopper's profile",
    )
    quantity = serializers.IntegerField(required=False, min_value=1, default=1)
    price = serializers.DecimalField(max_digits=14, decimal_places=4, required=False, min_value=0)
    rating = serializers.FloatField(required=False)
    channel = serializers.ChoiceField(choices=[label for _, label in Channel.choices], required=False)
    timestamp = serializers.DateTimeField(required=False, help_text="ISO 8601 or epoch seconds; default now")
    recommendation_id = serializers.CharField(
        max_length=64, required=False, help_text="the recommendation_id of the answer this event follows"
    )


class IngestResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicate = serializers.IntegerField()
    rejected = serializers.IntegerField()
    errors = RowErrorSerializer(many=True)  # type: ignore[assignment]  # a field named like the property


class AliasInSerializer(serializers.Serializer):
    alias_id = serializers.CharField(max_length=256)


class AliasOutSerializer(serializers.Serializer):
    user_id = serializers.CharField(help_text="the user the alias now belongs to")
    alias_id = serializers.CharField()
    created = serializers.BooleanField()


class UserErasedSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    identities = serializers.ListField(child=serializers.CharField(), help_text="every id erased")
    deleted = serializers.DictField(child=serializers.IntegerField(), help_text="rows deleted by kind")


class ExportedAliasSerializer(serializers.Serializer):
    alias_id = serializers.CharField()
    user_id = serializers.CharField()
    created_at = serializers.DateTimeField()


class ExportedEventSerializer(serializers.Serializer):
    event_id = serializers.CharField(allow_null=True)
    user_id = serializers.CharField()
    session_id = serializers.CharField(allow_blank=True)
    product_id = serializers.CharField(allow_null=True, help_text="null when the product is gone")
    type = serializers.CharField()
    quantity = serializers.IntegerField()
    price = serializers.FloatField(allow_null=True)
    rating = serializers.FloatField(allow_null=True)
    channel = serializers.CharField()
    timestamp = serializers.DateTimeField()
    recommendation_id = serializers.CharField(allow_null=True)
    received_at = serializers.DateTimeField()


class ExportedImpressionSerializer(serializers.Serializer):
    recommendation_id = serializers.CharField()
    surface = serializers.CharField()
    user_id = serializers.CharField()
    items = serializers.ListField(child=serializers.CharField(), help_text="product ids, in the order shown")
    served_at = serializers.DateTimeField()


class UserDataSerializer(serializers.Serializer):
    user_id = serializers.CharField()
    identities = serializers.ListField(child=serializers.CharField())
    exported_at = serializers.DateTimeField()
    aliases = ExportedAliasSerializer(many=True)
    events = ExportedEventSerializer(many=True)
    impressions = ExportedImpressionSerializer(many=True, help_text="the answers shown to the shopper")


EVENT_IN = {
    "type": "object",
    "properties": {
        "event_id": {**external_id(128, "makes a resend idempotent"), "nullable": True},
        "user_id": external_id(),
        "session_id": {**external_id(), "nullable": True},
        "product_id": external_id(description="a product the store holds"),
        "type": {"type": "string", "enum": [*(label for _, label in EventType.choices), "impression"]},
        "quantity": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "nullable": True},
        "price": MONEY,
        "rating": {"type": "number", "minimum": -1000, "maximum": 1000, "nullable": True},
        "channel": {
            "type": "string",
            "enum": [*(label for _, label in Channel.choices), None],
            "nullable": True,
        },
        "timestamp": {
            "anyOf": [
                {"type": "string", "format": "date-time", "nullable": True},
                {"type": "number", "minimum": 0, "maximum": 32503680000, "exclusiveMaximum": True},
            ],
            "description": "ISO 8601 or epoch seconds, at most a day ahead; default now",
        },
        "recommendation_id": {
            **external_id(64, "the answer this event follows", blank=True),
            "nullable": True,
        },
    },
    "required": ["user_id", "product_id", "type"],
    "additionalProperties": False,
}
register_request_schemas(
    {
        "EventInRequest": EVENT_IN,
        "EventOrEventsRequest": {
            "oneOf": [
                {"$ref": "#/components/schemas/EventInRequest"},
                {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/EventInRequest"},
                    "minItems": 1,
                    "maxItems": 10_000,
                },
            ]
        },
        "AliasInRequest": {
            "type": "object",
            "properties": {"alias_id": external_id()},
            "required": ["alias_id"],
        },
    }
)
