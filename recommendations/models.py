"""Training runs and trained model versions. Exactly one active version per (store, kind), and at most
one open (queued or running) training run per (store, kind): both are database constraints."""

from django.db import models

from core.models import BaseModel
from tenants.models import Store


class ModelKind(models.TextChoices):
    STORE = "store", "per-store recommender (all surfaces)"


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


OPEN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class TrainedModel(BaseModel):
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=32, choices=ModelKind.choices, default=ModelKind.STORE)
    version = models.PositiveIntegerField()
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    n_items = models.PositiveIntegerField(default=0)
    n_users = models.PositiveIntegerField(default=0)
    n_events = models.PositiveBigIntegerField(default=0)
    artifact = models.BinaryField(help_text="np.savez of the learnt arrays (no pickle)")
    artifact_bytes = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "kind", "version"], name="trained_model_version_uniq"),
            models.UniqueConstraint(
                fields=["store", "kind"], condition=models.Q(is_active=True), name="trained_model_one_active"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.store_id}/{self.kind} v{self.version}{' (active)' if self.is_active else ''}"


class TrainingRun(BaseModel):
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    kind = models.CharField(max_length=32, choices=ModelKind.choices, default=ModelKind.STORE)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.FloatField(default=0.0)
    message = models.TextField(blank=True, default="")
    trigger = models.CharField(max_length=16, default="api")
    metrics = models.JSONField(default=dict, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    model = models.ForeignKey(
        TrainedModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["store", "kind"],
                condition=models.Q(status__in=["queued", "running"]),
                name="training_run_one_open",
            )
        ]
        indexes = [models.Index(fields=["store", "kind", "-created_at"], name="training_run_store_recent")]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.store_id}/{self.kind}: {self.status}"
