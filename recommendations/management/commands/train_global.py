"""python manage.py train_global: train the global (network) model now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from recommendations.network import global_model_train


class Command(BaseCommand):
    help = "Train the global model across the stores that share (also scheduled by Celery beat)."

    def handle(self, *args: Any, **options: Any) -> None:
        result = global_model_train(progress=lambda message: self.stdout.write(f"  {message}"))
        self.stdout.write(
            f"global model v{result.version}: {result.products} products of {result.stores} sharing stores, "
            f"{result.events} events, {result.merged_groups} products matched across stores, "
            f"{result.seconds} s"
        )
