"""Serializers that only describe recommendation shapes for the OpenAPI schema."""

from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from core.schema import register_request_schemas, text


class RecommendedItemSerializer(serializers.Serializer):
    id = serializers.CharField()
    score = serializers.FloatField()
    reason = serializers.CharField()


class RecommendationsSerializer(serializers.Serializer):
    recommendation_id = serializers.CharField(help_text="cite it as recommendation_id in later events")
    source = serializers.CharField(  # type: ignore[assignment]  # a field named like Field.source
        help_text="the model version or fallback that served the answer"
    )
    items = RecommendedItemSerializer(many=True)
    variant = serializers.CharField(
        required=False, help_text="under a running experiment of the surface: the shopper's variant"
    )
    experiment = serializers.IntegerField(required=False, help_text="under a running experiment: its id")


class RankedSerializer(RecommendationsSerializer):
    unknown_ids = serializers.ListField(child=serializers.CharField())


class RankRequestSerializer(serializers.Serializer):
    product_ids = serializers.ListField(child=serializers.CharField(), min_length=1, max_length=1000)


class TrainingOptionsSerializer(serializers.Serializer):
    activate = serializers.BooleanField(
        required=False,
        help_text="false: keep the new version as a candidate (for an experiment's model_version or a "
        "replay) instead of activating it; default true (activated unless clearly worse)",
    )
    global_share = serializers.FloatField(
        required=False,
        min_value=0,
        max_value=1,
        help_text="the global model's share in the blend, fixed for this version (default: chosen on the "
        "validation split, or the store's blend_weights.global)",
    )
    ranker = serializers.BooleanField(
        required=False,
        help_text="false: no ranking stage for this version; default true (learned, and served when it "
        "beats the first stage on the store's validation split)",
    )


class TrainingRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=["queued", "running", "succeeded", "failed"])
    progress = serializers.FloatField()
    message = serializers.CharField()
    trigger = serializers.CharField()
    options = serializers.DictField(help_text="what the request asked for (activate, global_share, ranker)")
    metrics = serializers.DictField()
    parameters = serializers.DictField()
    model_version = serializers.IntegerField(allow_null=True)
    model_active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)


class TrainedModelSerializer(serializers.Serializer):
    version = serializers.IntegerField()
    kind = serializers.CharField()
    is_active = serializers.BooleanField()
    metrics = serializers.DictField()
    parameters = serializers.DictField()
    n_items = serializers.IntegerField()
    n_users = serializers.IntegerField()
    n_events = serializers.IntegerField()
    artifact_bytes = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    activated_at = serializers.DateTimeField(allow_null=True)
    replay = serializers.DictField(
        help_text="its last replay on recent events against the active version: status (queued, running, "
        "succeeded, failed), days, events, shoppers, and per version hit@10, ndcg@10, mrr@10 and "
        "seen_in_training (the share of the replayed events older than the version); {} if never replayed"
    )


def limit_parameter(high: int = 100, default: int = 10) -> OpenApiParameter:
    return OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": high},
        description=f"1 to {high}, default {default}",
    )


FILTER_PARAMETERS = [
    limit_parameter(),
    OpenApiParameter(
        "category",
        {"type": "string", "maxLength": 200},
        description="only products with this level in their category path",
    ),
    OpenApiParameter("brand", {"type": "string", "maxLength": 200}),
    OpenApiParameter("min_price", {"type": "number", "minimum": 0, "maximum": 1e10}),
    OpenApiParameter("max_price", {"type": "number", "minimum": 0, "maximum": 1e10}),
    OpenApiParameter("in_stock", bool),
    OpenApiParameter("exclude", str, description="comma-separated product ids to leave out"),
    OpenApiParameter(
        "max_per_category",
        {"type": "integer", "minimum": 1, "maximum": 100},
        description="diversity: at most this many per top category",
    ),
    OpenApiParameter(
        "diversity",
        {"type": "number", "minimum": 0, "maximum": 1},
        description="maximal marginal relevance, 0 (off) to 1",
    ),
]

# the shopper looking at a product surface or trending: their answer then joins an experiment of the
# surface (their variant) and its impression names them (view-through attribution)
SHOPPER_PARAMETER = OpenApiParameter(
    "user_id",
    {"type": "string", "maxLength": 256},
    description="the shopper looking (optional): their experiment variant, and their impression",
)


class ReplayRequestSerializer(serializers.Serializer):
    days = serializers.IntegerField(required=False, min_value=1, max_value=90, help_text="default 7")
    max_events = serializers.IntegerField(
        required=False, min_value=100, max_value=50_000, help_text="replayed at most (a sample above); 5,000"
    )


class TrainedModelListSerializer(serializers.Serializer):
    items = TrainedModelSerializer(many=True)


register_request_schemas(
    {
        "RankRequestRequest": {
            "type": "object",
            "properties": {
                "product_ids": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 1000,
                    "items": {"anyOf": [text(256, blank=True), {"type": "integer"}]},
                }
            },
            "required": ["product_ids"],
        },
        "ReplayRequestRequest": {
            "type": "object",
            "properties": {
                "days": {"type": "integer", "minimum": 1, "maximum": 90},
                "max_events": {"type": "integer", "minimum": 100, "maximum": 50_000},
            },
            "additionalProperties": False,
        },
        "TrainingOptionsRequest": {
            "type": "object",
            "properties": {
                "activate": {"type": "boolean"},
                "global_share": {"type": "number", "minimum": 0, "maximum": 1},
                "ranker": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    }
)
