"""What the merchant's shoppers were shown: one row per answer served (its recommendation id)."""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from tenants.models import Store


class Impression(models.Model):
    """An answer served, from the cache or computed, by the fast path or Django: written off the request
    path (a Redis stream drained by a worker), at least once and stored once by its recommendation id."""

    # ids compared bytewise, as the events' (events.models.Event.user_id): every answer served is a row.
    # In the database the primary key is (store_id, recommendation_id) (outcomes/0008: distributable by
    # store); ids are unique across stores anyway (core.ids), so the ORM's view of it is the same
    recommendation_id = models.CharField(max_length=64, primary_key=True, db_collation="C")
    store = models.ForeignKey(
        Store, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    surface = models.CharField(max_length=32)
    user_id = models.CharField(max_length=256, blank=True, default="", db_collation="C")
    variant = models.CharField(max_length=64, blank=True, default="")
    source = models.CharField(max_length=200, blank=True, default="")  # the model version or fallback
    items = ArrayField(models.CharField(max_length=256), default=list)  # product ids, in the order shown
    served_at = models.DateTimeField()
    experiment_id = models.BigIntegerField(null=True, blank=True)  # the experiment whose variant it was
    # when the merchant first reported it really shown (an `impression` event citing it); null: not reported
    shown_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["store", "served_at"], name="impression_store_time"),
            models.Index(fields=["store", "user_id"], name="impression_store_user"),
            # an experiment's results (only answers under one are in it: no cost for the others)
            models.Index(
                fields=["store", "experiment_id"],
                condition=models.Q(experiment_id__isnull=False),
                name="impression_experiment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.surface} {self.recommendation_id}"


class AttributionKind(models.TextChoices):
    DIRECT = "direct", "direct"  # the event cites the answer's recommendation id
    VIEW_THROUGH = "view_through", "view-through"  # a purchase, without an id, of an item shown lately


class Attribution(models.Model):
    """A click, add-to-cart or purchase credited to an answer shown: its surface, variant, model version
    (the answer's source) and the item's position in it. One row per event, written once by the rollup."""

    # events_event.id; in the database the primary key is (store_id, event_id), as on Impression
    event_id = models.BigIntegerField(primary_key=True)
    store = models.ForeignKey(
        Store, on_delete=models.CASCADE, related_name="+", db_constraint=False, db_index=False
    )
    kind = models.CharField(max_length=16, choices=AttributionKind.choices)
    type = models.PositiveSmallIntegerField()  # the event's type (events.EventType)
    recommendation_id = models.CharField(max_length=64)
    surface = models.CharField(max_length=32)
    variant = models.CharField(max_length=64, blank=True, default="")
    source = models.CharField(max_length=200, blank=True, default="")
    position = models.PositiveIntegerField()  # 0: the answer's first item
    user_id = models.CharField(max_length=256)
    product_id = models.CharField(max_length=256)  # the product's id in the store's catalog
    revenue = models.DecimalField(max_digits=18, decimal_places=4, default=0)
    date = models.DateField()  # the event's day (UTC)

    class Meta:
        indexes = [
            models.Index(fields=["store", "date"], name="attribution_store_date"),
            models.Index(fields=["store", "user_id"], name="attribution_store_user"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.type} of {self.recommendation_id}"


class DailyMetric(models.Model):
    """Business figures per store, day (UTC), surface and variant, added to as impressions are stored and
    events are attributed: an aggregate, kept when a shopper is erased."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    date = models.DateField()
    surface = models.CharField(max_length=32)
    variant = models.CharField(max_length=64, blank=True, default="")
    impressions = models.BigIntegerField(default=0)
    shown = models.BigIntegerField(default=0)  # of those, the answers the merchant reported really shown
    clicks = models.BigIntegerField(default=0)
    add_to_carts = models.BigIntegerField(default=0)
    purchases = models.BigIntegerField(default=0)
    revenue = models.DecimalField(max_digits=18, decimal_places=4, default=0)
    view_through_purchases = models.BigIntegerField(default=0)
    view_through_revenue = models.DecimalField(max_digits=18, decimal_places=4, default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "date", "surface", "variant"], name="daily_metric_key")
        ]

    def __str__(self) -> str:
        return f"{self.date} {self.surface} {self.variant}"


class RollupCursor(models.Model):
    """How far the attribution rollup has read the events (by the time they were received)."""

    name = models.CharField(max_length=32, primary_key=True)
    received_until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} until {self.received_until}"


class ExperimentStatus(models.TextChoices):
    RUNNING = "running", "running"
    STOPPED = "stopped", "stopped"
    PROMOTED = "promoted", "promoted"


class Experiment(models.Model):
    """An A/B test of strategies on one surface: variants with traffic shares and a config each (the first
    variant is the control). One runs per store and surface at a time."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    name = models.CharField(max_length=100)
    surface = models.CharField(max_length=32)
    variants = models.JSONField()  # [{"name", "traffic", "config"}, ...]
    status = models.CharField(
        max_length=16, choices=ExperimentStatus.choices, default=ExperimentStatus.RUNNING
    )
    winner = models.CharField(max_length=64, blank=True, default="")  # the promoted variant
    # the always-valid p-value of each variant against the control: the least seen at any look so far
    p_values = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["store", "surface"],
                condition=models.Q(status="running"),
                name="experiment_one_running_per_surface",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.surface}, {self.status})"
