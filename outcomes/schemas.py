"""OpenAPI shapes of the outcomes endpoints."""

from __future__ import annotations

from rest_framework import serializers

from core.schema import NO_CONTROL_CHARACTERS, register_request_schemas
from outcomes.experiments import SURFACES as EXPERIMENT_SURFACES

# the surfaces as analytics, experiments and pins name them (DESIGN.md, Outcomes)
SURFACE_NAMES = (
    "for_user",
    "related",
    "complementary",
    "complete_the_look",
    "trending",
    "rank",
    "recently_viewed",
    "buy_again",
)


class FiguresSerializer(serializers.Serializer):
    impressions = serializers.IntegerField(help_text="answers served")
    shown = serializers.IntegerField(
        help_text="of those, the answers the merchant reported really shown (`impression` events citing them)"
    )
    shown_ctr = serializers.FloatField(
        allow_null=True, help_text="clicks / shown; null until impression events arrive"
    )
    clicks = serializers.IntegerField(
        help_text="clicks citing an answer's recommendation id, of a product it showed"
    )
    ctr = serializers.FloatField(allow_null=True, help_text="clicks / impressions; null without impressions")
    add_to_carts = serializers.IntegerField()
    purchases = serializers.IntegerField(help_text="purchases citing an answer's recommendation id")
    conversion_rate = serializers.FloatField(allow_null=True, help_text="purchases / impressions")
    revenue = serializers.FloatField(
        help_text="price x quantity of those purchases (the event's price, else the catalog's)"
    )
    revenue_per_mille = serializers.FloatField(allow_null=True, help_text="revenue per 1,000 impressions")
    view_through_purchases = serializers.IntegerField(
        help_text="purchases without an id, of a product shown to the shopper within the attribution window"
    )
    view_through_revenue = serializers.FloatField()


class DayFiguresSerializer(FiguresSerializer):
    date = serializers.DateField()
    surface = serializers.ChoiceField(choices=SURFACE_NAMES)
    variant = serializers.CharField(allow_blank=True, help_text="the experiment's variant; empty outside one")


class AnalyticsSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    series = DayFiguresSerializer(many=True)
    totals = FiguresSerializer()


class VariantSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    traffic = serializers.FloatField(help_text="its share of the shoppers; the shares add up to 1")
    config = serializers.DictField(
        help_text='{"strategy": "model" (the store\'s model) or "popularity" (not on trending), '
        '"model_version": a version of the store\'s model, active or not (a candidate against the '
        'active one), "ranker": false (for_user, rank, related and complementary: without the ranking '
        'stage), "diversity": 0..1 (maximal marginal relevance), "max_per_category": 1..100}'
    )


class ExperimentInSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    surface = serializers.ChoiceField(
        choices=list(EXPERIMENT_SURFACES),
        help_text="for_user and rank: the shopper in the URL; related, complementary and trending: the "
        "shopper in their `user_id` query parameter (answers without one are of no variant)",
    )
    variants = VariantSerializer(many=True, help_text="2 to 10; the first is the control")


class PromoteInSerializer(serializers.Serializer):
    variant = serializers.CharField(max_length=64)


class ExperimentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    surface = serializers.CharField()
    status = serializers.ChoiceField(choices=["running", "stopped", "promoted"])
    variants = VariantSerializer(many=True)
    winner = serializers.CharField(allow_null=True, help_text="the promoted variant")
    started_at = serializers.DateTimeField()
    stopped_at = serializers.DateTimeField(allow_null=True)


class VariantResultSerializer(serializers.Serializer):
    variant = serializers.CharField()
    control = serializers.BooleanField()
    users = serializers.IntegerField(help_text="shoppers shown an answer of this variant")
    impressions = serializers.IntegerField()
    shown = serializers.IntegerField(
        help_text="of those, the answers reported really shown (impression events)"
    )
    clicks = serializers.IntegerField()
    ctr = serializers.FloatField(allow_null=True)
    ctr_interval = serializers.ListField(
        child=serializers.FloatField(), allow_null=True, help_text="95% (Wilson)"
    )
    add_to_carts = serializers.IntegerField()
    purchases = serializers.IntegerField()
    conversion_rate = serializers.FloatField(allow_null=True)
    conversion_interval = serializers.ListField(child=serializers.FloatField(), allow_null=True)
    revenue = serializers.FloatField()
    lift_vs_control = serializers.FloatField(
        allow_null=True, help_text="relative CTR lift; null for the control"
    )
    p_value = serializers.FloatField(
        allow_null=True, help_text="always valid (mSPRT): the least of every look"
    )
    significant = serializers.BooleanField(help_text="p_value <= 0.05")


class VerdictSerializer(serializers.Serializer):
    decision = serializers.ChoiceField(choices=["variant_wins", "control_wins", "undecided"])
    variant = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class ExperimentResultsSerializer(ExperimentSerializer):
    results = VariantResultSerializer(many=True)
    verdict = VerdictSerializer()


_VARIANT = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": NO_CONTROL_CHARACTERS},
        "traffic": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 1},
        "config": {
            "type": "object",
            "properties": {
                "strategy": {"type": "string", "enum": ["model", "popularity"]},
                "model_version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                "ranker": {"type": "boolean"},
                "diversity": {"type": "number", "minimum": 0, "maximum": 1},
                "max_per_category": {"type": "integer", "minimum": 1, "maximum": 100},
            },
            "additionalProperties": False,
        },
    },
    "required": ["name", "traffic"],
    "additionalProperties": False,
}
register_request_schemas(
    {
        "ExperimentInRequest": {
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 100,
                    "pattern": NO_CONTROL_CHARACTERS,
                },
                "surface": {"type": "string", "enum": list(EXPERIMENT_SURFACES)},
                "variants": {"type": "array", "minItems": 2, "maxItems": 10, "items": _VARIANT},
            },
            "required": ["name", "surface", "variants"],
            "additionalProperties": False,
        },
        "PromoteInRequest": {
            "type": "object",
            "properties": {"variant": {"type": "string"}},
            "required": ["variant"],
            "additionalProperties": False,
        },
    }
)
