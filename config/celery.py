"""The Celery app of the worker fleet; configuration comes from Django settings (CELERY_*)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")

app = Celery("recsys")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


# Row-level security (core/tenancy.py): a task runs with every store's rows in view (maintenance, the
# global model and the scheduler are cross-store by nature); a store's own work (its training, its
# erasure) narrows the scope to that store where it learns which store it is.
_scopes: dict[str, object] = {}


@task_prerun.connect
def _scope_task(task_id: str | None = None, **kwargs: object) -> None:
    from core import tenancy

    _scopes[task_id or ""] = tenancy.enter(tenancy.ALL)


@task_postrun.connect
def _unscope_task(task_id: str | None = None, **kwargs: object) -> None:
    from core import tenancy

    token = _scopes.pop(task_id or "", None)
    if token is not None:
        tenancy.leave(token)  # type: ignore[arg-type]
