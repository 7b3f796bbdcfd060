"""What the merchant's shoppers were shown: one row per answer served (its recommendation id)."""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from tenants.models import Store


class Impression(models.Model):
    """An answer served, from the cache or computed, by the fast path or Django: written off the request
    path (a Redis stream drained by a worker), at least once and stored once by its recommendation id."""

    recommendation_id = models.CharField(max_length=64, primary_key=True)
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_constraint=False)
    surface = models.CharField(max_length=32)
    user_id = models.CharField(max_length=256, blank=True, default="")
    variant = models.CharField(max_length=64, blank=True, default="")
    source = models.CharField(max_length=200, blank=True, default="")  # the model version or fallback
    items = ArrayField(models.CharField(max_length=256), default=list)  # product ids, in the order shown
    served_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["store", "served_at"], name="impression_store_time"),
            models.Index(fields=["store", "user_id"], name="impression_store_user"),
        ]

    def __str__(self) -> str:
        return f"{self.surface} {self.recommendation_id}"
