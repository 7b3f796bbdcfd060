"""What the apps' admin pages share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """A list to read: rows come from the API and the workers, never from the admin's forms."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Panels another app adds to a store's dashboard (recommendations/admin.py renders it): each gets the store
# and the dashboard's markers, (ISO day, text) of the model versions, and answers SVG charts.
DashboardPanel = Callable[[Any, list[tuple[str, str]]], list[str]]
_panels: list[DashboardPanel] = []


def register_dashboard_panel(panel: DashboardPanel) -> None:
    if panel not in _panels:
        _panels.append(panel)


def dashboard_panels(store: Any, markers: list[tuple[str, str]]) -> list[str]:
    return [chart for panel in _panels for chart in panel(store, markers)]
