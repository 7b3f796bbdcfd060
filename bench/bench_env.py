"""The limits the benchmarks' servers run under. The per-key rate limit and the quotas stay on, so that
their Redis work is part of what is measured, but far above what one load generator sends from one key."""

BENCH_LIMITS = {
    "RATE_LIMIT_PER_SECOND": "1000000000",
    "RATE_LIMIT_BURST": "1000000000",
    "MAX_PRODUCTS": "1000000000000",
    "MAX_EVENTS_PER_DAY": "1000000000000",
}


def clear_impressions() -> None:
    """The impressions the bench's answers appended (no drain runs during a bench: it measures the web
    path): dropped before and after a run, so that they do not pile up in Redis."""
    from core import answer_cache

    answer_cache.impressions_clear()


def django_setup() -> None:
    """Django for the bench's own process, which builds its data and migrates as an operator's command
    does: as the tables' owner, every store in scope (core/tenancy.py). The servers and workers it starts
    do not inherit that: they connect as the application's role."""
    import os

    import django

    added = "RECSYS_DATABASE_ROLE" not in os.environ
    if added:
        os.environ["RECSYS_DATABASE_ROLE"] = "owner"
    try:
        django.setup()
    finally:
        if added:
            del os.environ["RECSYS_DATABASE_ROLE"]
    from core import tenancy

    tenancy.enter(tenancy.ALL)


def process_stats() -> dict[int, list[str]]:
    """Every process's /proc/<pid>/stat fields after its name (Linux): [state, ppid, ...]."""
    from pathlib import Path

    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
    return stats


def process_tree(root_pid: int, stats: dict[int, list[str]]) -> set[int]:
    """`root_pid` and all its descendants, from process_stats()."""
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    tree, stack = set(), [root_pid]
    while stack:
        pid = stack.pop()
        if pid not in tree:
            tree.add(pid)
            stack.extend(children.get(pid, []))
    return tree


def train_and_serve(store, *, retrain: bool):  # noqa: ANN001, ANN201 - a Store; its TrainingRun or None
    """Train the store when asked or when no version is active, and serve the new version even below
    the activation gate (a bench's own newest events fill the hold-out of a retrain). None when an active
    version is kept."""
    from recommendations.models import TrainedModel, TrainingRun
    from recommendations.services import trained_model_activate, training_run_execute

    if not retrain and TrainedModel.objects.filter(store=store, is_active=True).exists():
        return None
    run = TrainingRun.objects.create(store=store, trigger="bench")
    training_run_execute(run_id=run.id)
    run.refresh_from_db()
    if run.model is not None and not run.model.is_active:
        trained_model_activate(store=store, version=run.model.version)
    return run
