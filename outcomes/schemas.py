"""OpenAPI shapes of the outcomes endpoints."""

from __future__ import annotations

from rest_framework import serializers

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
