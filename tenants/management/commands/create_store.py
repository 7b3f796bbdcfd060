"""python manage.py create_store SLUG [--name NAME] [--json]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.errors import ApiError
from tenants.services import store_create


class Command(BaseCommand):
    help = "Create a store and its first API key (admin scope). The key is printed once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", default=None)
        parser.add_argument("--currency", default="USD")
        parser.add_argument("--json", action="store_true", help="print one JSON object on the last line")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            store, issued = store_create(
                slug=options["slug"], name=options["name"], currency=options["currency"]
            )
        except ApiError as exc:
            raise CommandError(exc.message) from exc
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "store": store.slug,
                        "name": store.name,
                        "api_key": issued.raw_key,
                        "key_prefix": issued.api_key.prefix,
                        "scopes": issued.api_key.scopes,
                    }
                )
            )
            return
        self.stdout.write(f"Created store {store.slug!r} ({store.name}).")
        self.stdout.write(f"API key (admin scope, shown once): {issued.raw_key}")
