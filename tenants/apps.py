from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"

    def ready(self) -> None:
        from tenants import (
            schemas,  # noqa: F401 - registers the OpenAPI security scheme
            signals,
        )

        signals.connect()
