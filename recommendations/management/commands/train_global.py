"""python manage.py train_global [--engine spark [--master URL]]: train the global model now."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApiError
from recommendations.network import ENGINES, global_model_train


class Command(BaseCommand):
    help = "Train the global model across the stores that share (also scheduled by Celery beat)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--engine",
            choices=ENGINES,
            default="in-process",
            help="who counts the stores' events: this process (default) or a Spark job over the archive "
            "and an export of the recent events",
        )
        parser.add_argument(
            "--master", default=None, help="the Spark master (default: SPARK_MASTER, else local[*])"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = global_model_train(
                progress=lambda message: self.stdout.write(f"  {message}"),
                engine=options["engine"],
                spark_master=options["master"],
            )
        except ApiError as error:
            raise CommandError(error.message) from error
        self.stdout.write(
            f"global model v{result.version}: {result.products} products of {result.stores} sharing stores, "
            f"{result.events} events, {result.merged_groups} products matched across stores, "
            f"{result.seconds} s"
        )
