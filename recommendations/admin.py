"""Training runs and model versions in the operator console: train now, activate or roll back."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from core.admin import dashboard_panels
from core.errors import ApiError
from core.svg import bar_chart, line_chart
from events.selectors import events_per_day
from recommendations.models import GlobalModel, ModelKind, NetworkSlice, TrainedModel, TrainingRun
from recommendations.replay import replay_request
from recommendations.selectors import trained_model_list, training_run_list
from recommendations.services import trained_model_activate
from tenants.admin import StoreAdmin
from tenants.models import Store
from tenants.selectors import store_settings_get


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

    def get_queryset(self, request: HttpRequest) -> QuerySet[TrainingRun]:
        """The run's model version named without its artifact read."""
        return (
            super()
            .get_queryset(request)
            .select_related("model")
            .defer(*(f"model__{name}" for name in TrainedModel.LARGE_FIELDS))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(TrainedModel)
class TrainedModelAdmin(admin.ModelAdmin):
    list_display = (
        "store", "kind", "version", "is_active", "ndcg", "ranking_stage", "coverage", "n_events",
        "created_at", "replayed",
    )  # fmt: skip
    list_filter = ("store", "kind", "is_active")
    list_select_related = ("store",)
    exclude = TrainedModel.LARGE_FIELDS
    readonly_fields = [
        field.name for field in TrainedModel._meta.fields if field.name not in TrainedModel.LARGE_FIELDS
    ]
    actions = ["activate", "replay"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[TrainedModel]:
        """Without the artifacts: a page of versions of a large store would read gigabytes."""
        return super().get_queryset(request).defer(*TrainedModel.LARGE_FIELDS)

    @admin.display(description="replay on recent events")
    def replayed(self, obj: TrainedModel) -> str:
        return replay_summary(obj.replay)

    @admin.action(description="Replay on the last 7 days of events against the active version")
    def replay(self, request: HttpRequest, queryset: QuerySet[TrainedModel]) -> None:
        for model in queryset.select_related("store").filter(kind=ModelKind.STORE):
            try:
                replay_request(store=model.store, version=model.version, body={})
            except ApiError as error:
                messages.error(request, f"{model.store.slug} v{model.version}: {error.message}")
            else:
                messages.success(request, f"{model.store.slug} v{model.version}: replay queued")

    @admin.display(description="NDCG@10")
    def ndcg(self, obj: TrainedModel) -> Any:
        return obj.metrics.get("ndcg@10")

    @admin.display(description="ranking stage")
    def ranking_stage(self, obj: TrainedModel) -> str:
        """Whether the version's ranking stage serves, and what it scored on validation against the first
        stage (NDCG@10), or why it does not."""
        ranker = obj.metrics.get("ranker") or {}
        if not ranker:
            return "-"
        figures = ""
        if "two_stage" in ranker:
            figures = f" ({ranker['two_stage']['ndcg@10']:.4f} vs {ranker['first_stage']['ndcg@10']:.4f})"
        if ranker.get("used"):
            whose = obj.parameters.get("ranker_from", "its own")
            return f"serves: {whose}{figures}"
        return f"off: {ranker.get('why', '')}{figures}"

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

    list_display = (
        "version", "is_active", "stores", "products", "events", "slices", "network_ranker", "seconds",
        "created_at",
    )  # fmt: skip
    exclude = ("ranker",)  # (LightGBM's text; the column says what it learned from)
    readonly_fields = [field.name for field in GlobalModel._meta.fields if field.name != "ranker"]
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

    @admin.display(description="ranker")
    def network_ranker(self, obj: GlobalModel) -> str:
        learned = obj.metrics.get("ranker") or {}
        if not obj.ranker:
            return f"none ({learned.get('lessons', 0)} lessons)" if learned else "-"
        stores = learned.get("stores")
        return f"{learned.get('trees')} trees, {learned.get('lessons')} lessons of {stores} stores"

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


def replay_summary(replay: dict[str, Any] | None) -> str:
    """A version's last replay in a line: its NDCG@10 and the active one's on the same events."""
    replay = replay or {}
    status = replay.get("status")
    if status is None:
        return "-"
    if status != "succeeded":
        return f"{status} {replay.get('message', '')}".strip()
    candidate, active = replay["candidate"], replay.get("active")
    line = f"{candidate['ndcg@10']:.4f} on {replay['events']} events of {replay['days']} days"
    if active:
        line += f" (active v{active['version']}: {active['ndcg@10']:.4f})"
    return line


admin.site.unregister(Store)


@admin.register(Store)
class StoreDashboardAdmin(StoreAdmin):
    """The store admin of the tenants app, with what this app adds: the store's dashboard (events per
    day, hold-out quality per model version, runs and versions) and "train now"."""

    list_display = (*StoreAdmin.list_display, "dashboard_link")
    actions = [*StoreAdmin.actions, "train_now"]

    @admin.display(description="dashboard")
    def dashboard_link(self, obj: Store) -> str:
        return format_html(
            '<a href="{}">charts and runs</a>', reverse("admin:tenants_store_dashboard", args=[obj.pk])
        )

    def get_urls(self) -> list:
        own = [
            path("<int:store_id>/dashboard/", self.admin_site.admin_view(self.dashboard_view),
                 name="tenants_store_dashboard"),
            path("<int:store_id>/train/", self.admin_site.admin_view(self.train_view),
                 name="tenants_store_train"),
        ]  # fmt: skip
        return own + super().get_urls()

    def dashboard_view(self, request: HttpRequest, store_id: int) -> HttpResponse:
        store = get_object_or_404(Store, pk=store_id)
        versions = sorted(trained_model_list(store=store), key=lambda row: row["version"])
        quality = {
            "NDCG@10": [(f"v{r['version']}", float(r["metrics"].get("ndcg@10", 0))) for r in versions],
            "coverage": [(f"v{r['version']}", float(r["metrics"].get("coverage", 0))) for r in versions],
        }
        active = next((row for row in versions if row["is_active"]), None)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{store.slug}: dashboard",
            "store": store,
            "settings": store_settings_get(store=store),
            "events_chart": bar_chart(
                [(day, float(n)) for day, n in events_per_day(store=store)],
                title="events per day (last 60 days)",
            ),
            "quality_chart": line_chart(quality, title="hold-out quality per model version"),
            # other apps' charts (outcomes: CTR, conversion, revenue per day), the versions marked
            "panels": dashboard_panels(
                store,
                [
                    (row["activated_at"].date().isoformat(), f"v{row['version']}")
                    for row in versions
                    if row.get("activated_at")
                ],
            ),
            "runs": training_run_list(store=store),
            "versions": [
                {
                    **row,
                    "ndcg": row["metrics"].get("ndcg@10"),
                    "recall": row["metrics"].get("recall@10"),
                    "coverage": row["metrics"].get("coverage"),
                    "replay_summary": replay_summary(row["replay"]),
                }
                for row in reversed(versions)
            ],  # fmt: skip
            "active": active,
            "active_ndcg": active["metrics"].get("ndcg@10") if active else None,
        }
        return TemplateResponse(request, "admin/tenants/store/dashboard.html", context)

    def train_view(self, request: HttpRequest, store_id: int) -> HttpResponse:
        if request.method == "POST":
            train_now(self, request, Store.objects.filter(pk=store_id))
        return redirect("admin:tenants_store_dashboard", store_id)

    @admin.action(description="Train now")
    def train_now(self, request: HttpRequest, queryset: QuerySet[Store]) -> None:
        train_now(self, request, queryset)
