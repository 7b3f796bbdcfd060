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
    # its last replay on recent events against the active version (recommendations/replay.py)
    replay = models.JSONField(default=dict, blank=True)
    # a sample of its ranking stage's lessons (relative features of candidate lists and their labels, no
    # product or shopper in them), kept when the store shares: the global ranker learns from them
    ranker_lessons = models.BinaryField(null=True, blank=True)

    # what a query for the version's figures should leave out (.defer): a large store's artifact is 100 MB
    LARGE_FIELDS = ("artifact", "ranker_lessons")

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
    # what the request asked for: {"activate": false} (a candidate, kept for an experiment or a replay),
    # {"global_share": 0..1} (the global model's share fixed instead of chosen on validation)
    options = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    # its database constraint is (store_id, model_id) -> the model's (store_id, id), which Citus can keep
    # between two tables distributed by store (recommendations/0007); Django's own would name id alone
    model = models.ForeignKey(
        TrainedModel, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # the worker running it writes this every TRAINING_HEARTBEAT_SECONDS; a run whose heartbeat is older
    # than TRAINING_STALE_SECONDS lost its worker and may be claimed again
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # how many times a worker claimed it; the claim's number fences the writes of a worker that lost it
    attempt = models.PositiveIntegerField(default=0)

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


class GlobalModel(BaseModel):
    """A version of the model learnt across the stores that share. Its parameters reach a store only as
    that store's NetworkSlice (about its own products) and as product vectors in the network space."""

    version = models.PositiveIntegerField(unique=True)
    is_active = models.BooleanField(default=False)
    activated_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    parameters = models.JSONField(default=dict, blank=True)
    # the ranking stage learned from the sharing stores' lessons (LightGBM text; "" when too few): the
    # ranker of a sharing store with too little history of its own to learn one
    ranker = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="global_model_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"global v{self.version}{' (active)' if self.is_active else ''}"


class NetworkSlice(BaseModel):
    """What the other stores' shoppers say about one store's products (its own events left out): a sparse
    products x products matrix, blended into the store's model at its next training."""

    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="+", db_index=False)
    global_model = models.ForeignKey(GlobalModel, on_delete=models.CASCADE, related_name="slices")
    n_items = models.PositiveIntegerField(default=0)
    n_pairs = models.PositiveBigIntegerField(default=0)
    artifact = models.BinaryField(help_text="np.savez: product_ids and the CSR parts of the matrix")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["store", "global_model"], name="network_slice_store_model_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.store_id} slice of global v{self.global_model_id}"
