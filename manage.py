#!/usr/bin/env python
"""Django's command-line utility."""

import os
import sys

# commands that change the schema connect as the tables' owner (config/settings/base.py, DATABASE_ROLE)
OWNER_COMMANDS = {"migrate", "makemigrations", "sqlmigrate", "showmigrations", "sqlflush", "flush", "dbshell"}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    if len(sys.argv) > 1 and sys.argv[1] in OWNER_COMMANDS:
        os.environ.setdefault("RECSYS_DATABASE_ROLE", "owner")
    from core import tenancy

    tenancy.enter(tenancy.ALL)  # an operator's command sees every store (core/tenancy.py)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
