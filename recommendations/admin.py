"""Training runs and model versions in the operator console: train now, activate or roll back."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from core.errors import ApiError
from recommendations.models import GlobalModel, NetworkSlice, TrainedModel, TrainingRun
from recommendations.services import trained_model_activate


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "store",
        "kind",
        "status",
        "progress",
        "trigger",
        "created_at",
        "finished_at",
        "message",
    )
    list_filter = ("store", "status", "kind", "trigger")
    list_select_related = ("store",)
    readonly_fields = [field.name for field in TrainingRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TrainedModel)
class TrainedModelAdmin(admin.ModelAdmin):
    list_display = ("store", "kind", "version", "is_active", "ndcg", "coverage", "n_events", "created_at")
    list_filter = ("store", "kind", "is_active")
    list_select_related = ("store",)
    exclude = ("artifact",)
    readonly_fields = [field.name for field in TrainedModel._meta.fields if field.name != "artifact"]
    actions = ["activate"]

    @admin.display(description="NDCG@10")
    def ndcg(self, obj: TrainedModel) -> Any:
        return obj.metrics.get("ndcg@10")

    @admin.display(description="coverage")
    def coverage(self, obj: TrainedModel) -> Any:
        return obj.metrics.get("coverage")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Activate (or roll back to) the selected version")
    def activate(self, request: HttpRequest, queryset: QuerySet[TrainedModel]) -> None:
        if queryset.count() != 1:
            messages.error(request, "Select exactly one version.")
            return
        model = queryset.select_related("store").get()
        trained_model_activate(store=model.store, version=model.version, kind=model.kind)
        messages.success(request, f"{model.store.slug}: version {model.version} is now active.")


@admin.register(GlobalModel)
class GlobalModelAdmin(admin.ModelAdmin):
    """Versions of the model learnt across sharing stores; "Train the global model now" queues a run."""

    list_display = ("version", "is_active", "stores", "products", "events", "slices", "seconds", "created_at")
    readonly_fields = [field.name for field in GlobalModel._meta.fields]
    actions = ["train_global_now"]

    @admin.display(description="stores")
    def stores(self, obj: GlobalModel) -> Any:
        return obj.metrics.get("stores")

    @admin.display(description="products")
    def products(self, obj: GlobalModel) -> Any:
        return obj.metrics.get("products")

    @admin.display(description="events")
    def events(self, obj: GlobalModel) -> Any:
        return obj.metrics.get("events")

    @admin.display(description="store slices")
    def slices(self, obj: GlobalModel) -> Any:
        return obj.metrics.get("slices")

    @admin.display(description="seconds")
    def seconds(self, obj: GlobalModel) -> Any:
        return obj.metrics.get("seconds")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Train the global model now (queued on the train-global queue)")
    def train_global_now(self, request: HttpRequest, queryset: QuerySet[GlobalModel]) -> None:
        from recommendations.tasks import train_global_task

        train_global_task.delay()
        messages.success(request, "Global training queued.")


@admin.register(NetworkSlice)
class NetworkSliceAdmin(admin.ModelAdmin):
    list_display = ("store", "global_model", "n_items", "n_pairs", "created_at")
    list_filter = ("store",)
    list_select_related = ("store", "global_model")
    exclude = ("artifact",)
    readonly_fields = [field.name for field in NetworkSlice._meta.fields if field.name != "artifact"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def train_now(modeladmin: Any, request: HttpRequest, queryset: QuerySet) -> None:
    from recommendations.services import training_run_create

    for store in queryset:
        try:
            run = training_run_create(store=store, trigger="admin")
            messages.success(request, f"{store.slug}: training run {run.id} queued.")
        except ApiError as error:
            messages.warning(request, f"{store.slug}: {error.message}")
