"""Impressions (read-only), and experiments: their results, stop and promote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from core.admin import ReadOnlyAdmin, register_dashboard_panel
from core.errors import ApiError
from core.svg import line_chart
from outcomes.experiments import experiment_promote, experiment_results, experiment_stop
from outcomes.models import Experiment, Impression
from outcomes.selectors import analytics


@admin.register(Impression)
class ImpressionAdmin(ReadOnlyAdmin):
    list_display = ("served_at", "store", "surface", "user_id", "variant", "source", "recommendation_id")
    list_filter = ("surface", "store")
    search_fields = ("recommendation_id", "user_id")
    date_hierarchy = "served_at"
    list_select_related = ("store",)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


@admin.register(Experiment)
class ExperimentAdmin(ReadOnlyAdmin):
    list_display = ("name", "store", "surface", "status", "winner", "started_at", "stopped_at")
    list_filter = ("status", "surface", "store")
    search_fields = ("name", "store__slug")
    list_select_related = ("store",)
    fields = ("store", "name", "surface", "status", "winner", "started_at", "stopped_at", "results")
    readonly_fields = fields
    actions = ["stop", "promote_winner"]

    @admin.display(description="results")
    def results(self, obj: Experiment) -> str:
        found = experiment_results(store=obj.store, experiment=obj)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    r["variant"] + (" (control)" if r["control"] else ""),
                    r["users"],
                    r["impressions"],
                    r["clicks"],
                    f"{_percent(r['ctr'])} [{', '.join(_percent(x) for x in r['ctr_interval'] or [])}]",
                    _percent(r["lift_vs_control"]),
                    "-" if r["p_value"] is None else f"{r['p_value']:.4f}",
                    f"{r['purchases']} / {r['revenue']:.2f}",
                )
                for r in found["results"]
            ),
        )
        head = "<tr><th>variant</th><th>shoppers</th><th>impressions</th><th>clicks</th><th>CTR [95%]</th>"
        head += "<th>lift</th><th>p (always valid)</th><th>purchases / revenue</th></tr>"
        return format_html("<table>" + head + "{}</table><p>{}</p>", rows, found["verdict"]["message"])

    @admin.action(description="Stop the selected experiments")
    def stop(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset.select_related("store"):
            try:
                experiment_stop(store=experiment.store, experiment=experiment)
                messages.success(request, f"Stopped {experiment.name}.")
            except ApiError as error:
                messages.error(request, f"{experiment.name}: {error.message}")

    @admin.action(description="Promote the verdict's winner (the surface's default from now on)")
    def promote_winner(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset.select_related("store"):
            verdict = experiment_results(store=experiment.store, experiment=experiment)["verdict"]
            if verdict["variant"] is None:
                messages.error(request, f"{experiment.name}: {verdict['message']}; nothing promoted")
                continue
            try:
                experiment_promote(store=experiment.store, experiment=experiment, variant=verdict["variant"])
                messages.success(request, f"{experiment.name}: promoted {verdict['variant']}.")
            except ApiError as error:
                messages.error(request, f"{experiment.name}: {error.message}")


DASHBOARD_DAYS = 60


def business_panels(store: Any, markers: list[tuple[str, str]]) -> list[str]:
    """CTR, conversion and attributed revenue per day and surface over the last 60 days, the days a model
    version was activated marked."""
    end = datetime.now(tz=UTC).date()
    days = [(end - timedelta(days=n)).isoformat() for n in range(DASHBOARD_DAYS - 1, -1, -1)]
    figures = analytics(store=store, start=end - timedelta(days=DASHBOARD_DAYS - 1), end=end)
    charts = []
    for field, title in (
        ("ctr", "click-through rate per day and surface"),
        ("conversion_rate", "conversion (purchases / impressions) per day and surface"),
        ("revenue", f"attributed revenue per day and surface ({store.currency})"),
    ):
        series: dict[str, list[tuple[str, float]]] = {}
        for row in figures["series"]:
            if row[field] is not None:
                name = row["surface"] + (f" ({row['variant']})" if row["variant"] else "")
                series.setdefault(name, []).append((row["date"].isoformat(), float(row[field])))
        charts.append(line_chart(series, title=title, labels=days, markers=markers))
    return charts


register_dashboard_panel(business_panels)
