from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


class CoreConfig(AppConfig):
    name = "core"

    def ready(self) -> None:
        post_migrate.connect(grant_to_application, sender=self)


def grant_to_application(using: str = "default", **kwargs: Any) -> None:
    """After migrations (by the tables' owner): the application's role may read and write every table and
    use every sequence, nothing more (it cannot alter a table or turn row-level security off). Skipped when
    that role does not exist or is the one migrating (a deployment with one role: no separation)."""
    from django.conf import settings
    from django.db import connections
    from psycopg import sql

    role = settings.DATABASE_APP_ROLE
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT current_user, EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %s)", [role])
        user, exists = cursor.fetchone()
        if not exists or user == role:
            return
        name = sql.Identifier(role)
        for statement in (
            "GRANT USAGE ON SCHEMA public TO {}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}",
            "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {}",
        ):
            cursor.execute(sql.SQL(statement).format(name))
